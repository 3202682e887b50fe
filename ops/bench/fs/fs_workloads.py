#!/usr/bin/env python3
"""ops/bench/fs/fs_workloads.py: the workloads of the file system benchmark (driven by ops/bench/fs/run).

    fs_workloads.py run --target NAME=DIR [--target ...] [options] --json OUT
    fs_workloads.py table OUT.json [OUT2.json ...]

`run` measures every workload on every target, workload by workload (each workload runs on all targets
one after the other, so the figures compared in one row are taken minutes apart at most on a shared, noisy
machine). The targets are plain directories: a SynodFS mount, a MooseFS mount, a local directory. Nothing
here knows which is which except for labels. With --pids NAME=PID,... the CPU time (user + system, from
/proc/PID/stat) that those daemons spent during each workload is reported in a second table, and with
--perf-dir they are recorded with `perf record -g` (one file per target and workload).

Workloads (all through the kernel VFS, the same options on every target). fio writes incompressible data
(--refill_buffers) unless --data fio: fio's default buffers compress to ~92% with zstd -1, which makes a
compressing file system (SynodFS) spend CPU on every block for little gain; MooseFS does not compress.
  seq_write    fio, 1 file of --size, 1 MiB writes, psync, end_fsync=1 (MB/s, fsync time included)
  seq_read     the same file after dropping the page cache (sync; echo 3 > drop_caches), 1 MiB reads
  seq_reread   read it once more untimed, then again timed, each a new open without dropping the cache
               (fio --invalidate=0): shows whether the page cache survives an open of an unchanged file.
               The untimed read is there because the targets run each workload in turn, so the next
               target's seq_read (which drops every cache) ran between this target's read and re-read
  rand_read    fio, 4 KiB random reads, O_DIRECT, psync, 4 jobs x iodepth 1 on the first --rand-size
               bytes of that file, --runtime seconds (IOPS, all jobs together)
  rand_write   the same with random 4 KiB O_DIRECT writes (no fsync: what "written" means is each
               system's own: local = the disk cache, MooseFS = 3 chunkservers' page cache)
  par_write    fio, 4 jobs each writing its own file of --par-size in 1 MiB writes, end_fsync=1
               (aggregate MB/s)
  meta_*       python, --files empty files in one directory: create (open O_CREAT|O_EXCL + close),
               stat (after dropping caches), rename (same directory), unlink (ops/s for each phase)
  small_*      python, --small files of 4..64 KiB (random sizes and contents, fixed seed): write
               (open, write, close) and read back after dropping caches, checking every byte (files/s)
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

MB = 1_000_000
MiB = 1 << 20

# (key, label, unit) in table order
ROWS = [
    ("seq_write", "seq write {size} 1M blocks, end_fsync", "MB/s"),
    ("seq_read", "seq read {size} (page cache dropped)", "MB/s"),
    ("seq_reread", "seq re-read, new open, cache not dropped", "MB/s"),
    ("par_write", "parallel write {par_jobs} x {par_size}, end_fsync", "MB/s"),
    ("rand_read", "rand read 4K O_DIRECT {rand_jobs}j x qd1, {rand_size}", "IOPS"),
    ("rand_write", "rand write 4K O_DIRECT {rand_jobs}j x qd1, {rand_size}", "IOPS"),
    ("meta_create", "create {files} empty files", "ops/s"),
    ("meta_stat", "stat {files} files (caches dropped)", "ops/s"),
    ("meta_rename", "rename {files} files", "ops/s"),
    ("meta_unlink", "unlink {files} files", "ops/s"),
    ("small_write", "write {small} files 4-64K", "files/s"),
    ("small_read", "read back {small} files 4-64K (caches dropped)", "files/s"),
]


def human(n):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def drop_caches():
    """Write back dirty pages, then drop the page cache, dentries and inodes (needs root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"warning: cannot drop caches: {e}")
        return False


