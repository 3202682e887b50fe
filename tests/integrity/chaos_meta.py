#!/usr/bin/env python3
"""chaos_meta.py - a seeded namespace workload checked against an in-memory model, for fault runs.

  chaos_meta.py run    ROOT MODEL --seed S --seconds T [--stop-file F] [--progress FILE]
  chaos_meta.py verify ROOT MODEL

run: one process applies random namespace operations under ROOT (created empty) until T seconds have
passed or F exists: mkdir, create with content, overwrite, append, truncate, rename of files and directories
(within and across directories, over an existing file, RENAME_NOREPLACE is not reachable from Python so
plain rename), unlink, rmdir, hard link, symlink, chmod, setxattr/removexattr. Each is applied to the mount
and to the model. The mount must never fail an operation the model says is valid: a metaserver or
chunkserver dying is a pause, retries across a failover are deduplicated, so an EEXIST on a create, an
ENOENT on a rename or unlink the model allows is an error (a retry applied twice, or a lost operation). Every
25 operations a random part of the model is read back through the mount at once (read-your-writes). The
model is written to MODEL (JSON) at the end; exit 1 on the first mismatch, with the operation and seed.

verify: the tree under ROOT (typically through a fresh mount) equals MODEL exactly: the set of paths, each
one's type, permission bits, file contents, symlink targets, xattrs, link counts, and which paths are hard
links of one file.
"""
import argparse
import errno
import json
import os
import random
import stat
import sys
import time

XATTR = "user.chaos"


class Fail(Exception):
    pass


class Model:
    """paths -> ('d', mode) | ('l', target) | ('f', file id); files: id -> {data, mode, xattr}"""

    def __init__(self):
        self.paths = {"": ("d", 0o755)}
        self.files = {}
        self.next_id = 1

    def dirs(self):
        return [p for p, v in self.paths.items() if v[0] == "d"]

    def of_type(self, t):
        return [p for p, v in self.paths.items() if v[0] == t]

    def children(self, d):
        pre = d + "/" if d else ""
        return [p for p in self.paths if p and p.startswith(pre) and "/" not in p[len(pre):]]

    def subtree(self, d):
        pre = d + "/"
        return [p for p in self.paths if p == d or p.startswith(pre)]

    def nlink(self, fid):
        return sum(1 for v in self.paths.values() if v == ("f", fid))

    def drop_path(self, p):
        v = self.paths.pop(p)
        if v[0] == "f" and self.nlink(v[1]) == 0:
            del self.files[v[1]]

    def dump(self):
        return {"paths": {p: list(v) for p, v in self.paths.items()},
                "files": {str(k): {"data": v["data"].hex(), "mode": v["mode"], "xattr": v["xattr"]}
                          for k, v in self.files.items()}}

    @staticmethod
    def load(d):
        m = Model()
        m.paths = {p: tuple(v) for p, v in d["paths"].items()}
        m.files = {int(k): {"data": bytes.fromhex(v["data"]), "mode": v["mode"], "xattr": v["xattr"]}
                   for k, v in d["files"].items()}
        return m


def join(root, p):
    return os.path.join(root, p) if p else root


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data, flags):
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def check_path(root, m, p, what):
    """p as the mount shows it equals the model (no directory listing: see check_dir)."""
    full = join(root, p)
    v = m.paths[p]
    st = os.lstat(full)
    if v[0] == "d":
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != v[1]:
            raise Fail(f"{what}: {p!r} should be a directory mode {v[1]:o}, is {st.st_mode:o}")
    elif v[0] == "l":
        if not stat.S_ISLNK(st.st_mode) or os.readlink(full) != v[1]:
            raise Fail(f"{what}: {p!r} should be a symlink to {v[1]!r}")
    else:
        f = m.files[v[1]]
        if not stat.S_ISREG(st.st_mode):
            raise Fail(f"{what}: {p!r} should be a regular file, mode {st.st_mode:o}")
        if stat.S_IMODE(st.st_mode) != f["mode"]:
            raise Fail(f"{what}: {p!r} mode {stat.S_IMODE(st.st_mode):o}, model {f['mode']:o}")
        if st.st_nlink != m.nlink(v[1]):
            raise Fail(f"{what}: {p!r} has {st.st_nlink} links, model {m.nlink(v[1])}")
        got = read_all(full)
        if got != f["data"]:
            first = next((i for i in range(min(len(got), len(f["data"]))) if got[i] != f["data"][i]),
                         min(len(got), len(f["data"])))
            raise Fail(f"{what}: {p!r} content differs: {len(got)} bytes, model {len(f['data'])}, "
                       f"first difference at {first}")
        try:
            xa = os.getxattr(full, XATTR).decode()
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
            xa = None
        if xa != f["xattr"]:
            raise Fail(f"{what}: {p!r} xattr {xa!r}, model {f['xattr']!r}")


