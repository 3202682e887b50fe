# harness.sh - sourced by tests/fuse/test_*.sh: a throw-away SynodFS cluster with a FUSE mount.
#
#   fuse_setup [cluster options...]   3 metas + 3 chunks (ops/cluster up) on random ports in a temp dir, mounted on
#                                     $MNT; sets DATA, MNT, METASERVERS, BUILD. Skips (77) without /dev/fuse or
#                                     server binaries; fails if synod-mount itself is missing.
#   cluster ARGS...                   ops/cluster on this cluster
#   mount_extra DIR                   a second synod-mount of the same cluster on DIR (unmounted at exit)
#   other_cluster DIR ARGS...         ops/cluster on another cluster in DIR (under $DATA), stopped at exit
#                                     (BASE_PORT: this cluster's base port)
#   FUSE_MOUNT_OPTS=OPTS              (set before fuse_setup) extra -o options for both mounts, e.g. allow_other
#   FUSE_CHUNK_TMPFS=SIZE             (set before fuse_setup) every chunkserver's data dir on a tmpfs of SIZE
#                                     (e.g. 48m), unmounted at exit; a test adds its own to $DATA/tmpfs_mounts
#   check COND MESSAGE / fail MESSAGE assertions
#   fuse_on_exit COMMAND              run COMMAND (eval) first thing at cleanup, in the order registered (e.g.
#                                     resume stopped daemons). Never wrap fuse_cleanup in a trap of your own:
#                                     a command before it replaces $?, and a failed test then exits 0.
# Cleanup (trap on EXIT, and on TERM/INT through exit): unmount everything, stop every daemon, remove the temp
# dir unless KEEP=1, exit with the test's status. A watchdog in its own session does the same if the test dies without its trap (ctest's
# timeout kills it with SIGKILL): the daemons and mounts run in sessions of their own and would outlive it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${SYNOD_BIN:-$ROOT/build/release}
EXTRA_MOUNTS=()
EXTRA_PIDS=()
EXIT_HOOKS=()
fuse_on_exit() { EXIT_HOOKS+=("$1"); }

