#!/usr/bin/env bash
# Prepares (idempotently) a Debian trixie chroot with Swift, cached outside the repository, and
# runs a command inside it. Debian 12 has no Swift compiler; trixie's `swiftlang` works in a chroot.
#
#   scripts/swift-chroot.sh setup                 # make sure the chroot exists and is mounted
#   scripts/swift-chroot.sh run <dir> <command>   # run <command> with <dir> bind-mounted at /work/repo
#
# The chroot lives in $TELEVISIT_SWIFT_CHROOT (default /var/cache/televisit/swift-trixie, ~2.7 GB);
# a marker file records a finished setup, so a half-made chroot is redone, never trusted.
set -euo pipefail

ROOT="${TELEVISIT_SWIFT_CHROOT:-/var/cache/televisit/swift-trixie}"
MIRROR="${TELEVISIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MARKER="$ROOT/.televisit-swift-ready"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mount_once() { # <fstype-or-bind> <source> <target>
    mountpoint -q "$3" && return 0
    mkdir -p "$3"
    if [ "$1" = bind ]; then as_root mount --bind "$2" "$3"; else as_root mount -t "$1" "$2" "$3"; fi
}

mount_system() {
    mount_once proc proc "$ROOT/proc"
    mount_once sysfs sys "$ROOT/sys"
    mount_once bind /dev "$ROOT/dev"
    mount_once devpts devpts "$ROOT/dev/pts" || true
}

setup() {
    if [ -f "$MARKER" ]; then mount_system; return 0; fi
    if ! command -v debootstrap >/dev/null; then
        as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    echo "swift-chroot: creating a trixie chroot in $ROOT (one time, ~1 minute)" >&2
    for m in dev/pts dev sys proc; do mountpoint -q "$ROOT/$m" && as_root umount "$ROOT/$m" || true; done
    as_root rm -rf "$ROOT"
    as_root mkdir -p "$ROOT"
    as_root debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >/dev/null 2>&1 ||
        { echo "swift-chroot: debootstrap failed (see $ROOT/debootstrap/debootstrap.log)" >&2; exit 1; }
    mount_system
    as_root cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    as_root chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends swiftlang libc6-dev ca-certificates >/dev/null'
    as_root chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin swift --version >&2
    as_root touch "$MARKER"
}

run() { # <dir> <command...>
    local dir="$1"; shift
    setup
    # Always the directory asked for: a mount left by an earlier run may point elsewhere.
    mountpoint -q "$ROOT/work/repo" && as_root umount "$ROOT/work/repo"
    mount_once bind "$(realpath "$dir")" "$ROOT/work/repo"
    trap 'as_root umount "$ROOT/work/repo" 2>/dev/null || true' EXIT
    as_root chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        ${TELEVISIT_CHROOT_ENV:-} sh -c "cd /work/repo && $*"
}

case "${1:-}" in
    setup) setup ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 setup | run <dir> <command>" >&2; exit 64 ;;
esac
