#!/usr/bin/env bash
# fuse_foreign_cluster: every metaserver of cluster A dies and cluster B (new data, its own file system id)
# comes up on the very same addresses, as a redeployment on the same hosts and ports would have it, while A's
# mount and chunkservers are still running. They carry A's file system id with every call (learned at
# SessionOpen / registration, kept in the chunkserver's identity file), and B's metaservers refuse them
# (ENXIO "another cluster") before any handler runs:
#  - the mount's operations fail with EIO after unreachable_timeout (not ENOENT from B's namespace), and
#    nothing it tried lands in B;
#  - A's chunkservers neither register with B nor report their chunks to it, so B (unknown_chunk_grace 1 s)
#    never orders them deleted;
#  - once A's metaservers are back (B gone), the same mount reads A's file back intact.
# Before the file system id, the mount opened a session with B and worked on B's namespace, and A's
# chunkservers registered with B, which deleted their chunks as unknown.
source "$(dirname "$0")/harness.sh"
FUSE_MOUNT_OPTS="unreachable_timeout=4"
fuse_setup
head -c $((3 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/a-file"
wait_for "s['fsid'] != '0000000000000000'" 30 "cluster A has its file system id"
fsid_a=$(st "s['fsid']")
check '[[ $fsid_a =~ ^[0-9a-f]{16}$ && $fsid_a != 0000000000000000 ]]' "cluster A has a file system id ($fsid_a)"
chunks_a=$(find "$DATA"/chunk*/data -name '*.syc' | wc -l)
check '[[ $chunks_a -ge 3 ]]' "a-file has copies on A's chunkservers ($chunks_a chunk files)"
for m in meta1 meta2 meta3; do cluster kill "$m" >/dev/null; done
other_cluster "$DATA/b" --base-port "$BASE_PORT" --metas 3 --chunks 0 --wait 60 \
  --meta-conf "namespace.unknown_chunk_grace = 1s" up
wait_for "s['fsid'] not in ('0000000000000000', '$fsid_a')" 30 "B answers on A's addresses, with its own id"
fsid_b=$(st "s['fsid']") # the same addresses: B answers now
check '[[ $fsid_b =~ ^[0-9a-f]{16}$ && $fsid_b != "$fsid_a" ]]' "cluster B has another file system id ($fsid_b)"

# timed OP...: run OP with a hard 60 s cap; prints "rc seconds"
timed() { local t0=$SECONDS rc=0; timeout 60 "$@" >/dev/null 2>"$DATA/timed.err" || rc=$?; echo "$rc $((SECONDS - t0))"; }
read -r rc secs < <(timed stat "$MNT/a-file")
check '[[ $rc != 0 && $rc != 124 ]] && grep -q "Input/output error" "$DATA/timed.err"' \
  "stat of A's file fails with EIO, in bounded time (rc $rc after $secs s: $(cat "$DATA/timed.err"))"
read -r rc secs < <(timed touch "$MNT/b-new")
check '[[ $rc != 0 && $rc != 124 ]]' "creating a file fails (rc $rc after $secs s: $(cat "$DATA/timed.err"))"
sleep 3 # heartbeats of A's chunkservers to B; B's grace for unknown chunks is 1 s
check '[[ $(st "len(s[\"chunkservers\"])") == 0 ]]' "no chunkserver of A registered with B"
check '[[ $(st "s[\"files\"]") == 0 ]]' "B's namespace got nothing from A's mount"
n=$(find "$DATA"/chunk*/data -name '*.syc' | wc -l)
check '[[ $n == "$chunks_a" ]]' "A's chunkservers kept every chunk file ($n of $chunks_a)"
check 'grep -q "belongs to another cluster" "$DATA/mount.log"' "the mount says why it skipped B's metaservers"
check 'grep -q "belongs to another cluster" "$DATA/chunk1/log"' "chunk1 says why it skipped B's metaservers"
check 'grep -q "refused" "$DATA/b/meta1/log" "$DATA/b/meta2/log" "$DATA/b/meta3/log"' \
  "B's metaservers logged the refused calls"
# A new mount of A, as ops/cluster makes it (with A's id, kept in DATA/fsid at 'up'), refuses B: it fails
# after unreachable_timeout instead of attaching to B.
check '[[ $(cat "$DATA/fsid") == "$fsid_a" ]] && tr "\0" " " <"/proc/$(cat "$DATA/mount.pid")/cmdline" | grep -q "fsid=$fsid_a"' \
  "ops/cluster kept A's id and mounted with it"
mkdir -p "$DATA/mnt3"
rc=0
timeout 60 "$(find_built synod-mount fuse-client)" -f "$METASERVERS" "$DATA/mnt3" \
  -o "fsid=$fsid_a,unreachable_timeout=3,log_file=$DATA/mount3.log" </dev/null >/dev/null 2>&1 || rc=$?
mountpoint -q "$DATA/mnt3" && fusermount3 -u "$DATA/mnt3"
check '[[ $rc != 0 && $rc != 124 ]] && grep -q "belongs to another cluster" "$DATA/mount3.log"' \
  "a new mount of A refuses B's metaservers (rc $rc)"

other_cluster "$DATA/b" down >/dev/null
for m in meta1 meta2 meta3; do cluster restart "$m" >/dev/null; done
wait_for "s['fsid'] == '$fsid_a' and s['leader'] != 4294967295" 60 "A's metaservers serve again"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
ok=0
for ((i = 0; i < 60; i++)); do cmp -s "$DATA/src" "$MNT/a-file" && { ok=1; break; }; sleep 0.5; done
check '[[ $ok == 1 ]]' "the same mount reads A's file back intact"
check '[[ ! -e $MNT/b-new ]]' "the create refused by B did not happen in A either"
log "fuse_foreign_cluster passed"
