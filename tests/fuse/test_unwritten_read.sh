#!/usr/bin/env bash
# fuse_unwritten_read: another client has placed chunk 0 of a sparse file (ChunkOpenWrite, as a writer does
# before its first write) and written nothing yet: the chunk's replicas do not have it. A read of that range
# through the mount reads zeros at once (ChunkLoc.unwritten), where it used to retry every replica until
# io_timeout and fail with EIO. When the placing client goes, the chunk goes with its session: still zeros.
source "$(dirname "$0")/harness.sh"
fuse_setup
PLACE=$(find_built place_chunk tests/fuse) || fail "place_chunk is not built in $BUILD"
truncate -s $((80 << 20)) "$MNT/sparse" # chunks 0 and 1 inside the size, none placed
mkfifo "$DATA/place.in"
"$PLACE" "$METASERVERS" sparse 0 <"$DATA/place.in" >"$DATA/place.out" 2>&1 &
pid=$!
exec 7>"$DATA/place.in" # the helper runs until this closes
for ((i = 0; i < 100; i++)); do grep -q placed "$DATA/place.out" && break; sleep 0.1; done
check 'grep -q "placed chunk" "$DATA/place.out"' "chunk 0 placed by another client ($(cat "$DATA/place.out"))"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(date +%s)
check 'timeout 25 cmp -s <(head -c $((1 << 20)) /dev/zero) <(dd if="$MNT/sparse" bs=1M count=1 status=none)' \
  "the unwritten chunk's range reads as zeros"
t=$(($(date +%s) - t0))
check '[[ $t -lt 10 ]]' "and at once (${t} s)"
exec 7>&-
wait "$pid"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'timeout 25 cmp -s <(head -c $((1 << 20)) /dev/zero) <(dd if="$MNT/sparse" bs=1M count=1 status=none)' \
  "still zeros once the placing client has gone"
log "fuse_unwritten_read passed"
