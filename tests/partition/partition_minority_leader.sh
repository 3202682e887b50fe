#!/usr/bin/env bash
# partition_minority_leader.sh - a partitioned minority leader stops serving once its lease ends.
#
# Three synod-meta (state_machine = kv), each in its own network namespace ("hosts"), joined by veth pairs
# to a bridge in a fourth namespace; addresses in a private /24 that exists only inside these namespaces.
# The test finds the leader and cuts its link (the bridge-side veth goes down: the node keeps its address
# and loopback, so a probe running inside its namespace still reaches it, but no peer does). Then:
#  (a) the isolated old leader stops answering linearizable reads and writes no later than its lease end
#      (measured by pt_probe from inside its namespace: time from the cut to its last successful Get/Put
#      <= lease + margin), and every write it ever acknowledged is on the majority side;
#  (b) the majority elects a new leader and serves reads and writes;
#  (c) after healing, the old leader rejoins as a follower (redirects to the new leader), catches up (its
#      own applied state, read with a stale Get, holds every write made before, during and after the
#      partition) and takes part: with the third node killed, a write needs the old leader's vote.
# Cleanup (daemons by PID, namespaces with their links, the work dir) runs on every exit path.
#
# Usage: partition_minority_leader.sh SYNOD_META PT_PROBE. Exit 0 pass, 1 fail, 77 skip (not root, no
# `ip netns`, or synod-meta not built). PT_KEEP=1 keeps the work dir (configs, logs) of a failed run.
set -uo pipefail

META=${1:-}
PROBE=${2:-}
LEASE_MS=200      # rsm default: election_ms * 2 / 3 (set explicitly below)
ELECTION_MS=300
MARGIN_MS=150     # scheduling slack on a busy 2-core machine
PORT=7000

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; status=1; exit 1; }
log() { echo "[$(date +%T.%3N)] $*"; }

# Our own time limit, below ctest's 120 s: a kill by ctest would skip the cleanup and leak namespaces, while
# timeout's SIGTERM runs the EXIT trap.
if [[ -z "${PT_UNDER_TIMEOUT:-}" ]] && command -v timeout >/dev/null 2>&1; then
  PT_UNDER_TIMEOUT=1 exec timeout -s TERM -k 15 100 bash "$0" "$@"
