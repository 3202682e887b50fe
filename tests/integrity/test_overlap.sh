#!/usr/bin/env bash
# integrity_overlap: back-to-back overlapping multi-MiB pwrites to one file, no fsync between
# them; then close, remount, compare. Later writes must win where they overlap. Exit 1 on a mismatch.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
fuse_setup
python3 - "$MNT/ov" "$DATA/ov.shadow" <<'PY'
import os, random, sys
r = random.Random(5)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
sd = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o644)
od = os.open(sys.argv[2] + ".older-wins", os.O_RDWR | os.O_CREAT, 0o644)  # each pair applied reversed
for k in range(40):
    base = r.randint(0, 200) << 20
    pair = []
    for off, size in ((base + r.randint(0, 1 << 20), r.randint(2 << 20, 3 << 20)),
                      (base + r.randint(0, 1 << 20), r.randint(2 << 20, 3 << 20))):
        d = r.randbytes(size)
        os.pwrite(fd, d, off); os.pwrite(sd, d, off)
        pair.append((off, d))
    for off, d in reversed(pair):
        os.pwrite(od, d, off)
os.close(fd); os.close(sd); os.close(od)
PY
cluster umount
cluster mount
mkdir -p "$DATA/shadow" && mv "$DATA/ov.shadow" "$DATA/shadow/ov"
if ! python3 "$INTEG/integrity.py" verify "$MNT" "$DATA/shadow"; then
  python3 - "$MNT/ov" "$DATA/shadow/ov" "$DATA/ov.shadow.older-wins" <<'PY'
import sys
m, s, o = (open(f, "rb").read() for f in sys.argv[1:])
bad = [i for i in range(0, len(s), 64) if m[i:i + 64] != s[i:i + 64]]
older = sum(1 for i in bad if m[i:i + 64] == o[i:i + 64])
print("%d differing 64-byte pieces, %d of them hold the OLDER of two overlapping writes" % (len(bad), older))
PY
  fail "overlapping writes: data differs after remount"
fi
log "integrity_overlap passed"
