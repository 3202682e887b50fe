#!/usr/bin/env bash
# fuse_two_mounts: data and names written through one mount are seen through a second mount of the same
# cluster (close-to-open), including a file grown and one truncated after the second mount read it; and a
# flock taken through one mount conflicts with the other.
source "$(dirname "$0")/harness.sh"
fuse_setup
M2=$DATA/mnt2
mount_extra "$M2"
head -c $((3 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/shared"
check 'cmp -s "$DATA/src" "$M2/shared"' "second mount reads the first mount's file"
mkdir "$MNT/dir" && touch "$MNT/dir/a"
sleep 1.2 # entry/attr cache timeout
check '[[ -f $M2/dir/a ]]' "second mount sees a new name"
head -c 100000 /dev/urandom >>"$DATA/src"
cat "$DATA/src" >"$MNT/shared"
sleep 1.2
check 'cmp -s "$DATA/src" "$M2/shared"' "second mount sees the rewritten file"
truncate -s 1000 "$MNT/shared"
sleep 1.2
check '[[ $(stat -c %s "$M2/shared") == 1000 ]]' "second mount sees the truncation"
check 'cmp -s <(head -c 1000 "$DATA/src") "$M2/shared"' "truncated content"
# cluster-wide flock: held through mount 1, refused through mount 2
(flock -x 9; sleep 4) 9>"$MNT/lockfile" &
holder=$!
sleep 1
if flock -n -x "$M2/lockfile" true; then fail "flock through the second mount should conflict"; fi
wait $holder
check 'flock -w 10 -x "$M2/lockfile" true' "flock free after the holder exited"
log "fuse_two_mounts passed"
