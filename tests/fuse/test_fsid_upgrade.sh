#!/usr/bin/env bash
# fuse_fsid_upgrade: a cluster made before the file system id gets one without losing anything, and the
# clients and chunkservers that knew none learn it while running. The metaservers first run as before the id
# (SYNOD_META_TEST_NO_FSID=1: no id drawn at NsInit); a file is written through the mount. Then each
# metaserver is restarted as it is now: the next leader proposes NsInit on the existing root, which only adds
# the id. Checks: synodctl shows it; the running mount learns it from its keepalive and the chunkservers from
# their heartbeats (each persists it in its identity file); the file reads back; a new file can be written.
source "$(dirname "$0")/harness.sh"
export SYNOD_META_TEST_NO_FSID=1
fuse_setup
head -c $((2 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/old"
check '[[ $(st "s[\"fsid\"]") == 0000000000000000 ]]' "the cluster runs without a file system id"
unset SYNOD_META_TEST_NO_FSID
for m in meta1 meta2 meta3; do
  cluster restart "$m" >/dev/null
  sleep 1
done
wait_for "s['fsid'] != '0000000000000000' and s['leader'] != 4294967295" 60 "the leader gave the state an id"
fsid=$(st "s['fsid']")
log "file system id $fsid"
for ((i = 0; i < 120; i++)); do
  n=$(grep -l "^fsid=$fsid" "$DATA"/chunk*/data/chunkserver.id 2>/dev/null | wc -l)
  grep -q "file system id $fsid" "$DATA/mount.log" && [[ $n == 3 ]] && break
  sleep 0.5
done
check 'grep -q "file system id $fsid" "$DATA/mount.log"' "the running mount learned the id"
check '[[ $n == 3 ]]' "every chunkserver learned and persisted the id ($n of 3)"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/old"' "the file written before reads back"
cp "$DATA/src" "$MNT/new"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check 'cmp -s "$DATA/src" "$MNT/new"' "a file written after reads back"
check '[[ $(st "s[\"fsid\"]") == "$fsid" ]]' "the id stays"
log "fuse_fsid_upgrade passed"
