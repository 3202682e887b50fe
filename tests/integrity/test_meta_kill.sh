#!/usr/bin/env bash
# integrity_meta_kill: the integrity_random workload (integrity.py, fixed seed) while the LEADER metaserver
# is killed with kill -9 while the writers wait at a third of their ops; they go on at once, so their next
# operations meet the dead leader: a new leader must take over and the writers go on without an error (a
# leader change is a pause, not a failure: retries are deduplicated by (session, seq)). A few ops later the
# killed node is restarted (it catches up from the new leader) while the writers finish. Then unmount, mount
# again with a fresh synod-mount, and compare every byte and size against the shadow copies. The chunkservers
# must follow the new leader without registering again (a registration sends a full chunk report).
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
registrations() { cat "$DATA"/chunk*/log | grep -c "registered with metaserver" || true; }
REG0=$(registrations)
cluster kill "$L"
touch "$DATA/progress/gate"
log "killed leader $L at $(progress)/$total ops; writers resume"
wait_progress $((PROCS * GATE + PROCS * 3)) 150 || wfail "writers failed with the leader $L dead"
L2=$(meta_leader)
check '[[ -n $L2 && $L2 != "$L" ]]' "a new leader took over from $L"
cluster restart "$L"
log "new leader $L2; restarted $L at $(progress)/$total ops"
sleep 2 # more failed heartbeats to the dead leader, had they been going to register again
REG1=$(registrations)
check '[[ $REG0 -ge 3 && $REG1 == "$REG0" ]]' "chunkservers followed the new leader without registering again ($REG0 -> $REG1 registrations)"
finish_and_verify integrity_meta_kill
