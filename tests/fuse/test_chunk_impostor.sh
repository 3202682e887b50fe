#!/usr/bin/env bash
# fuse_chunk_impostor: a chunkserver dies and ANOTHER chunkserver (new data dir, new uuid, its own metaservers)
# comes up on its address, as a reused port or a redeployed host would have it. The metaservers still name the
# dead one in every location, so the client and the chain send it reads and writes: each carries the uuid of
# the chunkserver it is for (to_uuid), the impostor refuses them (ENXIO) and stores nothing, reads fail over,
# and writes go on without that replica. Before to_uuid the impostor took the writes and answered success,
# so the cluster counted a replica that lived on a stranger.
source "$(dirname "$0")/harness.sh"
fuse_setup
head -c $((6 << 20)) /dev/urandom >"$DATA/src"
dd if="$DATA/src" of="$MNT/before" bs=1M conv=fsync status=none
cluster kill chunk1
conf=$DATA/chunk1/chunk1.conf
sed -i 's/^metaservers = .*/metaservers = 127.0.0.1:1/' "$conf" # registers nowhere: a stranger to this cluster
rm -rf "$DATA/chunk1/data" && mkdir "$DATA/chunk1/data"       # a new identity (uuid)
cluster restart chunk1
port=$(sed -n 's/^listen = 127.0.0.1://p' "$conf")
for ((i = 0; i < 100; i++)); do
  grep -q "uuid" "$DATA/chunk1/log" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
check 'grep -q "chunkserver id 0 uuid" "$DATA/chunk1/log"' "the impostor runs with a new identity"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/before"' "a file written before reads back"
head -c $((5 << 20)) /dev/urandom >"$DATA/src2"
dd if="$DATA/src2" of="$MNT/after" bs=1M conv=fsync status=none
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src2" "$MNT/after"' "a file written with the impostor up reads back"
check 'grep -q "not the chunkserver addressed" "$DATA/chunk1/log"' "the impostor refused requests meant for chunk1"
n=$(find "$DATA/chunk1/data" -name '*.syc' | wc -l)
check '[[ $n == 0 ]]' "the impostor stored no chunk ($n files)"
log "fuse_chunk_impostor passed"
