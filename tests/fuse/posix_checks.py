#!/usr/bin/env python3
"""posix_checks.py MNT - first POSIX checks against a SynodFS mount (tests/fuse/test_basic.sh).

Each check asserts exact results (data, errno, attributes); the first failure raises and exits non-zero.
Fixed seed, bounded sizes (largest file 10 MiB).
"""
import ctypes
import errno
import os
import random
import stat
import sys
import time

M = sys.argv[1]
rng = random.Random(1234)
libc = ctypes.CDLL(None, use_errno=True)


def P(*names):
    return os.path.join(M, *names)


def expect_errno(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == code, f"{fn.__name__}{args}: errno {errno.errorcode.get(e.errno)} != {errno.errorcode[code]}"
        return
    raise AssertionError(f"{fn.__name__}{args}: succeeded, expected {errno.errorcode[code]}")


def renameat2(a, b, flags):
    AT_FDCWD = -100
    r = libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def check(name, fn):
    t = time.time()
    fn()
    print(f"ok {name} ({time.time() - t:.2f}s)", flush=True)


def rw_roundtrip():
    for size in (0, 1, 4095, 65536, 65537, 1 << 20, (1 << 20) + 17, 10 << 20):
        data = rng.randbytes(size)
        with open(P(f"rw{size}"), "wb") as f:
            f.write(data)
        with open(P(f"rw{size}"), "rb") as f:
            got = f.read()
        assert got == data, f"size {size}: read back differs (got {len(got)} bytes)"
        assert os.stat(P(f"rw{size}")).st_size == size
    # unaligned overwrite inside an existing file, then random-offset reads
    data = bytearray(open(P("rw1048593"), "rb").read())
    patch = rng.randbytes(100000)
    with open(P("rw1048593"), "r+b") as f:
        f.seek(300001)
        f.write(patch)
    data[300001:300001 + len(patch)] = patch
    with open(P("rw1048593"), "rb") as f:
        for _ in range(50):
            o = rng.randrange(0, len(data))
            n = rng.randrange(1, 200000)
            f.seek(o)
            assert f.read(n) == bytes(data[o:o + n]), f"pread at {o} len {n}"
    # compressible data
    text = (b"the quick brown fox jumps over the lazy dog %d\n" * 50000) % tuple(range(50000))
    with open(P("text"), "wb") as f:
        f.write(text)
    assert open(P("text"), "rb").read() == text


def dirs():
    os.mkdir(P("d1"))
    expect_errno(errno.EEXIST, os.mkdir, P("d1"))
    os.mkdir(P("d1", "sub"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, P("d1"))
    os.rmdir(P("d1", "sub"))
    os.rmdir(P("d1"))
    expect_errno(errno.ENOENT, os.stat, P("d1"))
    os.mkdir(P("many"))
    names = {f"entry-{i:04d}-{rng.randrange(1 << 30):x}" for i in range(1000)}
    for n in names:
        open(P("many", n), "w").close()
    got = set(os.listdir(P("many")))
    assert got == names, f"readdir: {len(got)} entries, {len(got ^ names)} differ"
    with os.scandir(P("many")) as it:
        seen = [e.name for e in it if e.is_file()]
    assert len(seen) == 1000
    assert len(os.listdir(P("many"))) == 1000  # a second pass (fresh handle)
    expect_errno(errno.ENAMETOOLONG, open, P("x" * 256), "w")


def rename_unlink():
    for n, d in (("ra", b"A"), ("rb", b"B")):
        with open(P(n), "wb") as f:
            f.write(d)
    os.rename(P("ra"), P("rc"))
    expect_errno(errno.ENOENT, os.stat, P("ra"))
    assert open(P("rc"), "rb").read() == b"A"
    expect_errno(errno.EEXIST, renameat2, P("rc"), P("rb"), 1)  # RENAME_NOREPLACE
    renameat2(P("rc"), P("rb"), 2)  # RENAME_EXCHANGE
    assert open(P("rc"), "rb").read() == b"B" and open(P("rb"), "rb").read() == b"A"
    os.rename(P("rc"), P("rb"))  # replace
    assert open(P("rb"), "rb").read() == b"B"
    os.mkdir(P("rd"))
    expect_errno(errno.EINVAL, os.rename, P("rd"), P("rd", "inside"))
    os.rmdir(P("rd"))
    # unlink while open: data stays readable through the open descriptor
    with open(P("ul"), "wb") as f:
        f.write(b"still here")
    fd = os.open(P("ul"), os.O_RDONLY)
    os.unlink(P("ul"))
    expect_errno(errno.ENOENT, os.stat, P("ul"))
    assert os.pread(fd, 100, 0) == b"still here"
    os.close(fd)
    os.unlink(P("rb"))


def links():
    with open(P("orig"), "wb") as f:
        f.write(b"linked")
    os.link(P("orig"), P("hard"))
    assert os.stat(P("orig")).st_nlink == 2
    assert os.stat(P("orig")).st_ino == os.stat(P("hard")).st_ino
    os.unlink(P("orig"))
    assert os.stat(P("hard")).st_nlink == 1
    assert open(P("hard"), "rb").read() == b"linked"
    os.symlink("hard", P("sym"))
    assert os.readlink(P("sym")) == "hard"
    assert stat.S_ISLNK(os.lstat(P("sym")).st_mode)
    assert open(P("sym"), "rb").read() == b"linked"
    os.symlink("/nonexistent/target", P("dangling"))
    expect_errno(errno.ENOENT, os.stat, P("dangling"))


def attrs():
    with open(P("at"), "wb") as f:
        f.write(b"x")
    os.chmod(P("at"), 0o640)
    assert stat.S_IMODE(os.stat(P("at")).st_mode) == 0o640
    os.chown(P("at"), 1234, 5678)
    st = os.stat(P("at"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(P("at"), ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(P("at"))
    assert st.st_atime_ns == 1_000_000_123 and st.st_mtime_ns == 2_000_000_456, (st.st_atime_ns, st.st_mtime_ns)
    before = time.time_ns()
    os.utime(P("at"))  # UTIME_NOW
    st = os.stat(P("at"))
    assert abs(st.st_mtime_ns - before) < 5_000_000_000, "UTIME_NOW"
    # mtime moves on write, and explicit times survive a later close
    with open(P("at"), "r+b") as f:
        f.write(b"y")
        f.flush()
        os.utime(f.fileno(), ns=(3_000_000_000, 4_000_000_000))
    assert os.stat(P("at")).st_mtime_ns == 4_000_000_000, "explicit mtime lost at close"


def truncate_sparse():
    data = rng.randbytes(300000)
    with open(P("tr"), "wb") as f:
        f.write(data)
    os.truncate(P("tr"), 1000)
    assert os.stat(P("tr")).st_size == 1000
    os.truncate(P("tr"), 200000)
    got = open(P("tr"), "rb").read()
    assert got[:1000] == data[:1000] and got[1000:] == bytes(199000), "truncate down+up must read zeros"
    with open(P("sparse"), "wb") as f:
        f.seek(70 << 20)  # a hole across a chunk boundary
        f.write(b"tail")
    assert os.stat(P("sparse")).st_size == (70 << 20) + 4
    with open(P("sparse"), "rb") as f:
        f.seek((64 << 20) - 10)
        assert f.read(20) == bytes(20)
        f.seek(70 << 20)
        assert f.read() == b"tail"
        f.seek(12345)
        assert f.read(100000) == bytes(100000)


def xattrs():
    with open(P("xa"), "wb") as f:
        f.write(b"x")
    os.setxattr(P("xa"), "user.one", b"1")
    os.setxattr(P("xa"), "user.big", b"v" * 4000)
    assert os.getxattr(P("xa"), "user.one") == b"1"
    assert os.getxattr(P("xa"), "user.big") == b"v" * 4000
    assert sorted(os.listxattr(P("xa"))) == ["user.big", "user.one"]
    expect_errno(errno.EEXIST, os.setxattr, P("xa"), "user.one", b"2", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, P("xa"), "user.none", b"2", os.XATTR_REPLACE)
    os.setxattr(P("xa"), "user.one", b"22", os.XATTR_REPLACE)
    assert os.getxattr(P("xa"), "user.one") == b"22"
    # size-0 probe and ERANGE through the raw syscall
    buf = ctypes.create_string_buffer(1)
    n = libc.getxattr(P("xa").encode(), b"user.big", None, 0)
    assert n == 4000, f"size probe gave {n}"
    r = libc.getxattr(P("xa").encode(), b"user.big", buf, 1)
    assert r == -1 and ctypes.get_errno() == errno.ERANGE, "small buffer must be ERANGE"
    n = libc.listxattr(P("xa").encode(), None, 0)
    assert n == len(b"user.big\0user.one\0"), f"list size probe gave {n}"
    os.removexattr(P("xa"), "user.one")
    expect_errno(errno.ENODATA, os.getxattr, P("xa"), "user.one")


def append_excl():
    for part in (b"abc", b"defg", b"h" * 70000):
        with open(P("app"), "ab") as f:
            f.write(part)
    assert open(P("app"), "rb").read() == b"abcdefg" + b"h" * 70000
    fd = os.open(P("excl"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    expect_errno(errno.EEXIST, os.open, P("excl"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with open(P("excl"), "wb") as f:  # O_TRUNC on an existing file
        f.write(b"z")
    with open(P("excl"), "wb") as f:
        pass
    assert os.stat(P("excl")).st_size == 0


def statfs():
    v = os.statvfs(M)
    assert v.f_blocks > 0 and v.f_bsize > 0 and v.f_namemax == 255, v


def locks():
    import fcntl
    with open(P("lk"), "wb") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(f, fcntl.LOCK_UN)
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)


for name, fn in [("rw_roundtrip", rw_roundtrip), ("dirs", dirs), ("rename_unlink", rename_unlink),
                 ("links", links), ("attrs", attrs), ("truncate_sparse", truncate_sparse), ("xattrs", xattrs),
                 ("append_excl", append_excl), ("statfs", statfs), ("locks", locks)]:
    check(name, fn)
print("all posix checks passed")