def cpu_seconds(pids):
    """User + system CPU seconds used so far by these processes (those that still exist)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


class Perf:
    """Optional `perf record -g` of a target's daemons while one workload runs on that target."""

    def __init__(self, outdir):
        self.outdir, self.proc = outdir, None

    def start(self, target, name, pids):
        if not self.outdir or not pids or not shutil.which("perf"):
            return
        os.makedirs(self.outdir, exist_ok=True)
        out = os.path.join(self.outdir, f"{target}-{name}.perf.data")
        self.proc = subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-p", ",".join(pids), "-o", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


CHILD = []  # running fio, killed on the way out
PERF_PROCS = []  # the Perf recorder, stopped on the way out


def fio(args, cwd):
    """Run fio with JSON output; return the parsed report. Raises on failure."""
    cmd = ["fio", "--output-format=json", "--ioengine=psync", "--group_reporting"] + args
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    CHILD.append(p)
    out, err = p.communicate()
    CHILD.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"fio failed ({p.returncode}): {err.strip()[-400:]}")
    j = json.loads(out[out.index("{"):])  # fio may print notes before the JSON
    return j["jobs"][0]


def wdata(o):
    """fio options for the written data (see --data)."""
    return ["--refill_buffers=1"] if o.data == "random" else []


def w_seq_write(d, o):
    j = fio(wdata(o) + ["--name=seqwrite", f"--filename={d}/seq.dat", "--rw=write", "--bs=1M", f"--size={o.size}",
             "--end_fsync=1"], d)
    return j["write"]["bw_bytes"] / MB


def w_seq_read(d, o):
    drop_caches()
    j = fio(["--name=seqread", f"--filename={d}/seq.dat", "--rw=read", "--bs=1M", f"--size={o.size}"], d)
    return j["read"]["bw_bytes"] / MB


def w_seq_reread(d, o):
    # --invalidate=0: by default fio drops the file's cached pages itself before starting. The first read
    # fills the cache again (another target's seq_read dropped every cache since this one's).
    fio(["--name=seqreread-fill", f"--filename={d}/seq.dat", "--rw=read", "--bs=1M", f"--size={o.size}",
         "--invalidate=0"], d)
    j = fio(["--name=seqreread", f"--filename={d}/seq.dat", "--rw=read", "--bs=1M", f"--size={o.size}",
             "--invalidate=0"], d)
    return j["read"]["bw_bytes"] / MB


def rand(d, o, rw):
    drop_caches()
    j = fio(wdata(o) + [f"--name=rand{rw}", f"--filename={d}/seq.dat", f"--rw=rand{rw}", "--bs=4k", "--direct=1",
             f"--size={o.rand_size}", f"--numjobs={o.rand_jobs}", "--iodepth=1", "--time_based",
             f"--runtime={o.runtime}", "--ramp_time=2", "--randrepeat=1", "--norandommap"], d)
    return j[rw]["iops"]


def w_rand_read(d, o):
    return rand(d, o, "read")


def w_rand_write(d, o):
    r = rand(d, o, "write")
    os.unlink(f"{d}/seq.dat")
    return r


def w_par_write(d, o):
    os.makedirs(f"{d}/par", exist_ok=True)
    j = fio(wdata(o) + ["--name=parwrite", f"--directory={d}/par", "--rw=write", "--bs=1M", f"--size={o.par_size}",
             f"--numjobs={o.par_jobs}", "--end_fsync=1"], d)
    shutil.rmtree(f"{d}/par")
    return j["write"]["bw_bytes"] / MB


