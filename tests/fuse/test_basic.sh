#!/usr/bin/env bash
# fuse_basic: the first POSIX checks (posix_checks.py) on a fresh 3+3 cluster, then the same data read back
# after dropping the kernel's caches, so the bytes come from the chunkservers.
source "$(dirname "$0")/harness.sh"
fuse_setup
python3 "$HERE/posix_checks.py" "$MNT"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check '[[ $(stat -c %s "$MNT/rw10485760") == 10485760 ]]' "10 MiB file size after cache drop"
check 'cmp -s <(cat "$MNT/rw10485760") <(cat "$MNT/rw10485760")' "stable re-read"
log "fuse_basic passed"
