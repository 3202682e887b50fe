#!/usr/bin/env bash
# integrity_chunk_kill: the integrity_random workload (integrity.py, fixed seed) while chunk2 is killed with
# kill -9 once the writers are about a quarter through (writes in flight if the poll is quick enough); the writers go on with a replica
# down, wait at two thirds until chunk2 has been restarted, and finish with it back. Then unmount, mount again
# with a fresh synod-mount, and compare every byte and size against the shadow copies.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
source "$INTEG/lib.sh"
SEED=${SEED:-777}
OPS=${OPS:-36}
PROCS=4
fuse_setup
GATE=$((OPS * 2 / 3))
start_writers $GATE
total=$((PROCS * OPS))
wait_progress $((total / 4)) 120 || wfail "writers ended before chunk2 could be killed"
cluster kill chunk2
log "killed chunk2 at $(progress)/$total ops"
wait_progress $((PROCS * GATE)) 150 || wfail "writers failed with chunk2 down"
cluster restart chunk2
sleep 1
touch "$DATA/progress/gate"
log "restarted chunk2 at $(progress)/$total ops; writers resume"
finish_and_verify integrity_chunk_kill
