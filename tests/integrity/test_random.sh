#!/usr/bin/env bash
# integrity_random: 4 writer processes (integrity.py, fixed seed) pwrite random data at random offsets and
# sizes (1 B .. 3 MiB, some across 64 KiB block and 64 MiB chunk boundaries, sparse up to ~160 MiB) to 8
# files, fsync at random points, mirrored into local shadow copies; then unmount, mount again with a fresh
# synod-mount, and compare every byte (holes read as zeros) and every size against the shadows.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
SEED=${SEED:-4242}
OPS=${OPS:-24}
fuse_setup
t0=$SECONDS
python3 "$INTEG/integrity.py" write "$MNT" "$DATA/shadow" --seed "$SEED" --procs 4 --ops "$OPS" --progress "$DATA/progress" \
  || fail "writers failed (seed $SEED)"
log "write phase: $((SECONDS - t0)) s"
cluster umount
check '! mountpoint -q "$MNT"' "unmounted"
cluster mount
t1=$SECONDS
python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow" --oplog "$DATA/progress" || fail "data differs after remount (seed $SEED)"
log "verify phase: $((SECONDS - t1)) s"
log "integrity_random passed"
