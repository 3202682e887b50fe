#!/usr/bin/env bash
# fuse_unreachable: a cluster that stops answering is an error after the configured timeout, never an
# endless hang, and the mount works again once the cluster is back. A second mount with short timeouts
# (unreachable_timeout=4, io_timeout=4, rpc_timeout=1):
#  - every chunkserver frozen (SIGSTOP): reading a file not in the page cache fails with EIO in bounded time;
#  - every metaserver frozen too: stat of a new name fails with EIO in bounded time;
#  - all resumed (SIGCONT): both operations succeed again through the same mount.
source "$(dirname "$0")/harness.sh"
fuse_setup
M2=$DATA/mnt2
mkdir -p "$M2"
bin=$(find_built synod-mount fuse-client)
setsid "$bin" -f "$METASERVERS" "$M2" -o "log_file=$DATA/mount2.log,unreachable_timeout=4,io_timeout=4,rpc_timeout=1" \
  </dev/null >>"$DATA/mount2.log" 2>&1 &
EXTRA_PIDS+=($!)
EXTRA_MOUNTS+=("$M2")
for ((i = 0; i < 300; i++)); do mountpoint -q "$M2" && break; sleep 0.1; done
mountpoint -q "$M2" || fail "second mount did not appear"
head -c $((4 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/f"
sync
FROZEN=()
freeze() { local n p; for n in "$@"; do p=$(cat "$DATA/$n/pid"); kill -STOP "$p"; FROZEN+=("$p"); done; }
thaw() { local p; for p in "${FROZEN[@]}"; do kill -CONT "$p" 2>/dev/null; done; FROZEN=(); }
trap 'rc=$?; thaw; (exit $rc); fuse_cleanup' EXIT # keep the exit status for fuse_cleanup
# timed OP...: run OP with a hard 60 s cap; prints "rc seconds"
timed() { local t0=$SECONDS rc=0; timeout 60 "$@" >/dev/null 2>"$DATA/timed.err" || rc=$?; echo "$rc $((SECONDS - t0))"; }

echo 3 >/proc/sys/vm/drop_caches
freeze chunk1 chunk2 chunk3
read -r rc secs < <(timed cat "$M2/f")
log "read with every chunkserver frozen: exit $rc after $secs s ($(head -c 200 "$DATA/timed.err"))"
check '[[ $rc -ne 0 && $rc -ne 124 ]]' "read fails (not hangs) with every chunkserver frozen"
check 'grep -q "Input/output error" "$DATA/timed.err"' "the read error is EIO"
check '((secs <= 30))' "the read fails within 30 s (io_timeout=4)"

freeze meta1 meta2 meta3
read -r rc secs < <(timed stat "$M2/no-such-name-yet")
log "stat with every metaserver frozen: exit $rc after $secs s ($(head -c 200 "$DATA/timed.err"))"
check '[[ $rc -ne 0 && $rc -ne 124 ]]' "stat fails (not hangs) with every metaserver frozen"
check 'grep -q "Input/output error" "$DATA/timed.err"' "the stat error is EIO"
check '((secs <= 30))' "stat fails within 30 s (unreachable_timeout=4)"

thaw
sleep 2
check 'cmp -s "$DATA/src" "$M2/f"' "the file reads back once the cluster is back"
check 'touch "$M2/after" && [[ -e $MNT/after || -e $M2/after ]]' "metadata works again"
log "fuse_unreachable passed"
