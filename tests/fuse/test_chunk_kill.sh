#!/usr/bin/env bash
# fuse_chunk_kill: data acknowledged by fsync survives kill -9 of one chunkserver (read back from the
# others, caches dropped), and writing goes on with a replica down (the client reports it and continues).
source "$(dirname "$0")/harness.sh"
fuse_setup
head -c $((20 << 20)) /dev/urandom >"$DATA/src"
dd if="$DATA/src" of="$MNT/durable" bs=1M conv=fsync status=none
cluster kill chunk1
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/durable"' "fsynced data readable after kill -9 of chunk1"
head -c $((5 << 20)) /dev/urandom >"$DATA/src2"
dd if="$DATA/src2" of="$MNT/after" bs=1M conv=fsync status=none
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src2" "$MNT/after"' "file written with a chunkserver down reads back"
cluster restart chunk1
sleep 2
check 'cmp -s "$DATA/src" "$MNT/durable"' "data still readable after chunk1 is back"
log "fuse_chunk_kill passed"