fi
[[ $(id -u) -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"
[[ -n "$META" && -x "$META" ]] || skip "synod-meta not built ($META)"
[[ -n "$PROBE" && -x "$PROBE" ]] || skip "pt_probe not built ($PROBE)"

P=synod-pt-$$
BR=$P-br
NET=10.213.$(( $$ % 250 + 1 ))
W=$(mktemp -d /tmp/synod-pt.XXXXXX)
pids=()
nss=()
status=1

cleanup() {
  for pid in "${pids[@]}"; do
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [[ $status -ne 0 ]]; then
    for i in 1 2 3; do
      [[ -f $W/meta$i.log ]] || continue
      n=$(grep -c 'malformed request' "$W/meta$i.log")
      echo "--- meta$i.log (last 15 lines other than 'malformed request'; $n of those)"
      grep -v 'malformed request' "$W/meta$i.log" | tail -15
    done
  fi
  if [[ $status -ne 0 && -n "${PT_KEEP:-}" ]]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted or over the 100 s budget"; exit 1' INT TERM

# --- the network: 3 hosts + a bridge namespace -------------------------------------------------------
ip netns add "$BR" 2>/dev/null || skip "ip netns add failed (no network namespace support?)"
nss+=("$BR")
ip -n "$BR" link set lo up
ip -n "$BR" link add br0 type bridge || fail "cannot create a bridge"
ip -n "$BR" addr add "$NET.254/24" dev br0
ip -n "$BR" link set br0 up
addr=()
for i in 1 2 3; do
  ns=$P-$i
  ip netns add "$ns" || fail "ip netns add $ns"
  nss+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "vi$i" netns "$ns" type veth peer name "vb$i" netns "$BR" || fail "cannot create veth pair $i"
  ip -n "$BR" link set "vb$i" master br0
  ip -n "$BR" link set "vb$i" up
  ip -n "$ns" addr add "$NET.1$i/24" dev "vi$i"
  ip -n "$ns" link set "vi$i" up
  addr[$i]=$NET.1$i:$PORT
done
ALL="${addr[1]},${addr[2]},${addr[3]}"

probe() { # probe NAMESPACE ARGS...
  local ns=$1; shift
  ip netns exec "$ns" "$PROBE" "$@"
}

# --- the daemons ------------------------------------------------------------------------------------------
start_meta() { # start_meta I
  local i=$1
  ip netns exec "$P-$i" "$META" -c "$W/meta$i.conf" >>"$W/meta$i.log" 2>&1 &
  pids[$i]=$!
}
for i in 1 2 3; do
  cat >"$W/meta$i.conf" <<EOF
state_machine = kv
node_id = $(( i - 1 ))
peers = $ALL
listen = ${addr[$i]}
data_dir = $W/data$i
election_timeout = ${ELECTION_MS}ms
lease = ${LEASE_MS}ms
log_level = info
EOF
  start_meta "$i"
done

index_of() { # index_of ADDR -> 1..3
  for i in 1 2 3; do [[ "${addr[$i]}" == "$1" ]] && { echo "$i"; return; }; done
  echo 0
}

leader=$(probe "$BR" leader "$ALL" 20000) || fail "no leader elected within 20 s"
L=$(index_of "$leader")
[[ $L -ge 1 ]] || fail "leader address $leader is not one of $ALL"
log "leader is node $L ($leader)"
probe "$BR" put "$ALL" pt-before v-before 10000 >/dev/null || fail "write before the partition failed"

# --- (a) cut the leader off; it must stop serving within its lease -----------------------------------------
log "cutting node $L off (link vb$L down)"
out=$(probe "$P-$L" isolate "${addr[$L]}" "ip -n $BR link set vb$L down" 1000 3000 "$W/acked.txt") \
  || fail "isolate probe failed: $out"
log "isolated leader: $out"
get_field() { sed -n "s/.*$1=\([-0-9.]*\).*/\1/p" <<<"$out"; }
reads_ok=$(get_field reads_ok)
last_read=$(get_field last_read_after_cut_ms)
last_write=$(get_field last_write_after_cut_ms)
limit=$(( LEASE_MS + MARGIN_MS ))
[[ ${reads_ok:-0} -gt 0 ]] || fail "the leader never answered a read before the cut (probe broken?)"
awk -v t="$last_read" -v l="$limit" 'BEGIN { exit !(t <= l) }' \
  || fail "isolated leader served reads ${last_read} ms after the cut" \
          "(lease ${LEASE_MS} ms + ${MARGIN_MS} ms margin)"
awk -v t="$last_write" -v l="$limit" 'BEGIN { exit !(t <= l) }' \
  || fail "isolated leader acknowledged writes ${last_write} ms after the cut"
role=$(probe "$P-$L" role "${addr[$L]}")
[[ "$role" != leader ]] || fail "isolated node still answers lease reads after ${LEASE_MS} ms + 3 s"
log "(a) ok: last read ${last_read} ms, last write ${last_write} ms after the cut (limit ${limit} ms);" \
    "now: $role"

# --- (b) the majority elects a new leader and serves ----------------------------------------------------
maj=()
for i in 1 2 3; do [[ $i -ne $L ]] && maj+=("${addr[$i]}"); done
MAJ="${maj[0]},${maj[1]}"
newleader=$(probe "$BR" leader "$MAJ" 15000) || fail "the majority did not elect a leader"
N=$(index_of "$newleader")
[[ $N -ge 1 && $N -ne $L ]] || fail "unexpected majority leader $newleader"
probe "$BR" put "$MAJ" pt-during v-during 10000 >/dev/null || fail "the majority does not accept writes"
[[ "$(probe "$BR" get "$MAJ" pt-during 10000)" == v-during ]] \
  || fail "the majority does not read its own write"
out=$(probe "$BR" check "$MAJ" "$W/acked.txt" 15000) \
  || fail "the isolated leader acknowledged writes the majority does not have: $out"
log "(b) ok: node $N ($newleader) leads the majority; all $(wc -l <"$W/acked.txt") writes the old leader" \
    "acknowledged are there"

# --- (c) heal: the old leader rejoins as follower and catches up ----------------------------------------
ip -n "$BR" link set "vb$L" up
log "healed"
ok=0
heal_deadline=$(( SECONDS + 15 ))
while (( SECONDS < heal_deadline )); do
  role=$(probe "$P-$L" role "${addr[$L]}")
  if [[ "$role" == "follower $newleader" ]]; then ok=1; break; fi
  [[ "$role" == leader ]] \
    && fail "after healing, the old leader (node $L) took the leadership back from node $N" \
    "(a disruptive rejoin: the majority's leader lost its leadership when the old one came back)"
  # The majority's leader may change once more while the old leader comes back; follow it.
  cur=$(probe "$BR" leader "$MAJ" 1000) && newleader=$cur
  sleep 0.1
done
[[ $ok -eq 1 ]] || fail "old leader did not rejoin as follower of $newleader within 15 s (role: $role)"
log "old leader rejoined: $role"
N=$(index_of "$newleader")
probe "$BR" put "$ALL" pt-after v-after 10000 >/dev/null || fail "write after healing failed"
printf 'pt-before v-before\npt-during v-during\npt-after v-after\n' >>"$W/acked.txt"
# Catch-up: the old leader's own applied state (stale read, op 1) must come to hold every write.
out=$(probe "$P-$L" stale-check "${addr[$L]}" "$W/acked.txt" 15000) \
  || fail "old leader did not catch up within 15 s: $out"
log "old leader caught up: $out"
# Kill the third node: from now on every write needs the old leader's vote.
T=$(( 6 - L - N ))
kill -9 "${pids[$T]}"; wait "${pids[$T]}" 2>/dev/null; pids[$T]=
log "killed node $T; node $N leads, node $L must vote"
PAIR="${addr[$N]},${addr[$L]}"
probe "$BR" put "$PAIR" pt-final v-final 20000 >/dev/null \
  || fail "no write commits with the old leader as the only other voter"
echo 'pt-final v-final' >>"$W/acked.txt"
out=$(probe "$BR" check "$PAIR" "$W/acked.txt" 20000) || fail "writes missing after healing: $out"
log "(c) ok: old leader rejoined as follower, committed with it as the only other voter; $out"

status=0
echo "PASS: partition_minority_leader"
exit 0
