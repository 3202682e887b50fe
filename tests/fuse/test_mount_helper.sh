#!/usr/bin/env bash
# fuse_mount_helper: `mount -t fuse.synodfs METASERVERS DIR -o opts` works the way fstab uses it. mount(8) finds
# no /sbin/mount.fuse.synodfs and runs the libfuse helper /sbin/mount.fuse3, which runs
# `/bin/sh -c 'synodfs SOURCE DIR -o opts'` with PATH UNSET, so `synodfs` must sit in the shell's default path
# (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin): the CMake install rule puts it in
# <prefix>/sbin. This test links /usr/local/sbin/synodfs for its duration if no synodfs is installed (and
# removes the link again), then checks: fstab-only options are accepted, the type shows in /proc/mounts,
# umount(8) unmounts; and the older form `mount -t fuse '/path/synodfs#METASERVERS' DIR`.
source "$(dirname "$0")/harness.sh"
[[ -x /sbin/mount.fuse3 || -x /usr/sbin/mount.fuse3 ]] || skip "mount.fuse3 is not installed (package fuse3)"
[[ $(id -u) == 0 ]] || skip "mount(8) with a helper needs root here"
fuse_setup
bin=$(find_built synod-mount fuse-client)
link=""
if ! PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v synodfs >/dev/null; then
  link=/usr/local/sbin/synodfs
  mkdir -p /usr/local/sbin
  ln -s "$bin" "$link"
  fuse_on_exit 'rm -f "$link"'
fi
mkdir -p "$DATA/hmnt"
mount -t fuse.synodfs "$METASERVERS" "$DATA/hmnt" \
  -o "defaults,_netdev,noauto,x-systemd.automount,log_file=$DATA/helper.log,attr_timeout=0.5"
EXTRA_MOUNTS+=("$DATA/hmnt")
check 'mountpoint -q "$DATA/hmnt"' "mounted through mount.fuse3"
check 'grep -q " $DATA/hmnt fuse.synodfs " /proc/mounts' "type fuse.synodfs in /proc/mounts"
echo via-helper >"$DATA/hmnt/h"
check '[[ $(cat "$MNT/h") == via-helper ]]' "the helper mount is the same file system"
umount "$DATA/hmnt"
for ((i = 0; i < 50; i++)); do mountpoint -q "$DATA/hmnt" || break; sleep 0.1; done
check '! mountpoint -q "$DATA/hmnt"' "umount(8) unmounted it"
# a mount that cannot reach the cluster fails (no silent success from the daemonized child)
if mount -t fuse "$bin#127.0.0.1:1" "$DATA/hmnt" -o unreachable_timeout=1,rpc_timeout=0.5 2>/dev/null; then
  umount "$DATA/hmnt" || true
  fail "mounting an unreachable cluster must fail"
fi
# the PROGRAM#SOURCE form (type fuse), which needs no PATH at all
mount -t fuse "$bin#$METASERVERS" "$DATA/hmnt" -o "log_file=$DATA/helper.log"
check '[[ $(cat "$DATA/hmnt/h") == via-helper ]]' "PROGRAM#SOURCE form mounts"
umount "$DATA/hmnt"
log "fuse_mount_helper passed"