def timed(fn, n):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def w_meta(d, o):
    base = f"{d}/meta"
    os.makedirs(base)
    names = [f"{base}/f{i:06d}" for i in range(o.files)]
    renamed = [f"{base}/r{i:06d}" for i in range(o.files)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY

    def create():
        for p in names:
            os.close(os.open(p, flags, 0o644))

    def stat():
        for p in names:
            os.stat(p)

    def rename():
        for a, b in zip(names, renamed):
            os.rename(a, b)

    def unlink():
        for p in renamed:
            os.unlink(p)

    def phase(name, fn):
        try:
            return timed(fn, o.files)
        except OSError as e:
            raise RuntimeError(f"{name} phase: {e}") from e

    r = {"meta_create": phase("create", create)}
    drop_caches()
    r["meta_stat"] = phase("stat", stat)
    r["meta_rename"] = phase("rename", rename)
    r["meta_unlink"] = phase("unlink", unlink)
    os.rmdir(base)
    return r


def small_data(seed, i):
    rng = random.Random(seed * 1_000_003 + i)
    return rng.randbytes(rng.randint(4 << 10, 64 << 10))


def w_small(d, o):
    base = f"{d}/small"
    os.makedirs(base)
    data = [small_data(o.seed, i) for i in range(o.small)]  # ~170 MB for 5k files: fine at 24 GiB
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    bad = []

    def write():
        for i, b in enumerate(data):
            try:
                fd = os.open(f"{base}/s{i:06d}", flags, 0o644)
                try:
                    if os.write(fd, b) != len(b):
                        raise RuntimeError("short write")
                finally:
                    os.close(fd)
            except OSError as e:
                raise RuntimeError(f"write phase, file s{i:06d} ({len(b)} bytes, #{i + 1}): {e}") from e

    def read():
        for i, b in enumerate(data):
            got = b""
            try:
                fd = os.open(f"{base}/s{i:06d}", os.O_RDONLY)
                try:
                    while True:
                        c = os.read(fd, 128 << 10)
                        if not c:
                            break
                        got += c
                finally:
                    os.close(fd)
            except OSError as e:
                raise RuntimeError(f"read phase, file s{i:06d} (#{i + 1}): {e}") from e
            if got != b:
                bad.append(i)

    r = {"small_write": timed(write, o.small)}
    drop_caches()
    r["small_read"] = timed(read, o.small)
    if bad:
        raise RuntimeError(f"{len(bad)} small files read back wrong (first: s{bad[0]:06d})")
    try:
        shutil.rmtree(base)
    except OSError as e:
        raise RuntimeError(f"removing the small files: {e}") from e
    r["small_bytes"] = sum(len(b) for b in data)
    return r


WORKLOADS = [
    ("seq_write", w_seq_write),
    ("seq_read", w_seq_read),
    ("seq_reread", w_seq_reread),
    ("rand_read", w_rand_read),
    ("rand_write", w_rand_write),
    ("par_write", w_par_write),
    ("meta", w_meta),
    ("small", w_small),
]


def cmd_run(o):
    targets = [t.split("=", 1) for t in o.target]
    res = {"params": {k: getattr(o, k) for k in ("size", "par_jobs", "par_size", "rand_jobs", "rand_size",
                                                    "runtime", "files", "small", "seed", "data")},
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": {n: {} for n, _ in targets},
           "errors": {n: {} for n, _ in targets}, "uptime": open("/proc/loadavg").read().split()[:3]}
    if o.only_workloads:
        keep = set(o.only_workloads.split(","))
    else:
        keep = None
    pids = {}
    for spec in o.pids or []:
        name, lst = spec.split("=", 1)
        pids[name] = [p for p in lst.split(",") if p]
    res["cpu"] = {n: {} for n, _ in targets}
    perf = Perf(o.perf_dir)
    PERF_PROCS.append(perf)
    for wname, fn in WORKLOADS:
        if keep and wname not in keep:
            continue
        for tname, d in targets:
            log(f"{wname} on {tname} ({d})")
            perf.start(tname, wname, pids.get(tname))
            c0 = cpu_seconds(pids.get(tname, []))
            t0 = time.time()
            try:
                r = fn(d, o)
            except Exception as e:  # record and go on: one broken figure must not lose the others
                log(f"error: {wname} on {tname}: {e}")
                res["errors"][tname][wname] = str(e)
                r = None
            finally:
                perf.stop()
            if pids.get(tname):
                res["cpu"][tname][wname] = cpu_seconds(pids[tname]) - c0
            if isinstance(r, dict):
                res["results"][tname].update(r)
            elif r is not None:
                res["results"][tname][wname] = r
            shown = r if not isinstance(r, dict) else {k: round(v) for k, v in r.items()}
            log(f"  -> {shown if not isinstance(shown, float) else round(shown, 1)} ({time.time() - t0:.0f} s)")
            with open(o.json, "w") as f:
                json.dump(res, f, indent=1)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with open(o.json, "w") as f:
        json.dump(res, f, indent=1)
    print_table(res)
    if any(res["errors"].values()):
        sys.exit(3)


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def print_table(res):
    p = res["params"]
    sub = {"size": human(p["size"]), "par_jobs": p["par_jobs"], "par_size": human(p["par_size"]),
           "rand_jobs": p["rand_jobs"], "rand_size": human(p["rand_size"]), "files": p["files"],
           "small": p["small"]}
    r = res["results"]
    names = ["synodfs", "moosefs", "local"]
    w = 50
    data = {"random": "incompressible (fio refill_buffers)", "fio": "fio default buffers (zstd -1: ~92%)"}
    print(f"\nfile system benchmark, started {res['started']}, load average at start {' '.join(res['uptime'])}, "
          f"fio data: {data.get(p.get('data', 'fio'))}")
    print(f"{'workload':<{w}} {'unit':>7} {'SynodFS':>9} {'MooseFS':>9} {'local':>9} {'S/MooseFS':>9} {'S/local':>8}")
    print("-" * (w + 7 + 9 * 4 + 8 + 6))
    for key, label, unit in ROWS:
        v = [r.get(n, {}).get(key) for n in names]
        if all(x is None for x in v):
            continue
        print(f"{label.format(**sub):<{w}} {unit:>7} {fmt(v[0]):>9} {fmt(v[1]):>9} {fmt(v[2]):>9} "
              f"{ratio(v[0], v[1]):>9} {ratio(v[0], v[2]):>8}")
    cpu = res.get("cpu", {})
    if any(cpu.get(n) for n in names):
        wl = [w for w, _ in WORKLOADS if any(w in cpu.get(n, {}) for n in names)]
        print(f"\ndaemon CPU seconds per workload (user + system of the file system's own processes; the client")
        print(f"process and the kernel's share on its behalf are not included; local has no daemons)")
        print(f"{'workload':<{w}} {'':>7} {'SynodFS':>9} {'MooseFS':>9} {'':>9} {'S/MooseFS':>9}")
        for k in wl:
            v = [cpu.get(n, {}).get(k) for n in names]
            print(f"{k:<{w}} {'CPU-s':>7} {fmt(v[0]):>9} {fmt(v[1]):>9} {'':>9} {ratio(v[0], v[1]):>9}")
    for n, errs in res.get("errors", {}).items():
        for k, e in errs.items():
            print(f"error: {n} {k}: {e}")
    print()


def cmd_table(o):
    for path in o.json_files:
        with open(path) as f:
            print_table(json.load(f))


def size_arg(s):
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "KMG" else s) * mult)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("run")
    r.add_argument("--target", action="append", required=True, help="NAME=DIR (synodfs, moosefs, local)")
    r.add_argument("--size", type=size_arg, default=1 << 30)
    r.add_argument("--par-jobs", type=int, default=4)
    r.add_argument("--par-size", type=size_arg, default=256 * MiB)
    r.add_argument("--rand-jobs", type=int, default=4)
    r.add_argument("--rand-size", type=size_arg, default=256 * MiB)
    r.add_argument("--runtime", type=int, default=20)
    r.add_argument("--files", type=int, default=10000)
    r.add_argument("--small", type=int, default=5000)
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--data", choices=("random", "fio"), default="random",
                   help="fio write data: random = refill_buffers (incompressible), fio = fio's default buffers")
    r.add_argument("--only-workloads", help="comma list of: " + ",".join(n for n, _ in WORKLOADS))
    r.add_argument("--pids", action="append", help="NAME=PID,PID...: daemons of target NAME (CPU time, perf)")
    r.add_argument("--perf-dir", help="perf record each target's --pids during each workload into this directory")
    r.add_argument("--json", required=True)
    t = sp.add_parser("table")
    t.add_argument("json_files", nargs="+")
    o = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops fio and perf
    if o.cmd == "run":
        o.rand_size = min(o.rand_size, o.size)
        try:
            cmd_run(o)
        finally:
            for p in CHILD:
                p.kill()
                p.wait()
            PERF_PROCS and PERF_PROCS[0].stop()
    else:
        cmd_table(o)


if __name__ == "__main__":
    main()