def check_dir(root, m, d, what):
    got = sorted(os.listdir(join(root, d)))
    want = sorted(os.path.basename(p) for p in m.children(d))
    if got != want:
        raise Fail(f"{what}: directory {d!r} lists {sorted(set(got) - set(want))} too many, "
                   f"{sorted(set(want) - set(got))} missing")


def note_progress(path, ops):
    with open(path + ".tmp", "w") as pf:
        pf.write(f"{ops}\n")
    os.rename(path + ".tmp", path)  # readers never see a half-written file


def cmd_run(a):
    rng = random.Random(a.seed)
    root = a.root
    os.makedirs(root)
    m = Model()
    t_end = time.monotonic() + a.seconds
    ops = 0
    counts = {}
    last = ""

    def name():
        return "n%04d" % rng.randrange(10000)

    def free_name(d):
        while True:
            p = (d + "/" if d else "") + name()
            if p not in m.paths:
                return p

    def content():
        x = rng.random()
        n = 0 if x < 0.1 else rng.randint(1, 4096) if x < 0.7 else rng.randint(4097, 200 * 1024)
        return rng.randbytes(n)

    while time.monotonic() < t_end and not (a.stop_file and os.path.exists(a.stop_file)):
        kind = rng.choices(["mkdir", "create", "overwrite", "append", "truncate", "rename_file", "rename_dir",
                            "unlink", "rmdir", "link", "symlink", "chmod", "xattr"],
                           [6, 14, 5, 5, 4, 8, 3, 8, 3, 3, 3, 3, 3])[0]
        dirs = m.dirs()
        files = m.of_type("f")
        links = m.of_type("l")
        try:
            if kind == "mkdir":
                d = rng.choice([x for x in dirs if x.count("/") < 3])
                p = free_name(d)
                last = f"mkdir {p}"
                os.mkdir(join(root, p), 0o755)
                m.paths[p] = ("d", 0o755)
            elif kind == "create":
                p = free_name(rng.choice(dirs))
                data = content()
                last = f"create {p} ({len(data)} bytes)"
                write_file(join(root, p), data, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                m.files[m.next_id] = {"data": data, "mode": 0o644, "xattr": None}
                m.paths[p] = ("f", m.next_id)
                m.next_id += 1
            elif kind in ("overwrite", "append", "truncate") and files:
                p = rng.choice(files)
                f = m.files[m.paths[p][1]]
                if not f["mode"] & 0o200:
                    continue  # read-only file (chmod): root would still write; keep the model simple
                if kind == "overwrite":
                    data = content()
                    last = f"overwrite {p} ({len(data)} bytes, O_TRUNC)"
                    write_file(join(root, p), data, os.O_WRONLY | os.O_TRUNC)
                    f["data"] = data
                elif kind == "append":
                    data = content()
                    last = f"append {p} ({len(data)} bytes)"
                    write_file(join(root, p), data, os.O_WRONLY | os.O_APPEND)
                    f["data"] += data
                else:
                    n = rng.randint(0, len(f["data"]) + 70000)
                    last = f"truncate {p} to {n}"
                    os.truncate(join(root, p), n)
                    f["data"] = f["data"][:n] + bytes(max(0, n - len(f["data"])))
            elif kind == "rename_file" and files + links:
                src = rng.choice(files + links)
                if rng.random() < 0.3 and files:
                    dst = rng.choice(files)  # over an existing file
                    if dst == src:
                        continue
                else:
                    dst = free_name(rng.choice(dirs))
                last = f"rename {src} -> {dst}"
                os.rename(join(root, src), join(root, dst))
                if dst in m.paths and m.paths[dst] == m.paths[src]:
                    pass  # two links of one file: rename does nothing
                else:
                    if dst in m.paths:
                        m.drop_path(dst)
                    m.paths[dst] = m.paths.pop(src)
            elif kind == "rename_dir" and len(dirs) > 1:
                src = rng.choice([x for x in dirs if x])
                targets = [x for x in dirs if x != src and not x.startswith(src + "/")
                           and x.count("/") + src.count("/") < 5]
                if not targets:
                    continue
                dst = free_name(rng.choice(targets))
                last = f"rename dir {src} -> {dst}"
                os.rename(join(root, src), join(root, dst))
                for p in sorted(m.subtree(src)):
                    m.paths[dst + p[len(src):]] = m.paths.pop(p)
            elif kind == "unlink" and files + links:
                p = rng.choice(files + links)
                last = f"unlink {p}"
                os.unlink(join(root, p))
                m.drop_path(p)
            elif kind == "rmdir":
                empty = [x for x in dirs if x and not m.children(x)]
                if not empty:
                    continue
                p = rng.choice(empty)
                last = f"rmdir {p}"
                os.rmdir(join(root, p))
                del m.paths[p]
            elif kind == "link" and files:
                src = rng.choice(files)
                dst = free_name(rng.choice(dirs))
                last = f"link {src} -> {dst}"
                os.link(join(root, src), join(root, dst))
                m.paths[dst] = m.paths[src]
            elif kind == "symlink":
                p = free_name(rng.choice(dirs))
                target = "t/" + name() * rng.randint(1, 8)
                last = f"symlink {p} -> {target}"
                os.symlink(target, join(root, p))
                m.paths[p] = ("l", target)
            elif kind == "chmod" and files:
                p = rng.choice(files)
                mode = rng.choice([0o644, 0o600, 0o640, 0o755, 0o444])
                last = f"chmod {p} {mode:o}"
                os.chmod(join(root, p), mode)
                m.files[m.paths[p][1]]["mode"] = mode
            elif kind == "xattr" and files:
                p = rng.choice(files)
                f = m.files[m.paths[p][1]]
                if f["xattr"] is not None and rng.random() < 0.3:
                    last = f"removexattr {p}"
                    os.removexattr(join(root, p), XATTR)
                    f["xattr"] = None
                else:
                    v = name()
                    last = f"setxattr {p} {v}"
                    os.setxattr(join(root, p), XATTR, v.encode())
                    f["xattr"] = v
            else:
                continue
            ops += 1
            counts[kind] = counts.get(kind, 0) + 1
            if ops % 25 == 0:
                last = "read back"
                for p in rng.sample(sorted(m.paths), min(8, len(m.paths))):
                    check_path(root, m, p, f"op {ops} read back")
                check_dir(root, m, rng.choice(m.dirs()), f"op {ops} read back")
            if a.progress and ops % 10 == 0:
                note_progress(a.progress, ops)
        except (OSError, Fail) as e:
            with open(a.model, "w") as mf:
                json.dump(m.dump(), mf)
            sys.exit(f"chaos_meta: op {ops + 1} ({last}) failed: {e} (seed {a.seed})")
    with open(a.model, "w") as mf:
        json.dump(m.dump(), mf)
    if a.progress:
        note_progress(a.progress, ops)
    print(f"chaos_meta: {ops} operations, {len(m.paths)} paths, {len(m.files)} files: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def cmd_verify(a):
    with open(a.model) as mf:
        m = Model.load(json.load(mf))
    root = a.root
    try:
        seen = set()
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            for n in dirnames + filenames:
                seen.add(os.path.join(rel, n) if rel else n)
        seen.add("")
        extra, missing = sorted(seen - set(m.paths)), sorted(set(m.paths) - seen)
        if extra or missing:
            raise Fail(f"tree differs: {len(extra)} paths too many {extra[:5]}, "
                       f"{len(missing)} missing {missing[:5]}")
        inos = {}
        for p in sorted(m.paths):
            check_path(root, m, p, "verify")
            v = m.paths[p]
            if v[0] == "f":
                ino = os.lstat(join(root, p)).st_ino
                if inos.setdefault(v[1], ino) != ino:
                    raise Fail(f"verify: {p!r} should be a hard link of inode {inos[v[1]]}, is {ino}")
        if len(set(inos.values())) != len(inos):
            raise Fail("verify: two model files share an inode")
    except (OSError, Fail) as e:
        sys.exit(f"chaos_meta verify: {e}")
    print(f"chaos_meta verify: {len(m.paths)} paths, {len(m.files)} files equal the model")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("root")
    r.add_argument("model")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--seconds", type=float, default=60)
    r.add_argument("--stop-file")
    r.add_argument("--progress")
    v = sub.add_parser("verify")
    v.add_argument("root")
    v.add_argument("model")
    a = ap.parse_args()
    (cmd_run if a.cmd == "run" else cmd_verify)(a)


if __name__ == "__main__":
    main()
