#!/usr/bin/env bash
# fuse_basic: the first POSIX checks (posix_checks.py) on a fresh 3+3 cluster, then the same data read back
# after dropping the kernel's caches, so the bytes come from the chunkservers.
source "$(dirname "$0")/harness.sh"
FUSE_MOUNT_OPTS=allow_other # an unprivileged caller too (the groups check below)
fuse_setup --chunk-conf "log_level = debug" # chunkservers log each Fsync and each write synced in its call
python3 "$HERE/posix_checks.py" "$MNT"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check '[[ $(stat -c %s "$MNT/rw10485760") == 10485760 ]]' "10 MiB file size after cache drop"
check 'cmp -s <(cat "$MNT/rw10485760") <(cat "$MNT/rw10485760")' "stable re-read"
# A directory changed through this mount is answered from the change's own reply (parent_attr): the GETATTR
# the kernel sends after a create in it does not reach the metaservers, which are stopped (SIGSTOP) for that
# stat: it would wait for them otherwise. The same after a file made there was written and closed: its
# ChunkOpenWrite and ChunkWriteDone change no directory (a small file written used to cost a Getattr RPC of
# its directory before the next create). One python process, so each case fits in attr_timeout (1 s).
HERE="$HERE" python3 - "$MNT" $(cat "$DATA"/meta*/pid) <<'PY' || fail "stat of a directory just changed through this mount needed a metaserver"
import os, sys
sys.path.insert(0, os.environ["HERE"])
from stopped import while_stopped
mnt, pids = sys.argv[1], [int(p) for p in sys.argv[2:]]


