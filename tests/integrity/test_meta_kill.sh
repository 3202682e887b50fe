#!/usr/bin/env bash
# integrity_meta_kill: the integrity_random workload (integrity.py, fixed seed) while the LEADER metaserver
# is killed with kill -9 while the writers wait at a third of their ops; they go on at once, so their next
# operations meet the dead leader: a new leader must take over and the writers go on without an error (a
# leader change is a pause, not a failure: retries are deduplicated by (session, seq)). A few ops later the
# killed node is restarted (it catches up from the new leader) while the writers finish. Then unmount, mount again with a fresh synod-mount, and compare every
# byte and size against the shadow copies.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
source "$INTEG/lib.sh"
SEED=${SEED:-4242}
OPS=${OPS:-30}
PROCS=4
fuse_setup
# The writers stop before op GATE (a third of the way) until the leader is dead, so every op after it
# runs across the failover; the old leader is restarted (and catches up) while they are still writing.
GATE=$((OPS / 3))
start_writers $GATE
total=$((PROCS * OPS))
wait_progress $((PROCS * GATE)) 120 || wfail "writers ended before the gate"
L=$(meta_leader)
[[ -n $L ]] || wfail "no metaserver says it is LEADING"
cluster kill "$L"
touch "$DATA/progress/gate"
log "killed leader $L at $(progress)/$total ops; writers resume"
wait_progress $((PROCS * GATE + PROCS * 3)) 150 || wfail "writers failed with the leader $L dead"
L2=$(meta_leader)
check '[[ -n $L2 && $L2 != "$L" ]]' "a new leader took over from $L"
cluster restart "$L"
log "new leader $L2; restarted $L at $(progress)/$total ops"
finish_and_verify integrity_meta_kill
