#!/usr/bin/env bash
# fuse_cluster_full: a cluster out of space answers ENOSPC, loses nothing, and takes writes again once space
# is freed. The 3 chunkservers run on 48 MiB tmpfs each (goal 3: every chunk on all three).
#   1. a 12 MiB file is written and synced;
#   2. a second file is written until the disks are full: the application gets ENOSPC (not EIO, not a hang),
#      from a write, fsync or close;
#   3. the first file still reads back, and no chunk lost a copy to the full disks (every replica was full
#      in turn: the client drops none, under goal 0);
#   4. the second file removed, its chunks are deleted from the chunkservers and a new file fits again.
source "$(dirname "$0")/harness.sh"
FUSE_CHUNK_TMPFS=48m
fuse_setup
wait_for 'len(s["chunkservers"]) == 3 and all(0 < c["total_bytes"] <= 48 << 20 for c in s["chunkservers"])' 30 \
  "3 chunkservers of 48 MiB"

head -c $((12 << 20)) /dev/urandom >"$DATA/a"
dd if="$DATA/a" of="$MNT/a" bs=1M conv=fsync status=none || fail "12 MiB file on an empty cluster"
out=$(timeout 120 python3 - "$MNT/b" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
block, written, err = os.urandom(1 << 20), 0, None
try:
    for _ in range(200):  # far more than the disks hold
        written += os.write(fd, block)
    os.fsync(fd)
except OSError as e:
    err = e.errno
try:
    os.close(fd)
except OSError as e:
    err = err or e.errno
print(errno.errorcode.get(err, err) if err else "none", written >> 20)
EOF
) || fail "the writer did not finish within 120 s (rc $?)"
read -r code mib <<<"$out"
log "second file: $code after $mib MiB accepted"
check '[[ $code == ENOSPC ]]' "a full cluster answers ENOSPC (got $code after $mib MiB)"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/a" "$MNT/a"' "the first file reads back on a full cluster"
wait_for 's["under_goal"] == 0 and s["missing"] == 0' 20 "no chunk lost a copy to the full disks"
n=$(grep -c "reported replica on chunkserver .* bad (ENOSPC)" "$DATA/mount.log") || true
check '[[ $n == 0 ]]' "no replica dropped for being full ($n)"

rm "$MNT/b"
ok=0
for ((i = 0; i < 60; i++)); do
  if head -c $((8 << 20)) /dev/urandom >"$DATA/c" && dd if="$DATA/c" of="$MNT/c" bs=1M conv=fsync status=none 2>/dev/null &&
    cmp -s "$DATA/c" "$MNT/c"; then
    ok=1
    break
  fi
  sleep 0.5
done
check '[[ $ok == 1 ]]' "a new file fits once the full file is removed"
check 'cmp -s "$DATA/a" "$MNT/a"' "the first file still reads back"
log "fuse_cluster_full passed"
