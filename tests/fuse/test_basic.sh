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
# A directory changed through this mount is answered from the change's own reply (parent_attr): the GETATTR
# the kernel sends after a create in it does not reach the metaservers, which are stopped (SIGSTOP) for that
# stat: it would wait for them otherwise. One python process, so the steps fit in attr_timeout (1 s).
python3 - "$MNT" $(cat "$DATA"/meta*/pid) <<'PY' || fail "stat of a directory just changed through this mount needed a metaserver"
import os, signal, sys, threading
mnt, pids = sys.argv[1], [int(p) for p in sys.argv[2:]]
d = os.path.join(mnt, "dattr")
os.mkdir(d)
before = os.stat(d)
os.close(os.open(os.path.join(d, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
got = []
for p in pids:
    os.kill(p, signal.SIGSTOP)
try:
    t = threading.Thread(target=lambda: got.append(os.stat(d)), daemon=True)
    t.start()
    t.join(0.5)
    in_time = not t.is_alive()  # judged before the metaservers continue
finally:
    for p in pids:
        os.kill(p, signal.SIGCONT)
t.join(30)
ok = in_time and len(got) == 1 and got[0].st_ctime_ns > before.st_ctime_ns
print("directory stat while the metaservers were stopped:", "answered" if ok else "waited for them")
sys.exit(0 if ok else 1)
PY
# An Open for reading answers where the file's first chunks live (OpenRep.chunks): the first read of a
# small file goes straight to a chunkserver, with every metaserver stopped (SIGSTOP) meanwhile.
head -c 200000 /dev/urandom >"$DATA/small.src"
cp "$DATA/small.src" "$MNT/small"
sync
python3 - "$MNT/small" "$DATA/small.src" $(cat "$DATA"/meta*/pid) <<'PY' || fail "the first read after an open needed a metaserver"
import os, signal, sys, threading
path, src, pids = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
want = open(src, "rb").read()
import time
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("1")  # the page cache must not answer the read
time.sleep(1.2)  # the kernel's attributes of the file expire: the stat below refreshes them, so the read
os.stat(path)    # that follows (within attr_timeout) sends no GETATTR of its own
fd = os.open(path, os.O_RDONLY)
got = []
for p in pids:
    os.kill(p, signal.SIGSTOP)
try:
    t = threading.Thread(target=lambda: got.append(os.pread(fd, len(want), 0)), daemon=True)
    t.start()
    t.join(0.5)
    in_time = not t.is_alive()
finally:
    for p in pids:
        os.kill(p, signal.SIGCONT)
t.join(30)
os.close(fd)
ok = in_time and len(got) == 1 and got[0] == want
print("read after open while the metaservers were stopped:", "answered" if ok else "waited for them")
sys.exit(0 if ok else 1)
PY
log "fuse_basic passed"
