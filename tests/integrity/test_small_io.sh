#!/usr/bin/env bash
# integrity_small_io: small O_DIRECT writes and reads through the mount (the fs benchmark's random 4 KiB
# case), checked byte for byte against a local shadow.
#   1. An 8 MiB file is written and fsync'd. chunk3 is stopped (SIGSTOP), so no chain write can complete.
#      4 threads then write 4 KiB pieces (O_DIRECT, seeded offsets, each thread in its own 64 KiB blocks):
#      a write is acknowledged once synod-mount buffers it, and small pieces wait for room in flight in a
#      queue of up to 64 (sent as batched Writes), so well over 32 writes must return while the chain is
#      stalled. (With one buffered piece and 4 Writes in flight, 5 returned.) chunk3 is resumed before any
#      chain deadline, the writers finish 600 writes and fsync.
#   2. 400 random 4 KiB O_DIRECT reads (synod-mount asks for plain bytes with a CRC) match the shadow.
#   3. One block is corrupted on disk in chunk1's copy (a byte flipped in every slot holding data): 4 KiB
#      reads of it from every replica in turn still return the right bytes (the chunkserver finds the CRC
#      mismatch, the client fails over), and chunk1 logs the mismatch.
#   4. Unmount, mount again, verify the whole file.
INTEG=$(cd "$(dirname "$0")" && pwd)
source "$INTEG/../fuse/harness.sh"
fuse_setup
F=$MNT/small.dat
SHADOW=$DATA/small.shadow
python3 - "$F" "$SHADOW" <<'EOF'
import os, random, sys
rng = random.Random(606)
data = rng.randbytes(8 << 20)
for p in sys.argv[1:]:
    with open(p, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
EOF
log "file written"

CHUNK3=$(cat "$DATA/chunk3/pid")
kill -STOP "$CHUNK3"
RESUMED=0
WRITERS=
resume() { [[ $RESUMED == 1 ]] || { kill -CONT "$CHUNK3" 2>/dev/null || true; RESUMED=1; }; }
# On any exit: chunk3 running again, the writers gone (they hold the mount busy), then the harness cleanup.
trap 'rc=$?; set +e; resume; [[ -z $WRITERS ]] || kill -9 "$WRITERS" 2>/dev/null; (exit $rc); fuse_cleanup' EXIT
python3 - "$F" "$SHADOW" "$DATA/stalled" <<'EOF' &
import mmap, os, random, sys, threading, time
path, shadow, flag = sys.argv[1:]
THREADS, PER = 4, 150
BLOCKS = (8 << 20) // 65536
done = [0] * THREADS
writes = [[] for _ in range(THREADS)]
def writer(t):
    rng = random.Random(1000 + t)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    for i in range(PER):
        b = t + THREADS * rng.randrange(BLOCKS // THREADS)
        off = b * 65536 + 4096 * rng.randrange(16)
        piece = rng.randbytes(4096)
        buf[:] = piece
        assert os.pwrite(fd, buf, off) == 4096
        writes[t].append((off, piece))
        done[t] += 1
    os.fsync(fd)
    os.close(fd)
ths = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
for th in ths:
    th.start()
time.sleep(2.5)
n = sum(done)
with open(flag, "w") as f:
    f.write(f"{n}\n")
while not os.path.exists(flag + ".go"):
    time.sleep(0.02)
for th in ths:
    th.join()
with open(shadow, "r+b") as f:  # per thread in order; threads write disjoint blocks
    for t in range(THREADS):
        for off, piece in writes[t]:
            f.seek(off)
            f.write(piece)
EOF
WRITERS=$!
for ((i = 0; i < 200; i++)); do [[ ! -s $DATA/stalled ]] || break; sleep 0.05; done
resume
touch "$DATA/stalled.go"
STALLED=$(cat "$DATA/stalled" 2>/dev/null || echo 0)
wait "$WRITERS" || fail "small writers failed"
log "writes acknowledged while chunk3 was stopped: $STALLED"
check '[[ $STALLED -ge 32 ]]' "more than 32 small writes acknowledged while the chain was stalled"

python3 - "$F" "$SHADOW" <<'EOF' || fail "small reads differ from the shadow"
import mmap, os, random, sys
path, shadow = sys.argv[1:]
ref = open(shadow, "rb").read()
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
rng = random.Random(77)
for i in range(400):
    off = 4096 * rng.randrange(len(ref) // 4096)
    assert os.preadv(fd, [buf], off) == 4096
    if buf[:] != ref[off:off + 4096]:
        sys.exit(f"read {i} at {off}: differs")
os.close(fd)
EOF
log "400 random 4 KiB reads match"

# Corrupt block 3 of the file's chunk in chunk1's copy: every slot of it that holds data.
CF=$(find "$DATA/chunk1/data" -name 'chunk_*.syc' | head -1)
check '[[ -n $CF ]]' "chunk1 holds the file's chunk"
python3 - "$CF" <<'EOF'
import sys
B, SLOT_A, REGION = 3, 128 << 10, 64 << 20
with open(sys.argv[1], "r+b") as f:
    n = 0
    for slot in (0, 1):
        at = SLOT_A + slot * REGION + B * 65536 + 1000
        f.seek(at)
        b = f.read(16)
        if any(b):
            f.seek(at)
            f.write(bytes([b[0] ^ 0x5a]))
            n += 1
    assert n >= 1, "no data in block 3"
EOF
python3 - "$F" "$SHADOW" <<'EOF' || fail "reads of the corrupted block differ"
import mmap, os, sys
path, shadow = sys.argv[1:]
ref = open(shadow, "rb").read()
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
for i in range(9):  # the client rotates replicas: every one is asked (never sequential: no read-ahead)
    off = 3 * 65536 + 4096 * (i * 7 % 16)
    assert os.preadv(fd, [buf], off) == 4096
    if buf[:] != ref[off:off + 4096]:
        sys.exit(f"read {i} at {off}: differs")
os.close(fd)
EOF
check 'grep -q "crc mismatch" "$DATA/chunk1/log"' "chunk1 found the corrupt block"
log "corrupt block detected and read from another replica"

cluster umount
cluster mount
cmp "$F" "$SHADOW" || fail "file differs after remount"
log "integrity_small_io passed"
