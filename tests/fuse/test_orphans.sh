#!/usr/bin/env bash
# fuse_orphans: unlink while open with memory opens (the leader holds opens in memory, not in the log).
# A file open through a second mount and unlinked through the first keeps its data (its chunk stays in
# the table) across a kill -9 of the leader: the new leader purges nothing until every session has
# reported its open files. Once the reader closes it, the leader purges it (the chunk table empties); a file
# unlinked with nobody holding it goes at once. Also: a small file read back opens and closes without a
# log entry (the leader's applied index does not move).
source "$(dirname "$0")/harness.sh"
fuse_setup
M2=$DATA/mnt2
mount_extra "$M2"
leader_applied() { st '[m["applied"] for m in s["metaservers"] if m.get("role") == "LEADING"][0]'; }

head -c $((3 << 20)) /dev/urandom >"$DATA/src"
cp "$DATA/src" "$MNT/f"
head -c 5000 /dev/urandom >"$DATA/small"
cp "$DATA/small" "$MNT/small"
wait_for 's["chunks"] == 2' 30 "two chunks written"

# reading a file back: open + read + close, no log entry
sleep 1.5 # write leases returned, heartbeats settled
a1=$(leader_applied)
for i in 1 2 3 4 5; do cmp -s "$DATA/small" "$M2/small" || fail "small file read back"; done
a2=$(leader_applied)
check '(( a2 - a1 <= 2 ))' "five open/read/close cycles cost no log entries (applied $a1 -> $a2)"

# 40 open files unlinked, then closed together: the mount batches their Releases (ReleaseReq.more_inos, one
# call per 10 ms); every one of them must be purged, not only the first of each call (before any leader
# change: a new leader's request for every session's open files would hide a lost Release)
mkdir "$MNT/many"
for i in $(seq 1 40); do head -c 3000 "$DATA/small" >"$MNT/many/f$i"; done
wait_for 's["chunks"] == 42' 30 "40 small files written"
python3 - "$M2/many" "$MNT/many" "$DATA" <<'PY' &
import os, sys, time
held, names, data = sys.argv[1], sys.argv[2], sys.argv[3]
fds = [os.open(f"{held}/f{i}", os.O_RDONLY) for i in range(1, 41)]
for i in range(1, 41):
    os.unlink(f"{names}/f{i}")
open(f"{data}/held", "w").close()
for _ in range(600):
    if os.path.exists(f"{data}/go"):
        break
    time.sleep(0.1)
for fd in fds:
    os.close(fd)
PY
holder=$!
for ((i = 0; i < 300; i++)); do [[ -e $DATA/held ]] && break; sleep 0.1; done
check '[[ -e $DATA/held ]]' "40 files open through the second mount and unlinked through the first"
sleep 1.5
check '[[ $(st "s[\"chunks\"]") == 42 ]]' "the 40 open orphans are kept"
touch "$DATA/go"
wait "$holder"
wait_for 's["chunks"] == 2' 30 "all 40 orphans purged once closed together"

exec 7<"$M2/f"
rm "$MNT/f"
sleep 1.5 # several purge rounds
check 'cmp -s "$DATA/src" /dev/fd/7' "open file reads back after its unlink through another mount"
check '[[ $(st "s[\"chunks\"]") == 2 ]]' "the open file's chunk is kept"

L=$(meta_leader)
[[ -n $L ]] || fail "no metaserver says it is LEADING"
cluster kill "$L"
log "killed leader $L"
for ((i = 0; i < 60; i++)); do L2=$(meta_leader); [[ -n $L2 && $L2 != "$L" ]] && break; sleep 0.5; done
check '[[ -n $L2 && $L2 != "$L" ]]' "a new leader took over"
sleep 6 # the new leader's purge rounds run; sessions report their opens within a keepalive period
check 'cmp -s "$DATA/src" /dev/fd/7' "the open file still reads back after the leader change"
check '[[ $(st "s[\"chunks\"]") == 2 ]]' "the new leader kept the open file's chunk"
cluster restart "$L" 7<&- # the daemon must not inherit the open file

exec 7<&-
wait_for 's["chunks"] == 1' 30 "the closed orphan purged (its chunk gone from the table)"
rm "$MNT/small"
wait_for 's["chunks"] == 0' 30 "an unlinked file nobody holds purged"

log "fuse_orphans passed"
