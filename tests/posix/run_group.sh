#!/usr/bin/env bash
# posix_<group>: one group of the POSIX conformance suite (posix_suite.py GROUP) on a fresh 3+3 cluster with
# two mounts of it (MNT and MNT2, so checks can compare two clients), both with allow_other so the
# permission checks can run as unprivileged uids. Extra arguments go to posix_suite.py (e.g. --only NAME).
#   SYNOD_BIN=/path/to/build bash tests/posix/run_group.sh basic|perms|locks|big [--only CHECK...]
POSIX_DIR=$(cd "$(dirname "$0")" && pwd)
GROUP=${1:?usage: run_group.sh GROUP [--only CHECK...]}
shift
FUSE_MOUNT_OPTS=allow_other
source "$POSIX_DIR/../fuse/harness.sh"
command -v python3 >/dev/null || skip "python3 is not installed"
fuse_setup
chmod 755 "$DATA" # mktemp made it 0700: the unprivileged checks must reach the mount point below it
M2=$DATA/mnt2
mount_extra "$M2"
t0=$SECONDS
export SYNOD_METASERVERS=$METASERVERS # for posix_mkmany (POSIX_MKMANY, set by ctest)
python3 "$POSIX_DIR/posix_suite.py" "$GROUP" "$MNT" "$M2" "$@"
log "posix_$GROUP passed ($((SECONDS - t0)) s of checks)"
