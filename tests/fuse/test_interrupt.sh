#!/usr/bin/env bash
# fuse_interrupt: a signal to a process blocked in the file system ends its request promptly with EINTR
# (FUSE_INTERRUPT cancels the in-flight RPCs, see fs_ops.c intr_begin):
#   1. F_SETLKW through a second mount on a lock held through the first mount;
#   2. an fsync waiting for writes in flight while every chunkserver is stopped (SIGSTOP: RPCs hang
#      instead of failing);
#   3. a write that waits for room in flight while every chunkserver is stopped; after SIGCONT, close
#      succeeds and every acknowledged byte reads back (an interrupted write never drops acknowledged data).
# Each blocked call must return EINTR within 1.5 s of the signal (before: up to io_timeout, here 60 s).
# Reads are not tested here: the kernel never sends FUSE_INTERRUPT for them with this mount's settings
# (page-cache reads go out as read-ahead in the background and wait killably; O_DIRECT reads with
# FUSE_CAP_ASYNC_DIO wait uninterruptibly), so only a fatal signal ends a process blocked in one.
source "$(dirname "$0")/harness.sh"
fuse_setup
M2=$DATA/mnt2
mount_extra "$M2"
STOPPED=()
cont_all() { local p; for p in "${STOPPED[@]}"; do kill -CONT "$p" 2>/dev/null || true; done; STOPPED=(); }
stop_chunks() { local n p; for n in chunk1 chunk2 chunk3; do p=$(cat "$DATA/$n/pid"); kill -STOP "$p"; STOPPED+=("$p"); done; }
fuse_on_exit cont_all

# Runs python code with a SIGALRM after $1 s whose handler raises; prints "EINTR <blocked s> <after signal s>"
# if the call was interrupted, "DONE" if it finished first. "After signal" counts from when the alarm was due
# ($1 s after the start), not from when Python ran its handler: Python runs it only once the blocked system
# call returns, so that would always read ~0 (it did, while an fsync blocked for 30 s).
interrupted() {
  python3 - "$@" <<'PY'
import os, signal, sys, time, fcntl
delay, what, path = float(sys.argv[1]), sys.argv[2], sys.argv[3]
class Alarm(Exception): pass
def on_alarm(sig, frm):
    raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
t0 = time.monotonic()
signal.setitimer(signal.ITIMER_REAL, delay)
try:
    if what == "lock":
        fd = os.open(path, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
    elif what == "fsync":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, os.urandom(2 << 20))
        os.fsync(fd)
    elif what == "write":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        n = 0
        with open(sys.argv[4], "rb") as src:
            data = src.read()
        for i in range(64):
            os.pwrite(fd, data[i << 20:(i + 1) << 20], i << 20)
            n = i + 1
            with open(sys.argv[5], "w") as log:
                log.write(str(n))
    print("DONE")
except Alarm:
    t1 = time.monotonic()
    print("EINTR %.3f %.3f" % (t1 - t0, t1 - t0 - delay))
PY
}

expect_eintr() { # $1 = output of interrupted, $2 = what
  local out=$1 blocked after
  log "$2: $out"
  [[ $out == EINTR* ]] || fail "$2: the call was not interrupted ($out)"
  read -r _ blocked after <<<"$out"
  check "python3 -c 'import sys; sys.exit(0 if $after < 1.5 else 1)'" "$2: returned ${after}s after the signal"
}

# 1. F_SETLKW on a lock held through the other mount.
touch "$MNT/lockfile"
python3 -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(30)' "$MNT/lockfile" "$DATA/locked" &
holder=$!
for ((i = 0; i < 100; i++)); do [[ -f $DATA/locked ]] && break; sleep 0.1; done
[[ -f $DATA/locked ]] || fail "lock holder did not start"
expect_eintr "$(interrupted 1.5 lock "$M2/lockfile")" "F_SETLKW"
kill "$holder"; wait "$holder" 2>/dev/null || true
check 'python3 -c "
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)" "$M2/lockfile"' \
  "lock free through the second mount after the holder exited (nothing leaked by the interrupted wait)"

# In the background: the process's close (at exit) waits for its writes, which needs the chunkservers back.
blocked_bg() { # OUTFILE ARGS... : run `interrupted ARGS` with the chunkservers stopped, then resume them
  local out=$1 pid i
  shift
  stop_chunks
  interrupted "$@" >"$out" &
  pid=$!
  for ((i = 0; i < 300; i++)); do [[ -s $out ]] && break; sleep 0.1; done
  cont_all
  wait "$pid" || fail "$* failed"
}

# 2. fsync waiting for writes in flight while the chunkservers are stopped.
head -c $((8 << 20)) /dev/urandom >"$DATA/src"
dd if="$DATA/src" of="$MNT/data" bs=1M conv=fsync status=none
blocked_bg "$DATA/fout" 1.5 fsync "$MNT/fs"
expect_eintr "$(cat "$DATA/fout")" "fsync, chunkservers stopped"
check '[[ $(stat -c %s "$MNT/fs") == $((2 << 20)) ]]' "the written data landed after the chunkservers resumed"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/data"' "an earlier file reads back after the chunkservers resumed"

# 3. A write waiting for room in flight while the chunkservers are stopped.
head -c $((64 << 20)) /dev/urandom >"$DATA/src64"
blocked_bg "$DATA/wout" 2 write "$MNT/w" "$DATA/src64" "$DATA/wcount"
expect_eintr "$(cat "$DATA/wout")" "write, chunkservers stopped"
n=$(cat "$DATA/wcount" 2>/dev/null || echo 0)
log "acknowledged before the interrupt: $n MiB"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check '[[ $(stat -c %s "$MNT/w") -ge $((n << 20)) ]]' "size covers the acknowledged writes"
check 'cmp -s <(head -c $((n << 20)) "$DATA/src64") <(head -c $((n << 20)) "$MNT/w")' \
  "every acknowledged byte reads back after the interrupted write"
log "fuse_interrupt passed"
