#!/usr/bin/env bash
# admin_cluster: synodctl against a real cluster of 3 metaservers and 4 chunkservers with a FUSE mount.
# Files written at goal 3; one chunkserver decommissioned and drained (chunks_left reaches 0 within a bounded
# wait) while every file still reads back; the drained chunkserver killed and the data read through a fresh
# mount (so no copy on it is needed); fsck clean; goal 2 set recursively on a directory and its copies trimmed
# (the chunk table's total drops by one copy per chunk there); status shows every metaserver and the leader;
# repl-limit reads and sets the per-chunkserver copy limit.
source "$(dirname "$0")/../fuse/harness.sh"
fuse_setup --chunks 4

mkdir "$MNT/d"
for i in 1 2 3 4; do
  head -c $((i * 700000 + 12345)) /dev/urandom >"$DATA/src$i"
  cp "$DATA/src$i" "$MNT/d/f$i"
done
head -c 1500000 /dev/urandom >"$DATA/top"
cp "$DATA/top" "$MNT/top"
wait_for 's["chunks"] == 5 and s["under_goal"] == 0' 30 "5 chunks at their goal"
check '[[ $(st "sum(c[\"chunks_left\"] for c in s[\"chunkservers\"])") == 15 ]]' "15 copies (goal 3)"

# status: every metaserver answers for itself, one leads, 4 chunkservers UP
out=$(ctl status) || fail "status exit $?"
check '[[ $(grep -c "LEADING" <<<"$out") == 1 ]]' "status shows one LEADING metaserver"
check '[[ $(grep -cE "FOLLOWING" <<<"$out") == 2 ]]' "status shows two FOLLOWING metaservers"
check '[[ $(st "sum(1 for c in s[\"chunkservers\"] if c[\"state\"] == \"UP\")") == 4 ]]' "4 chunkservers UP"
check 'grep -q "files 5, dirs 2, chunks 5; under goal 0, missing 0, over goal 0" <<<"$out"' "status counts"

# decommission the chunkserver holding the most copies
read -r ID PORT < <(st 'max(((c["chunks_left"], c["id"], c["addr"].split(":")[1]) for c in s["chunkservers"]))[1:]' |
  tr -d "(),'")
check '[[ -n $ID && -n $PORT ]]' "a chunkserver to decommission"
FIRST=${METASERVERS%%,*}
BASE=$((${FIRST##*:} - 1)) # ops/cluster: metaserver i on BASE+i, chunkserver i on BASE+100+i
NODE=chunk$((PORT - BASE - 100))
log "decommissioning chunkserver $ID ($NODE, port $PORT)"
out=$(ctl decommission "$ID") || fail "decommission exit $?"
check 'grep -q "DECOMMISSIONING" <<<"$out"' "decommission answers DECOMMISSIONING ($out)"
for i in 1 2 3 4; do check 'cmp -s "$DATA/src$i" "$MNT/d/f$i"' "f$i reads back while draining"; done
log "reads fine while draining"
# no copy starts under a write lease: the wait covers a lease left to lapse (namespace.chunk_lease, 60 s)
out=$(ctl decommission --wait 100 "$ID") || fail "not drained within 100 s: $out"
check 'grep -q "chunks_left 0" <<<"$out"' "drained ($out)"
wait_for "[c for c in s['chunkservers'] if c['id'] == $ID][0]['chunks_left'] == 0 and s['under_goal'] == 0 and s['over_goal'] == 0" 20 "status shows the drain done"
check '[[ $(st "[c[\"state\"] for c in s[\"chunkservers\"] if c[\"id\"] == $ID][0]") == DECOMMISSIONING ]]' "still DECOMMISSIONING"
for i in 1 2 3 4; do check 'cmp -s "$DATA/src$i" "$MNT/d/f$i"' "f$i reads back after the drain"; done
check 'cmp -s "$DATA/top" "$MNT/top"' "top reads back after the drain"

log "drained"
out=$(ctl fsck) || fail "fsck not clean (exit $?): $out"
check 'grep -q "(clean)" <<<"$out"' "fsck clean ($out)"

# the drained chunkserver is not needed any more: kill it, read everything through a fresh mount
cluster kill "$NODE" >/dev/null
M2=$DATA/mnt2
mount_extra "$M2"
for i in 1 2 3 4; do check 'cmp -s "$DATA/src$i" "$M2/d/f$i"' "f$i reads without the drained chunkserver"; done
check 'cmp -s "$DATA/top" "$M2/top"' "top reads without the drained chunkserver"

log "read back through a fresh mount"
# goal 2 on /d, recursively: its 4 chunks lose a copy each
out=$(ctl goal set -r 2 /d) || fail "goal set exit $?"
check 'grep -q "goal 2 (5 inodes changed)" <<<"$out"' "goal set ($out)"
check '[[ $(ctl goal get /d/f3) == "/d/f3: goal 2" ]]' "goal get on a file inside"
check '[[ $(ctl goal get /top) == "/top: goal 3" ]]' "goal of a file outside unchanged"
wait_for 'sum(c["chunks_left"] for c in s["chunkservers"]) == 4 * 2 + 3 and s["over_goal"] == 0' 30 "copies trimmed to the goal"
for i in 1 2 3 4; do check 'cmp -s "$DATA/src$i" "$M2/d/f$i"' "f$i reads back at goal 2"; done
out=$(ctl status) || fail "status exit $?"
check 'grep -q "under goal 0, missing 0, over goal 0" <<<"$out"' "status healthy at the end"
out=$(ctl rebalance --dry-run --threshold 5) || fail "rebalance exit $?"
check 'grep -q "^mean usage" <<<"$out"' "rebalance dry run ($out)"
# the copy limit: the configured value, changed through any metaserver (redirected to the leader), kept
check '[[ $(ctl repl-limit) == "copies in flight per chunkserver: 4" ]]' "repl-limit reads the default"
check '[[ $(ctl repl-limit 9) == "copies in flight per chunkserver: 9" ]]' "repl-limit set"
check '[[ $(ctl --json repl-limit) == "{\"repl_limit\":9}" ]]' "repl-limit kept"
rc=0
ctl repl-limit 0 >/dev/null 2>&1 || rc=$?
check '[[ $rc == 2 ]]' "repl-limit 0 is a usage error"
log "admin_cluster passed"
