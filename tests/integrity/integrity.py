#!/usr/bin/env python3
"""integrity.py - seeded random writer and byte-for-byte verifier for a SynodFS mount.

  integrity.py write  MNT SHADOW [--seed S] [--procs N] [--ops K] [--progress DIR]
  integrity.py verify MNT SHADOW

write: N processes; process p owns files f<p>_sparse (offsets up to ~160 MiB, so the 64 MiB chunk
boundaries are crossed without writing that much) and f<p>_dense (offsets up to 8 MiB, much overwriting).
Each of K operations pwrite()s 1 byte .. 3 MiB of seeded random bytes at a random offset (a third of them
aimed across a 64 KiB block or 64 MiB chunk boundary) to the mount AND to a local sparse shadow copy in
SHADOW. fsync at random points; now and then a region just written is read back and compared at once.
Content is deterministic: random.Random(seed*1000+p). Progress (ops done) goes to DIR/p if --progress.
Some files are closed without a final fsync (close + unmount must persist them too). With --gate-at N
--gate-file F every writer waits before its op N until F exists (lets a test act at a known point).
DIR/ops.<p> records every write (p, op, file, offset, size, end, fsync/readback) for verify --oplog.

verify: for every shadow file, the mounted file has the same size and the same bytes everywhere (holes
must read as zeros). Reports the first differing ranges precisely. Exit 0 = all equal, 1 = mismatch.
"""
import argparse
import os
import random
import sys

KiB = 1 << 10
MiB = 1 << 20
BLOCK = 64 * KiB
CHUNK = 64 * MiB


def pick_size(r):
    x = r.random()
    if x < 0.25:
        return r.randint(1, 512)
    if x < 0.6:
        return r.randint(513, 256 * KiB)
    if x < 0.9:
        return r.randint(256 * KiB, 1 * MiB)
    return r.randint(1 * MiB, 3 * MiB)


