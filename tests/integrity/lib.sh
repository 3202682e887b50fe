# lib.sh - sourced by tests/integrity/test_*.sh (after ../fuse/harness.sh and fuse_setup): the writers'
# progress and the unmount / remount / verify ending shared by the integrity tests.
#
#   start_writers GATE           integrity.py write in the background (WPID), SEED/OPS/PROCS, progress in
#                                $DATA/progress, every writer waiting before op GATE until the gate opens
#   progress                     ops done so far by all writers
#   wait_progress N SECS         until N ops are done (fails after SECS); returns 1 if the writers ended first
#   wfail MESSAGE                open the gate (no writer is left waiting), then fail
#   finish_and_verify NAME       wait for the writers, unmount, mount again, verify every byte and size
progress() { cat "$DATA"/progress/n.* 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
wfail() { touch "$DATA/progress/gate"; fail "$@"; }
wait_progress() {
  local t0=$SECONDS
  while (($(progress) < $1)); do
    kill -0 "$WPID" 2>/dev/null || return 1
    [[ ! -e $DATA/progress/failed ]] || return 1
    ((SECONDS - t0 < $2)) || wfail "writers did not reach $1 ops in $2 s (at $(progress))"
    sleep 0.02
  done
}
start_writers() {
  mkdir -p "$DATA/progress"
  T0=$SECONDS
  python3 "$INTEG/integrity.py" write "$MNT" "$DATA/shadow" --seed "$SEED" --procs "$PROCS" --ops "$OPS" \
    --progress "$DATA/progress" --gate-at "$1" --gate-file "$DATA/progress/gate" &
  WPID=$!
}
finish_and_verify() {
  wait "$WPID" || fail "writers failed (seed $SEED)"
  log "write phase: $((SECONDS - T0)) s"
  cluster umount
  check '! mountpoint -q "$MNT"' "unmounted"
  cluster mount
  local t1=$SECONDS
  python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow" --oplog "$DATA/progress" \
    || fail "data differs after remount (seed $SEED)"
  log "verify phase: $((SECONDS - t1)) s"
  log "$1 passed"
}