def create(d):
    os.close(os.open(os.path.join(d, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def create_write(d):
    with open(os.path.join(d, "f"), "wb") as f:
        f.write(os.urandom(20000))


ok = True
for name, change in (("dattr", create), ("dattr2", create_write)):
    d = os.path.join(mnt, name)
    os.mkdir(d)
    before = os.stat(d)
    change(d)
    in_time, got = while_stopped(pids, lambda: os.stat(d))
    good = in_time and len(got) == 1 and got[0].st_ctime_ns > before.st_ctime_ns
    print(f"directory stat after {change.__name__}, metaservers stopped:", "answered" if good else "waited for them")
    ok = ok and good
sys.exit(0 if ok else 1)
PY
# An Open for reading answers where the file's first chunks live (OpenRep.chunks): the first read of a
# small file goes straight to a chunkserver, with every metaserver stopped (SIGSTOP) meanwhile.
head -c 200000 /dev/urandom >"$DATA/small.src"
cp "$DATA/small.src" "$MNT/small"
sync
HERE="$HERE" python3 - "$MNT/small" "$DATA/small.src" $(cat "$DATA"/meta*/pid) <<'PY' || fail "the first read after an open needed a metaserver"
import os, sys
sys.path.insert(0, os.environ["HERE"])
from stopped import while_stopped
path, src, pids = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
want = open(src, "rb").read()
import time
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("1")  # the page cache must not answer the read
time.sleep(1.2)  # the kernel's attributes of the file expire: the stat below refreshes them, so the read
os.stat(path)    # that follows (within attr_timeout) sends no GETATTR of its own
fd = os.open(path, os.O_RDONLY)
in_time, got = while_stopped(pids, lambda: os.pread(fd, len(want), 0))
os.close(fd)
ok = in_time and len(got) == 1 and got[0] == want
print("read after open while the metaservers were stopped:", "answered" if ok else "waited for them")
sys.exit(0 if ok else 1)
PY
# The kernel reads security.capability before every write(2) (a write drops file capabilities); the mount
# answers "none" from its cache for attr_timeout, so writes to a file it just made reach no metaserver
# (every one stopped here). A capability set through the mount is seen by the next write, which removes it.
HERE="$HERE" python3 - "$MNT" $(cat "$DATA"/meta*/pid) <<'PY' || fail "security.capability: cached answer wrong or a write needed a metaserver"
import errno, os, struct, sys
sys.path.insert(0, os.environ["HERE"])
from stopped import while_stopped
mnt, pids = sys.argv[1], [int(p) for p in sys.argv[2:]]
path = os.path.join(mnt, "capw")
fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.pwrite(fd, b"a" * 4096, 0)
in_time, got = while_stopped(pids, lambda: os.pwrite(fd, b"b" * 4096, 4096))
os.close(fd)
data = open(path, "rb").read()
ok = in_time and got == [4096] and data == b"a" * 4096 + b"b" * 4096
print("write while the metaservers were stopped:", "answered" if in_time else "waited for them",
      "; contents", "right" if data == b"a" * 4096 + b"b" * 4096 else "WRONG")
# VFS_CAP_REVISION_2, effective bit; permitted CAP_NET_RAW (13)
os.setxattr(path, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
try:
    have = os.getxattr(path, "security.capability")
except OSError:
    have = b""  # the cache answered "none" for a capability set through this mount
with open(path, "r+b") as f:
    f.write(b"c")
try:
    os.getxattr(path, "security.capability")
    dropped = False
except OSError as e:
    dropped = e.errno == errno.ENODATA
print("capability set:", len(have) == 20, "; dropped by the write:", dropped)
sys.exit(0 if ok and len(have) == 20 and dropped else 1)
PY
# close(2) makes what was written durable on every replica (sync_on_close, the default): before close
# returns, each of the three chunkservers has fdatasync'ed the new chunk (strace watches them; their own
# background writeback would use syncfs, and only after 2 s).
sync_pids=$(cat "$DATA"/chunk*/pid)
declare -A loglines
for c in "$DATA"/chunk*; do loglines[$c]=$(wc -l <"$c/log"); done
tracers=()
for p in $sync_pids; do
  strace -qq -f -y -e trace=fdatasync -p "$p" -o "$DATA/fdatasync.$p" &
  tracers+=($!)
done
sleep 1
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, os.urandom(100000))
os.close(fd)' "$MNT/durable"
kill "${tracers[@]}" 2>/dev/null || true
wait "${tracers[@]}" 2>/dev/null || true
for p in $sync_pids; do
  check 'grep -q "fdatasync(" "$DATA/fdatasync.$p"' "chunkserver pid $p synced the chunk before close returned"
done
# ... in the write's own chain round trip: the close sent the file's last write with sync (WriteReq.sync),
# so every replica synced it before answering and no Fsync followed.
for c in "$DATA"/chunk*; do
  new=$(tail -n +"$((loglines[$c] + 1))" "$c/log")
  check '[[ $(grep -c "synced with its write$" <<<"$new") == 1 ]]' "${c##*/} synced the chunk with its write"
  check '! grep -q ": Fsync, " <<<"$new"' "${c##*/} got no Fsync for the file closed"
done
# Root's operations skip the supplementary groups (fuse_req_getgroups reads /proc/PID/task/TID/status for
# each call; the namespace never consults them for uid 0). strace on synod-mount: a create, a rename and an
# unlink as root open no /proc status file; the same as an unprivileged user (uid 65534, in a world-writable
# directory) do, so the check sees the reads when they happen (posix_suite's group_member covers their use).
chmod 755 "$DATA" # mktemp made it 0700: the unprivileged caller must reach the mount point below it
mkdir -m 1777 "$MNT/credtest"
mpid=$(cat "$DATA/mount.pid")
cred_trace() { # $1: output file; the rest: command run under the trace
  local out=$1
  shift
  strace -qq -f -e trace=openat -p "$mpid" -o "$out" &
  local tr=$!
  sleep 1
  "$@"
  kill "$tr" 2>/dev/null || true
  wait "$tr" 2>/dev/null || true
}
cred_ops='import os, sys
d = sys.argv[1]
os.close(os.open(d + "a", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
os.rename(d + "a", d + "b")
os.unlink(d + "b")'
cred_trace "$DATA/cred.root" python3 -c "$cred_ops" "$MNT/credtest/r"
cred_trace "$DATA/cred.user" setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c "$cred_ops" "$MNT/credtest/u"
check '! grep -q "/proc/.*/status" "$DATA/cred.root"' "root's create, rename and unlink read no groups from /proc"
check 'grep -q "/proc/.*/status" "$DATA/cred.user"' "an unprivileged user's operations read their groups"
# fsync of a file with several chunks sends their chain Fsyncs in parallel: with one chunkserver stopped
# (SIGSTOP), every chunk whose chain starts elsewhere reaches its head at once; one after the other, the
# first Fsync would hold the rest back until its 5 s deadline. A first fsync shows (chunkservers' debug log:
# "Fsync, 2 after us" = the head) which chunkserver heads each chunk (heads rotate over the replicas, see
# ns_chunks test_heads_spread); the one heading the fewest is stopped.
python3 - "$MNT" "$DATA" <<'PY' || fail "fsync did not send the chunks' Fsyncs in parallel"
import os, re, signal, sys, threading, time
mnt, data = sys.argv[1], sys.argv[2]
names = ["chunk1", "chunk2", "chunk3"]
pids = {n: int(open(f"{data}/{n}/pid").read()) for n in names}
def marks():
    return {n: os.path.getsize(f"{data}/{n}/log") for n in names}
def heads(since):  # chunk id -> the chunkserver that got its Fsync from the client
    out = {}
    for n in names:
        with open(f"{data}/{n}/log", errors="replace") as f:
            f.seek(since[n])
            for line in f:
                m = re.search(r"chunk ([0-9a-f]{16}) v[0-9]+: Fsync, 2 after us", line)
                if m:
                    out[m.group(1)] = n
    return out
fd = os.open(f"{mnt}/multi", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
def write_all(b):  # 4 KiB ending on a 1 MiB boundary in each of 4 chunks: each is sent at once (4 in flight)
    for i in range(4):
        os.pwrite(fd, bytes([b]) * 4096, i * (64 << 20) + (1 << 20) - 4096)
write_all(1)
time.sleep(1)
m = marks()
os.fsync(fd)
h = heads(m)
stop = min(names, key=lambda n: sum(v == n for v in h.values()))
expect = {k for k, v in h.items() if v != stop}
write_all(2)
time.sleep(1)  # the writes complete: with a chunkserver stopped they would hold the fsync's flush back
m = marks()
os.kill(pids[stop], signal.SIGSTOP)
try:
    t = threading.Thread(target=os.fsync, args=(fd,))
    t.start()
    end = time.time() + 3
    while time.time() < end and not expect <= set(heads(m)):
        time.sleep(0.05)
    seen = {k for k in heads(m) if k in expect}
finally:
    os.kill(pids[stop], signal.SIGCONT)
t.join(60)
os.close(fd)
print(f"{len(h)} chunks synced by Fsync; {stop} stopped; {len(seen)} of the {len(expect)} chunks headed elsewhere "
      "reached their head meanwhile")
sys.exit(0 if len(expect) >= 2 and seen == expect and not t.is_alive() else 1)
PY
# a mount whose synod-mount died (kill -9) answers ENOTCONN and mountpoint(1) calls it no mount point:
# `ops/cluster umount` still takes it out of the mount table, and mount works again
cp "$MNT/rw10485760" "$DATA/rw10485760"
exec 3<"$MNT/rw10485760" # a file open at the crash: nothing could unmount it then
kill -9 "$(cat "$DATA/mount.pid")"
for ((i = 0; i < 50; i++)); do ls "$MNT" >/dev/null 2>&1 || break; sleep 0.1; done
exec 3<&-
sleep 1 # (mountpoint(1) still says yes for a moment)
cluster umount >/dev/null
abs=$(cd "$(dirname "$MNT")" && pwd -P)/$(basename "$MNT")
check '[[ -n $(basename "$MNT") ]] && ! awk -v m="$abs" '"'"'$2 == m {f = 1} END {exit !f}'"'"' /proc/mounts' "a dead mount is unmounted"
cluster mount >/dev/null
check 'cmp -s "$DATA/rw10485760" "$MNT/rw10485760"' "mounted again after a dead mount"
log "fuse_basic passed"
