#!/usr/bin/env bash
# integrity_chunk_kill: the integrity_random workload (integrity.py, fixed seed) while chunk2 is killed with
# kill -9 once the writers are about a quarter through (writes in flight if the poll is quick enough); the writers go on with a replica
# down, wait at two thirds until chunk2 has been restarted, and finish with it back. Then unmount, mount again
# with a fresh synod-mount, and compare every byte and size against the shadow copies.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
SEED=${SEED:-777}
OPS=${OPS:-36}
PROCS=4
fuse_setup
progress() { cat "$DATA"/progress/n.* 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
wait_progress() { # ops-total deadline-s; 1 if the writers ended first
  local t0=$SECONDS
  while (($(progress) < $1)); do
    kill -0 "$WPID" 2>/dev/null || return 1
    [[ ! -e $DATA/progress/failed ]] || return 1
    ((SECONDS - t0 < $2)) || wfail "writers did not reach $1 ops in $2 s (at $(progress))"
    sleep 0.02
  done
}
wfail() { touch "$DATA/progress/gate"; fail "$@"; } # open the gate so no writer is left waiting
mkdir -p "$DATA/progress"
GATE=$((OPS * 2 / 3))
t0=$SECONDS
python3 "$INTEG/integrity.py" write "$MNT" "$DATA/shadow" --seed "$SEED" --procs $PROCS --ops "$OPS" \
  --progress "$DATA/progress" --gate-at $GATE --gate-file "$DATA/progress/gate" &
WPID=$!
total=$((PROCS * OPS))
wait_progress $((total / 4)) 120 || wfail "writers ended before chunk2 could be killed"
cluster kill chunk2
log "killed chunk2 at $(progress)/$total ops"
wait_progress $((PROCS * GATE)) 150 || wfail "writers failed with chunk2 down"
cluster restart chunk2
sleep 1
touch "$DATA/progress/gate"
log "restarted chunk2 at $(progress)/$total ops; writers resume"
wait "$WPID" || fail "writers failed (seed $SEED)"
log "write phase: $((SECONDS - t0)) s"
cluster umount
check '! mountpoint -q "$MNT"' "unmounted"
cluster mount
t1=$SECONDS
python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow" --oplog "$DATA/progress" || fail "data differs after remount (seed $SEED)"
log "verify phase: $((SECONDS - t1)) s"
log "integrity_chunk_kill passed"
