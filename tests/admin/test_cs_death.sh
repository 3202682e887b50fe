#!/usr/bin/env bash
# admin_cs_death: a chunkserver killed with kill -9 is declared dead after namespace.cs_timeout (3 s here)
# and leaves the replica sets in steps of namespace.cs_dead_step (2 here, so the leader must propose the
# rest: one ChunkserverDead removes only 2 of its copies); every chunk it held is copied back to its goal
# (3) on the other chunkservers, and every file reads back, through the running mount while the death is
# applied and through a fresh mount afterwards.
source "$(dirname "$0")/../fuse/harness.sh"
export SYNOD_META_CONF="namespace.cs_timeout = 3s; namespace.cs_dead_step = 2"
fuse_setup --chunks 4

N=8
for ((i = 1; i <= N; i++)); do
  head -c $((i * 300000 + 777)) /dev/urandom >"$DATA/src$i"
  cp "$DATA/src$i" "$MNT/f$i"
done
wait_for "s['chunks'] == $N and s['under_goal'] == 0" 30 "$N chunks at goal 3"
# the chunkserver holding the most copies (at least 3 of the 8: 24 copies on 4 chunkservers)
read -r ID ADDR HELD < <(st "' '.join(str(x) for x in max(((c['id'], c['addr'], c['chunks_left']) for c in s['chunkservers']), key=lambda t: t[2]))")
check '[[ $HELD -ge 3 ]]' "chunkserver $ID holds $HELD copies"
PORT=${ADDR##*:}
NODE=""
for ((i = 1; i <= 4; i++)); do
  grep -q ":$PORT\$" "$DATA/chunk$i/chunk$i.conf" && NODE=chunk$i
done
[[ -n $NODE ]] || fail "no node listens on $ADDR"
cluster kill "$NODE" >/dev/null
log "killed $NODE (chunkserver $ID, $HELD copies)"
# reads go on while it is being declared dead and removed (its copies are no longer handed out)
for ((i = 1; i <= N; i++)); do check 'cmp -s "$DATA/src$i" "$MNT/f$i"' "f$i reads back with $NODE dead"; done
wait_for "[c for c in s['chunkservers'] if c['id'] == $ID][0]['state'] == 'DEAD'" 20 "$NODE declared dead"
wait_for "[c for c in s['chunkservers'] if c['id'] == $ID][0]['chunks_left'] == 0" 20 "$NODE out of every replica set"
wait_for "s['under_goal'] == 0 and s['missing'] == 0 and sum(c['chunks_left'] for c in s['chunkservers']) == 3 * $N" 60 \
  "every chunk back at goal 3 on the other chunkservers"
M2=$DATA/mnt2
mount_extra "$M2"
for ((i = 1; i <= N; i++)); do check 'cmp -s "$DATA/src$i" "$M2/f$i"' "f$i reads back through a fresh mount"; done
grep -q "cs_dead_step" "$DATA/meta1/meta1.conf" || fail "the test's metaserver config was not written"
log "admin_cs_death passed"