def pick_offset(r, limit, size):
    x = r.random()
    if x < 0.15 and limit > CHUNK:  # straddle a chunk boundary
        b = CHUNK * r.randint(1, limit // CHUNK)
        off = b - r.randint(1, max(1, min(size, 2 * MiB)))
    elif x < 0.35:  # straddle a block boundary
        b = BLOCK * r.randint(1, limit // BLOCK)
        off = b - r.randint(1, max(1, min(size, BLOCK)))
    else:
        off = r.randint(0, limit)
    return max(0, off)


def wait_gate(path, timeout=150):
    import time
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > timeout:
            sys.exit("gate %s did not open in %d s" % (path, timeout))
        time.sleep(0.05)


def writer(mnt, shadow, seed, p, ops, progress, gate_at=-1, gate_file=None):
    r = random.Random(seed * 1000 + p)
    files = {}
    for kind, limit in (("sparse", 160 * MiB), ("dense", 8 * MiB)):
        name = "f%d_%s" % (p, kind)
        fd = os.open(os.path.join(mnt, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        sd = os.open(os.path.join(shadow, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        files[name] = (fd, sd, limit)
    names = sorted(files)
    oplog = open(os.path.join(progress, "ops.%d" % p), "w") if progress else None
    for i in range(ops):
        if i == gate_at and gate_file:
            wait_gate(gate_file)
        name = r.choice(names)
        fd, sd, limit = files[name]
        size = pick_size(r)
        off = pick_offset(r, limit, size)
        data = r.randbytes(size)
        n = os.pwrite(fd, data, off)
        if n != size:
            sys.exit("%s: short write %d of %d at %d" % (name, n, size, off))
        os.pwrite(sd, data, off)
        x = r.random()
        if oplog:
            oplog.write("%d %d %s %d %d %d %s\n" % (p, i, name, off, size, off + size,
                        "fsync" if x < 0.2 else ("readback" if x < 0.3 else "-")))
            oplog.flush()
        if x < 0.2:
            os.fsync(fd)
        elif x < 0.3:  # read back what was just written
            got = os.pread(fd, size, off)
            if got != data:
                sys.exit("%s: immediate read-back of [%d, %d) differs (got %d bytes)" % (name, off, off + size, len(got)))
        if progress:
            tmp = os.path.join(progress, ".n.%d" % p)
            with open(tmp, "w") as f:
                f.write("%d\n" % (i + 1))
            os.rename(tmp, os.path.join(progress, "n.%d" % p))
    for name in names:
        fd, sd, _ = files[name]
        if r.random() < 0.5:
            os.fsync(fd)
        os.close(fd)
        os.close(sd)


def cmd_write(a):
    os.makedirs(a.shadow, exist_ok=True)
    if a.progress:
        os.makedirs(a.progress, exist_ok=True)
    pids = []
    for p in range(a.procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                writer(a.mnt, a.shadow, a.seed, p, a.ops, a.progress, a.gate_at, a.gate_file)
            except SystemExit as e:
                print("writer %d: %s" % (p, e), file=sys.stderr)
                code = 1
            except BaseException as e:  # noqa: BLE001 - report and fail the child
                print("writer %d: %r" % (p, e), file=sys.stderr)
                code = 1
            if code and a.progress:
                open(os.path.join(a.progress, "failed"), "w").close()
            os._exit(code)
        pids.append(pid)
    bad = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        if not (os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0):
            bad += 1
    if bad:
        sys.exit("write: %d writer process(es) failed" % bad)
    total = sum(os.stat(os.path.join(a.shadow, f)).st_blocks * 512 for f in os.listdir(a.shadow))
    print("write: %d procs x %d ops done, %.1f MiB of data in shadow" % (a.procs, a.ops, total / MiB))


def diff_ranges(got, want, base, limit=4):
    out = []
    i, n = 0, min(len(got), len(want))
    while i < n and len(out) < limit:
        if got[i] != want[i]:
            j = i
            while j < n and got[j] != want[j]:
                j += 1
            seg = got[i:j]
            what = "zeros" if seg.count(0) == len(seg) else "other bytes"
            out.append("[%d, %d) (%d bytes, mount has %s)" % (base + i, base + j, j - i, what))
            i = j
        else:
            i += 1
    return out


def first_last_diff(got, want):
    n = min(len(got), len(want))
    i = 0
    while i < n and got[i] == want[i]:
        i += 1
    j = max(len(got), len(want))
    while j > i and j <= n and got[j - 1] == want[j - 1]:
        j -= 1
    return i, j


def overlapping_ops(oplog_dir, name, lo, hi):
    out = []
    if not oplog_dir:
        return out
    for f in sorted(os.listdir(oplog_dir)):
        if not f.startswith("ops."):
            continue
        for line in open(os.path.join(oplog_dir, f)):
            p, i, fname, off, size, end, how = line.split()
            if fname == name and int(off) < hi and int(end) > lo:
                out.append("op %s.%s [%s, %s) %s" % (p, i, off, end, how))
    return out


def cmd_verify(a):
    names = sorted(f for f in os.listdir(a.shadow))
    bad = 0
    total = 0
    for name in names:
        sp, mp = os.path.join(a.shadow, name), os.path.join(a.mnt, name)
        try:
            msize = os.stat(mp).st_size
        except OSError as e:
            print("MISMATCH %s: %s" % (name, e))
            bad += 1
            continue
        ssize = os.stat(sp).st_size
        if msize != ssize:
            print("MISMATCH %s: size %d, expected %d" % (name, msize, ssize))
            bad += 1
        errs, lo, hi = [], None, None
        with open(sp, "rb") as s, open(mp, "rb") as m:
            off = 0
            while True:
                want = s.read(4 * MiB)
                got = m.read(4 * MiB)
                if want != got:
                    if len(got) != len(want):
                        errs.append("read %d bytes at %d, expected %d" % (len(got), off, len(want)))
                    if len(errs) < 8:
                        errs += diff_ranges(got, want, off, 8 - len(errs))
                    i, j = first_last_diff(got, want)
                    lo = off + i if lo is None else lo
                    hi = off + j
                if not want:
                    break
                total += len(want)
                off += len(want)
        if errs:
            bad += 1
            print("MISMATCH %s (size %d): differs within [%d, %d); first ranges: %s" % (name, ssize, lo, hi, "; ".join(errs[:8])))
            for o in overlapping_ops(a.oplog, name, lo, hi):
                print("    " + o)
    print("verify: %d files, %.1f MiB compared, %d bad" % (len(names), total / MiB, bad))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("mnt")
    w.add_argument("shadow")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--procs", type=int, default=4)
    w.add_argument("--ops", type=int, default=30)
    w.add_argument("--progress")
    w.add_argument("--gate-at", type=int, default=-1, help="before op N each writer waits for --gate-file")
    w.add_argument("--gate-file")
    v = sub.add_parser("verify")
    v.add_argument("mnt")
    v.add_argument("shadow")
    v.add_argument("--oplog", help="the --progress DIR of the write: list the writes overlapping a mismatch")
    a = ap.parse_args()
    if a.cmd == "write":
        cmd_write(a)
        return 0
    return cmd_verify(a)


if __name__ == "__main__":
    sys.exit(main())
