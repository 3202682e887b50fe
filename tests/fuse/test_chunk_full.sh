#!/usr/bin/env bash
# fuse_chunk_full: one chunkserver out of space does not fail the application's writes. A fourth chunkserver
# on a 40 MiB tmpfs joins 3 on the disk; being empty, it is the placement's first choice, so it is in the
# chain of every new chunk (as head, middle or last, by the chain rotation). Three 1 MiB files are written,
# then its disk is filled by another file and 6 MiB are appended to each: every write that reaches it is
# refused there with ENOSPC, the client drops that replica (or, when the full one heads the chain, sends the
# bytes to the next replica first) and the write goes on. Nine more 6 MiB files follow (placed there until
# its heartbeat shows it full). Every write succeeds and reads back; the chunks left under their goal get
# their third copy on the disk chunkservers (the full one is no destination), so the status ends healthy.
source "$(dirname "$0")/harness.sh"
fuse_setup
T=$DATA/chunk4/data
mkdir -p "$T"
mount -t tmpfs -o size=40m synod-test "$T" 2>/dev/null || skip "cannot mount a tmpfs"
echo "$T" >>"$DATA/tmpfs_mounts" # unmounted at exit, after the cluster is down

cluster add-chunkserver >/dev/null
# a chunkserver is a placement candidate once its capacity reached the state (its first heartbeat)
wait_for 'sum(1 for c in s["chunkservers"] if c["state"] == "UP" and c["total_bytes"] > 0) == 4 and min(c["total_bytes"] for c in s["chunkservers"]) <= 40 << 20' 30 "4 chunkservers up, one of 40 MiB"

# three small files: the empty chunkserver is in each chain (at a different place in each: rotation by id)
for i in 1 2 3; do
  head -c $((1 << 20)) /dev/urandom >"$DATA/src$i"
  cp "$DATA/src$i" "$MNT/f$i" || fail "copy $i failed"
done
# its disk fills up (another tenant of the disk); the three chunks must take 6 MiB more each there
dd if=/dev/zero of="$T/filler" bs=1M status=none 2>/dev/null || true
for i in 1 2 3; do
  head -c $((6 << 20)) /dev/urandom >"$DATA/more$i"
  cat "$DATA/more$i" >>"$DATA/src$i"
  cat "$DATA/more$i" >>"$MNT/f$i" || fail "append to f$i failed with one replica's disk full"
done
log "appended to 3 files with one replica out of space"
# new files: placed on the full chunkserver until its heartbeat shows it full
for i in $(seq 4 12); do
  head -c $((6 << 20)) /dev/urandom >"$DATA/src$i"
  cp "$DATA/src$i" "$MNT/f$i" || fail "copy $i failed with one chunkserver full"
done
log "12 files written"
n=$(grep -c "is out of space\|bad (ENOSPC)" "$DATA/mount.log") || true
check '[[ $n -ge 1 ]]' "the mount met the full chunkserver ($n times)"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
for i in $(seq 1 12); do check 'cmp -s "$DATA/src$i" "$MNT/f$i"' "f$i reads back"; done
wait_for 's["under_goal"] == 0 and s["missing"] == 0 and s["chunks"] == 12' 60 "every chunk back at its goal"
log "fuse_chunk_full passed"