log() { echo "[$(date +%T)] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { if ! eval "$1"; then fail "$2 ($1)"; fi; }
skip() { echo "SKIP: $*"; exit 77; }

find_built() { local f; for f in "$BUILD/$2/$1" "$BUILD/$1"; do [[ -x $f ]] && { echo "$f"; return 0; }; done; return 1; }

cluster() { "$ROOT/ops/cluster" --data "$DATA" --mount "$MNT" --bin "$BUILD" "$@"; }

fuse_cleanup() {
  local rc=$? m p
  set +e
  for m in "${EXIT_HOOKS[@]}"; do eval "$m"; done
  [[ -n ${DATA:-} && -f ${DATA:-}/watchdog.pid ]] && kill "$(cat "$DATA/watchdog.pid")" 2>/dev/null
  for m in "${EXTRA_MOUNTS[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  for p in "${EXTRA_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  if [[ -n ${DATA:-} && -f ${DATA:-}/extra_clusters ]]; then
    while read -r m; do "$ROOT/ops/cluster" --data "$m" down >/dev/null 2>&1; done <"$DATA/extra_clusters"
  fi
  if [[ -n ${DATA:-} && -d ${DATA:-} ]]; then
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
      echo "---- logs (last lines) ----"
      for f in "$DATA"/mount.log "$DATA"/*/log; do [[ -f $f ]] && { echo "== $f"; tail -n 15 "$f"; }; done
    fi
    cluster down >/dev/null 2>&1
    if [[ -f $DATA/tmpfs_mounts ]]; then
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done <"$DATA/tmpfs_mounts"
    fi
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$DATA"
  fi
  exit $rc
}

# Polls (1 s) until this test's shell is gone or $DATA is removed (the normal cleanup); in the first case stops
# the extra mounts listed in $DATA/extra_mounts and the cluster, and removes $DATA unless KEEP=1. Started
# through a subshell that exits at once, so it is no descendant of the test: ctest's timeout kills the test's
# whole process tree (found by parent pid), which would take a plain background child with it.
fuse_watchdog() {
  (setsid bash -c '
    parent=$1 data=$2 cluster=$3 build=$4 keep=$5
    echo $$ >"$data/watchdog.pid"
    while kill -0 "$parent" 2>/dev/null && [[ -d $data ]]; do sleep 1; done
    [[ -d $data ]] || exit 0
    echo "$(date +%T) watchdog: test shell $parent is gone without cleaning up: stopping its cluster" >>"$data/watchdog.log"
    if [[ -f $data/extra_mounts ]]; then
      while read -r m; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done <"$data/extra_mounts"
    fi
    if [[ -f $data/extra_clusters ]]; then
      while read -r m; do "$cluster" --data "$m" down >>"$data/watchdog.log" 2>&1; done <"$data/extra_clusters"
    fi
    "$cluster" --data "$data" --mount "$data/mnt" --bin "$build" down >>"$data/watchdog.log" 2>&1
    if [[ -f $data/tmpfs_mounts ]]; then
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done <"$data/tmpfs_mounts"
    fi
    [[ $keep == 1 ]] || rm -rf "$data"
  ' fuse-watchdog "$$" "$DATA" "$ROOT/ops/cluster" "$BUILD" "${KEEP:-0}" </dev/null >/dev/null 2>&1 &)
}

fuse_setup() {
  [[ -c /dev/fuse ]] || skip "/dev/fuse is not available"
  command -v fusermount3 >/dev/null || skip "fusermount3 is not installed (package fuse3)"
  find_built synod-meta metaserver >/dev/null || skip "synod-meta is not built in $BUILD (servers not landed?)"
  find_built synod-chunk chunkserver >/dev/null || skip "synod-chunk is not built in $BUILD (servers not landed?)"
  find_built synod-mount fuse-client >/dev/null || fail "synod-mount is not built in $BUILD"
  DATA=$(mktemp -d /tmp/synod-fusetest.XXXXXX)
  MNT=$DATA/mnt
  trap fuse_cleanup EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  fuse_watchdog
  # A base port whose metaserver (P+1..P+9) and chunkserver (P+101..P+109) ports nobody listens on: several
  # clusters (tests, benchmarks) may run on this machine at once.
  local port used try
  used=$(ss -Hltn 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | sort -un)
  for ((try = 0; try < 50; try++)); do
    port=$((20000 + (RANDOM % 200) * 200))
    awk -v p="$port" '($1 > p && $1 < p + 10) || ($1 > p + 100 && $1 < p + 110) {f = 1} END {exit !f}' \
      <<<"$used" || break
  done
  BASE_PORT=$port
  if [[ -n ${FUSE_CHUNK_TMPFS:-} ]]; then
    local n=3 a prev="" i
    for a in "$@"; do
      [[ $prev == --chunks ]] && n=$a
      prev=$a
    done
    for ((i = 1; i <= n; i++)); do
      mkdir -p "$DATA/chunk$i/data"
      mount -t tmpfs -o "size=$FUSE_CHUNK_TMPFS" synod-test "$DATA/chunk$i/data" 2>/dev/null || skip "cannot mount a tmpfs"
      echo "$DATA/chunk$i/data" >>"$DATA/tmpfs_mounts"
    done
  fi
  log "cluster in $DATA, base port $port"
  cluster --base-port "$port" --wait 60 "$@" up
  METASERVERS=$(cluster env | sed -n 's/^METASERVERS=//p')
  cluster --mount-opts "io_timeout=60,unreachable_timeout=60${FUSE_MOUNT_OPTS:+,$FUSE_MOUNT_OPTS}" mount
}

# synodctl against this cluster: ctl ARGS...; st EXPR prints a python expression over the parsed
# `synodctl --json status` (as s); wait_for EXPR SECS MESSAGE polls st until it prints True, else fails.
ctl() {
  [[ -n ${CTL:-} ]] || CTL=$(find_built synodctl ops/synodctl) || fail "synodctl is not built in $BUILD"
  "$CTL" -m "$METASERVERS" "$@"
}
st() { ctl --json status | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
wait_for() {
  local i
  for ((i = 0; i < $2 * 2; i++)); do
    [[ $(st "$1" 2>/dev/null) == True ]] && return 0
    sleep 0.5
  done
  ctl status || true
  fail "$3 (after $2 s)"
}

# The serving leader as the metaservers themselves say (synodctl status: each one's own role), as a node
# name meta<i> (the i-th address of $METASERVERS); empty when none leads.
meta_leader() {
  local ctl
  ctl=$(find_built synodctl ops/synodctl) || fail "synodctl is not built in $BUILD"
  "$ctl" -m "$METASERVERS" --json status 2>/dev/null | python3 -c '
import json, sys
addrs = sys.argv[1].split(",")
try:
    ms = json.load(sys.stdin)["metaservers"]
except Exception:
    sys.exit(0)
for m in ms:
    if m.get("role") == "LEADING" and m["addr"] in addrs:
        print("meta%d" % (addrs.index(m["addr"]) + 1))
        break
' "$METASERVERS" || true
}

other_cluster() {
  local dir=$1
  shift
  grep -qxF "$dir" "$DATA/extra_clusters" 2>/dev/null || echo "$dir" >>"$DATA/extra_clusters"
  "$ROOT/ops/cluster" --data "$dir" --mount "$dir/mnt" --bin "$BUILD" "$@"
}

mount_extra() {
  local dir=$1 bin i
  bin=$(find_built synod-mount fuse-client)
  mkdir -p "$dir"
  setsid "$bin" -f "$METASERVERS" "$dir" -o "log_file=$DATA/mount-extra.log${FUSE_MOUNT_OPTS:+,$FUSE_MOUNT_OPTS}" </dev/null >>"$DATA/mount-extra.log" 2>&1 &
  EXTRA_PIDS+=($!)
  EXTRA_MOUNTS+=("$dir")
  echo "$dir" >>"$DATA/extra_mounts"
  for ((i = 0; i < 300; i++)); do mountpoint -q "$dir" && return 0; sleep 0.1; done
  fail "second mount on $dir did not appear"
}
