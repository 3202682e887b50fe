#!/usr/bin/env bash
# integrity_random: 4 writer processes (integrity.py, fixed seed) pwrite random data at random offsets and
# sizes (1 B .. 3 MiB, some across 64 KiB block and 64 MiB chunk boundaries, sparse up to ~160 MiB) to 8
# files, fsync at random points, mirrored into local shadow copies; then unmount, mount again with a fresh
# synod-mount, and compare every byte (holes read as zeros) and every size against the shadows.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
source "$INTEG/lib.sh"
SEED=${SEED:-4242}
OPS=${OPS:-24}
PROCS=4
fuse_setup
start_writers -1
finish_and_verify integrity_random
