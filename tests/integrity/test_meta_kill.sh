#!/usr/bin/env bash
# integrity_meta_kill: the integrity_random workload (integrity.py, fixed seed) while the LEADER metaserver
# is killed with kill -9 while the writers wait at a third of their ops; they go on at once, so their next
# operations meet the dead leader: a new leader must take over and the writers go on without an error (a
# leader change is a pause, not a failure: retries are deduplicated by (session, seq)). A few ops later the
# killed node is restarted (it catches up from the new leader) while the writers finish. Then unmount, mount again with a fresh synod-mount, and compare every
# byte and size against the shadow copies.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
SEED=${SEED:-4242}
OPS=${OPS:-30}
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
# The serving leader as the metaservers themselves say (synodctl status: each one's own role), as a node
# name meta<i> (the i-th address of $METASERVERS).
SYNODCTL=$(find_built synodctl ops/synodctl) || fail "synodctl is not built in $BUILD"
leader() {
  "$SYNODCTL" -m "$METASERVERS" --json status 2>/dev/null | python3 -c '
import json, sys
addrs = sys.argv[1].split(",")
try:
    ms = json.load(sys.stdin)["metaservers"]
except Exception:
    sys.exit(0)
for m in ms:
    if m.get("role") == "LEADING" and m["addr"] in addrs:
        print("meta%d" % (addrs.index(m["addr"]) + 1))
        break
' "$METASERVERS" || true
}
mkdir -p "$DATA/progress"
# The writers stop before op GATE (a third of the way) until the leader is dead, so every op after it
# runs across the failover; the old leader is restarted (and catches up) while they are still writing.
GATE=$((OPS / 3))
t0=$SECONDS
python3 "$INTEG/integrity.py" write "$MNT" "$DATA/shadow" --seed "$SEED" --procs $PROCS --ops "$OPS" \
  --progress "$DATA/progress" --gate-at $GATE --gate-file "$DATA/progress/gate" &
WPID=$!
total=$((PROCS * OPS))
wait_progress $((PROCS * GATE)) 120 || wfail "writers ended before the gate"
L=$(leader)
[[ -n $L ]] || wfail "no metaserver log says it is leading"
cluster kill "$L"
touch "$DATA/progress/gate"
log "killed leader $L at $(progress)/$total ops; writers resume"
wait_progress $((PROCS * GATE + PROCS * 3)) 150 || wfail "writers failed with the leader $L dead"
L2=$(leader)
check '[[ -n $L2 && $L2 != "$L" ]]' "a new leader took over from $L"
cluster restart "$L"
log "new leader $L2; restarted $L at $(progress)/$total ops"
wait "$WPID" || fail "writers failed (seed $SEED)"
log "write phase: $((SECONDS - t0)) s"
cluster umount
check '! mountpoint -q "$MNT"' "unmounted"
cluster mount
t1=$SECONDS
python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow" --oplog "$DATA/progress" || fail "data differs after remount (seed $SEED)"
log "verify phase: $((SECONDS - t1)) s"
log "integrity_meta_kill passed"
