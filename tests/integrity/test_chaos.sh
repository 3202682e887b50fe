#!/usr/bin/env bash
# integrity_chaos (ops/test --long): faults injected at random (fixed seed) for CHAOS_SECONDS (default 300)
# into a cluster of 3 metaservers and 4 chunkservers, under two workloads through one FUSE mount:
#  - integrity.py: 4 writers of random data at random offsets (as integrity_random), in rounds of OPS writes
#    each (a round truncates the files and starts again with the next seed) until the faults end; the last
#    round is checked byte for byte;
#  - chaos_meta.py: random namespace operations (mkdir, create, overwrite, append, truncate, renames of files
#    and directories, unlink, rmdir, link, symlink, chmod, xattrs) against an in-memory model, read back as
#    it goes.
# One fault at a time, each healed before the next: kill -9 of the leader, of a follower, SIGSTOP of a
# metaserver (a hung machine: 2-8 s), kill -9 of a chunkserver, SIGSTOP of a chunkserver (long enough, with
# namespace.cs_timeout = 4s, to be declared dead, re-replicated, then come back with stale copies). Killed
# nodes restart after 2-8 s. No workload operation may fail: a minority fault is a pause.
# Then every node up, copies back at their goal with nothing missing or over, fsck clean, unmount, a fresh
# mount, and every byte and every path checked against the shadow copies and the model.
# SEED, CHAOS_SECONDS and OPS (integrity.py ops per writer) can be set; a failure names the seed.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
source "$INTEG/lib.sh"
SEED=${SEED:-20261208}
CHAOS_SECONDS=${CHAOS_SECONDS:-300}
OPS=${OPS:-150}
PROCS=4
RANDOM=$SEED
fuse_setup --chunks 4 --meta-conf "namespace.cs_timeout = 4s"

STOPPED=""
cont_stopped() { [[ -z $STOPPED ]] || kill -CONT "$STOPPED" 2>/dev/null || true; }
fuse_on_exit cont_stopped

mkdir -p "$DATA/progress"
writer_rounds() {
  local r=0
  while [[ ! -e $DATA/meta_stop ]]; do
    r=$((r + 1))
    python3 "$INTEG/integrity.py" write "$MNT" "$DATA/shadow" --seed $((SEED + r)) --procs "$PROCS" --ops "$OPS" \
      --progress "$DATA/progress" >>"$DATA/writers.out" 2>&1 || {
      echo "round $r (seed $((SEED + r))) failed" >>"$DATA/writers.out"
      touch "$DATA/progress/failed"
      return 1
    }
    echo "$r" >"$DATA/writer_rounds"
  done
}
writer_rounds &
WPID=$!
MPROG=$DATA/meta_progress
python3 "$INTEG/chaos_meta.py" run "$MNT/meta" "$DATA/model.json" --seed "$SEED" --seconds "$CHAOS_SECONDS" \
  --stop-file "$DATA/meta_stop" --progress "$MPROG" >"$DATA/chaos_meta.out" 2>&1 &
MPID=$!

rnd() { echo $(($1 + RANDOM % ($2 - $1 + 1))); } # rnd LO HI (inclusive)
node_pid() { cat "$DATA/$1/pid" 2>/dev/null || true; }
MDONE=0
meta_wait() { # reap the namespace workload once; fail if it failed
  [[ $MDONE == 1 ]] && return 0
  MDONE=1
  wait "$MPID" && return 0
  cat "$DATA/chaos_meta.out"
  fail "namespace workload failed (seed $SEED): $(tail -1 "$DATA/chaos_meta.out")"
}
workloads_ok() {
  kill -0 "$MPID" 2>/dev/null || meta_wait
  [[ ! -e $DATA/progress/failed ]] || { cat "$DATA/writers.out"; fail "a writer failed under fault (seed $SEED)"; }
}
# sleep N seconds while checking the workloads
pause() {
  local end=$((SECONDS + $1))
  while ((SECONDS < end)); do
    workloads_ok
    sleep 0.5
  done
}
followers() {
  local l=$1 i
  for i in 1 2 3; do [[ meta$i == "$l" ]] || echo "meta$i"; done
}

faults=0
T0=$SECONDS
while ((SECONDS - T0 < CHAOS_SECONDS)); do
  kind=$(rnd 1 5)
  case $kind in
  1 | 2)
    L=$(meta_leader)
    if [[ -z $L ]]; then pause 1; continue; fi
    if [[ $kind == 1 ]]; then n=$L; else mapfile -t F < <(followers "$L"); n=${F[$((RANDOM % 2))]}; fi
    down=$(rnd 2 8)
    log "fault $((faults + 1)): kill -9 $n ($([[ $n == "$L" ]] && echo leader || echo follower)) for $down s; meta ops $(cat "$MPROG" 2>/dev/null || echo 0), write round $(cat "$DATA/writer_rounds" 2>/dev/null || echo 0)"
    cluster kill "$n" >/dev/null
    pause "$down"
    cluster restart "$n" >/dev/null
    ;;
  3 | 5)
    if [[ $kind == 3 ]]; then n=meta$(rnd 1 3); else n=chunk$(rnd 1 4); fi
    p=$(node_pid "$n")
    [[ -n $p ]] || fail "no pid for $n"
    down=$(rnd 2 8)
    log "fault $((faults + 1)): SIGSTOP $n for $down s; meta ops $(cat "$MPROG" 2>/dev/null || echo 0), write round $(cat "$DATA/writer_rounds" 2>/dev/null || echo 0)"
    STOPPED=$p
    kill -STOP "$p"
    pause "$down"
    kill -CONT "$p"
    STOPPED=""
    ;;
  4)
    n=chunk$(rnd 1 4)
    down=$(rnd 2 8)
    log "fault $((faults + 1)): kill -9 $n for $down s; meta ops $(cat "$MPROG" 2>/dev/null || echo 0), write round $(cat "$DATA/writer_rounds" 2>/dev/null || echo 0)"
    cluster kill "$n" >/dev/null
    pause "$down"
    cluster restart "$n" >/dev/null
    ;;
  esac
  faults=$((faults + 1))
  pause "$(rnd 2 5)"
done
log "$faults faults in $((SECONDS - T0)) s"

touch "$DATA/meta_stop"
meta_wait
cat "$DATA/chaos_meta.out"
wait "$WPID" || { cat "$DATA/writers.out"; fail "writers failed (seed $SEED)"; }
log "writers done: $(cat "$DATA/writer_rounds") rounds of $PROCS x $OPS writes"

for n in meta1 meta2 meta3 chunk1 chunk2 chunk3 chunk4; do
  p=$(node_pid "$n")
  check '[[ -n $p ]] && kill -0 "$p"' "$n is running after the faults"
done
wait_for 's["under_goal"] == 0 and s["missing"] == 0 and s["over_goal"] == 0' 240 "copies back at their goal"
out=$(ctl fsck) || fail "fsck not clean (exit $?): $out"
check 'grep -q "(clean)" <<<"$out"' "fsck clean ($out)"

cluster umount
check '! mountpoint -q "$MNT"' "unmounted"
cluster mount
python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow" --oplog "$DATA/progress" \
  || fail "data differs after remount (seed $SEED)"
python3 "$INTEG/chaos_meta.py" verify "$MNT/meta" "$DATA/model.json" || fail "namespace differs after remount (seed $SEED)"
log "integrity_chaos passed ($faults faults, seed $SEED)"
