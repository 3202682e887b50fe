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
# lookup look-ahead (a listing answers lookups after 8 in one directory): stale for at most the cache
# timeout, and never after a change made through the same mount
mkdir "$MNT/many"
for i in $(seq -w 1 40); do echo "$i" >"$MNT/many/f$i"; done
sleep 1.2
for i in $(seq -w 1 40); do [[ -f $M2/many/f$i ]] || fail "second mount: many/f$i missing"; done
check '[[ $(stat -c %a "$M2/many/f30") == 644 ]]' "listed mode"
chmod 600 "$M2/many/f31"
check '[[ $(stat -c %a "$M2/many/f31") == 600 ]]' "a change through the same mount is seen at once"
rm "$M2/many/f32"
check '[[ ! -e $M2/many/f32 ]]' "an unlink through the same mount is seen at once"
chmod 640 "$MNT/many/f33"
echo more >>"$MNT/many/f34"
rm "$MNT/many/f35"
sleep 1.2
check '[[ $(stat -c %a "$M2/many/f33") == 640 ]]' "another mount's chmod seen after the cache timeout"
check '[[ $(stat -c %s "$M2/many/f34") == 8 ]]' "another mount's append seen after the cache timeout"
check '[[ ! -e $M2/many/f35 ]]' "another mount's unlink seen after the cache timeout"
# cluster-wide flock: held through mount 1, refused through mount 2
(flock -x 9; sleep 4) 9>"$MNT/lockfile" &
holder=$!
sleep 1
if flock -n -x "$M2/lockfile" true; then fail "flock through the second mount should conflict"; fi
wait $holder
check 'flock -w 10 -x "$M2/lockfile" true' "flock free after the holder exited"
# The page cache survives an open when the file did not change (FOPEN_KEEP_CACHE): the second mount
# re-reads a file it read before with every chunkserver stopped (SIGSTOP). An overwrite of the same size
# through the first mount is seen by the next open all the same (ctime and mtime moved).
head -c $((1 << 20)) /dev/urandom >"$DATA/kc1"
head -c $((1 << 20)) /dev/urandom >"$DATA/kc2"
cp "$DATA/kc1" "$MNT/kc"
HERE="$HERE" python3 - "$M2/kc" "$MNT/kc" "$DATA/kc1" "$DATA/kc2" $(cat "$DATA"/chunk*/pid) <<'PY' || fail "page cache kept across opens"
import os, sys
sys.path.insert(0, os.environ["HERE"])
from stopped import while_stopped
path2, path1, src1, src2, pids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], [int(p) for p in sys.argv[5:]]
want1, want2 = open(src1, "rb").read(), open(src2, "rb").read()
def read():
    with open(path2, "rb") as f:
        return f.read()
first = read()
in_time, got = while_stopped(pids, read)
kept = in_time and got == [want1]
print("re-read with the chunkservers stopped:", "from the page cache" if in_time else "waited for them",
      "; contents", "right" if got == [want1] else "WRONG")
fd = os.open(path1, os.O_WRONLY)  # same size, new bytes
os.write(fd, want2)
os.close(fd)
now = read()
print("after another mount's overwrite:", "new contents" if now == want2 else "STALE contents")
sys.exit(0 if first == want1 and kept and now == want2 else 1)
PY
log "fuse_two_mounts passed"
