#!/usr/bin/env bash
# fuse_fsid_upgrade: a rolling upgrade onto the file system id. The metaservers first run as before the id
# (SYNOD_META_TEST_OLD=1: they say software level 0 in their Paxos messages and propose no id); a file is
# written through the mount. Then they are restarted as they are now, one by one:
#  - while one node still runs as before, no id is given (it would apply NsInit's id as a no-op, and its
#    state would lack the id for good);
#  - once all three run as now, the leader proposes NsInit on the existing root, which only adds the id;
#  - synodctl shows it; the running mount learns it from its keepalive and the chunkservers from their
#    heartbeats (each persists it in its identity file); the file reads back; a new file can be written.
source "$(dirname "$0")/harness.sh"
export SYNOD_META_TEST_OLD=1
fuse_setup
head -c $((2 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/old"
check '[[ $(st "s[\"fsid\"]") == 0000000000000000 ]]' "the cluster runs without a file system id"
unset SYNOD_META_TEST_OLD
cluster restart meta1 >/dev/null
cluster restart meta2 >/dev/null
wait_for "s['leader'] != 4294967295" 60 "a leader with two upgraded nodes"
sleep 3 # many leader ticks: one node still says level 0
check '[[ $(st "s[\"fsid\"]") == 0000000000000000 ]]' "no id while meta3 runs as before"
check 'cmp -s "$DATA/src" "$MNT/old"' "the cluster serves meanwhile"
cluster restart meta3 >/dev/null
wait_for "s['fsid'] != '0000000000000000' and s['leader'] != 4294967295" 60 "the leader gave the state an id"
fsid=$(st "s['fsid']")
log "file system id $fsid"
for ((i = 0; i < 120; i++)); do
  # (grep finds none at first: its status must not end the script under set -e and pipefail)
  n=$(grep -l "^fsid=$fsid" "$DATA"/chunk*/data/chunkserver.id 2>/dev/null | wc -l) || true
  nm=$(grep -l "file system id $fsid" "$DATA"/meta*/log 2>/dev/null | wc -l) || true
  grep -q "file system id $fsid" "$DATA/mount.log" && [[ $n == 3 && $nm == 3 ]] && break
  sleep 0.5
done
check 'grep -q "file system id $fsid" "$DATA/mount.log"' "the running mount learned the id"
check '[[ $n == 3 ]]' "every chunkserver learned and persisted the id ($n of 3)"
check '[[ $nm == 3 ]]' "every metaserver's state has the id ($nm of 3)"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/old"' "the file written before reads back"
cp "$DATA/src" "$MNT/new"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/new"' "a file written after reads back"
check '[[ $(st "s[\"fsid\"]") == "$fsid" ]]' "the id stays"
log "fuse_fsid_upgrade passed"
