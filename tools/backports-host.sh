#!/bin/bash
# The next platform (issue 17) as a second libvirt host on this machine:
# Debian 12's bookworm-backports libvirt and QEMU installed in a bookworm
# root of its own, its libvirtd and virtlogd run in that root (pivoted
# into, not chrooted) in their own mount, UTS and network namespaces. This machine's own libvirt and QEMU
# (stock Debian 12) are neither upgraded nor touched.
#
#   tools/backports-host.sh build    build the root once (cached; rebuilt
#                                    when the package list below changes)
#   tools/backports-host.sh up       build if needed, start the daemons,
#                                    define the test network; prints the URI
#   tools/backports-host.sh uri      the connection URI of the running host
#   tools/backports-host.sh status   versions and PIDs, or exit 1
#   tools/backports-host.sh down     destroy its domains, stop its daemons
#                                    by PID; no process or mount remains
#
# Reach it from this namespace with
#   qemu:///system?socket=$ROOT/run/libvirt/libvirt-sock
# Guests' networks live in the named network namespace $NETNS (nls-bp), so
# `ip netns exec nls-bp ping ...` reaches them as the stock test bed's
# nls-test namespace does.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NLS_CACHE_DIR:-/var/cache/nova-live-snapshot}
ROOT=${NLS_BACKPORTS_ROOT:-$CACHE/backports-root}
NETNS=${NLS_BACKPORTS_NETNS:-nls-bp}
NETWORK=${NLS_NETWORK:-nls-test}
SUITE=bookworm
# What the root holds. Changing this list (or the suite) rebuilds the root.
PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    qemu-block-extra ovmf dnsmasq-base nftables iptables iproute2
    python3)
# From backports: the platform under test.
BACKPORTED=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    qemu-block-extra)
# Paths guests and the test beds use, bind-mounted at the same place inside
# (the test guests' cache, the beds' work and staging directories).
BINDS=(/var/tmp /tmp "$CACHE/guest" "$CACHE/debian-guest" "$CACHE/apps-guest")
URI="qemu:///system?socket=$ROOT/run/libvirt/libvirt-sock"
log() { echo "backports-host: $*" >&2; }
die() { log "$*"; exit 1; }

virsh_() { virsh -q -c "$URI" "$@"; }

# The build's identity: a root built from another list is rebuilt.
spec() {
    printf '%s\n' "suite=$SUITE" "packages=${PACKAGES[*]}" \
        "backported=${BACKPORTED[*]}" "qemu_uid=$(id -u libvirt-qemu)" \
        "qemu_gid=$(getent group libvirt-qemu | cut -d: -f3)" \
        "kvm_gid=$(getent group kvm | cut -d: -f3)"
}

mirror() {
    # shellcheck source=lib/apt-sources.sh source-path=SCRIPTDIR
    . "$repo/tools/lib/apt-sources.sh"
    local found
    found=$(host_source "$SUITE" main)
    echo "${found%%|*}"
}

build() {
    if [ -f "$ROOT/.nls-spec" ] && [ "$(cat "$ROOT/.nls-spec")" = "$(spec)" ]; then
        return 0
    fi
    [ -e "$ROOT/run/libvirt/libvirtd.pid" ] && running && \
        die "the host in $ROOT runs: 'down' before rebuilding it"
    local partial=$ROOT.partial uri
    uri=$(mirror)
    [ -n "$uri" ] || die "no apt source of this host serves $SUITE main"
    if [ ! -e "$partial/.nls-debootstrap-done" ]; then
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends debootstrap >/dev/null
        fi
        rm -rf "$partial"
        log "debootstrap $SUITE from $uri into $partial"
        debootstrap --variant=minbase \
            --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            "$SUITE" "$partial" "$uri" >"$CACHE/backports-debootstrap.log" 2>&1 \
            || die "debootstrap failed: see $CACHE/backports-debootstrap.log"
        touch "$partial/.nls-debootstrap-done"
    fi
    cat >"$partial/etc/apt/sources.list" <<EOF
deb $uri $SUITE main
deb $uri $SUITE-updates main
deb $uri $SUITE-backports main
EOF
    # No daemon starts in the root while packages are installed.
    printf '#!/bin/sh\nexit 101\n' >"$partial/usr/sbin/policy-rc.d"
    chmod 755 "$partial/usr/sbin/policy-rc.d"
    # QEMU inside must run with this host's libvirt-qemu IDs: the engine
    # (outside) shares files with that group, and the tests ask that user.
    local uid gid kvm
    uid=$(id -u libvirt-qemu); gid=$(getent group libvirt-qemu | cut -d: -f3)
    kvm=$(getent group kvm | cut -d: -f3)
    chroot "$partial" sh -euc "
        getent group kvm >/dev/null || groupadd -r -g $kvm kvm
        getent group libvirt-qemu >/dev/null || groupadd -r -g $gid libvirt-qemu
        getent passwd libvirt-qemu >/dev/null || useradd -r -u $uid -g $gid \
            -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu"
    log "installing ${PACKAGES[*]} (${BACKPORTED[*]} from $SUITE-backports)"
    local pins=()
    for p in "${BACKPORTED[@]}"; do pins+=("$p/$SUITE-backports"); done
    mount -t proc proc "$partial/proc"
    # shellcheck disable=SC2064 # expand $partial now
    trap "umount '$partial/proc'" EXIT
    {
        chroot "$partial" apt-get update -q &&
        # Dependencies follow to backports where the backported package
        # needs newer ones (-t), the rest stays bookworm.
        DEBIAN_FRONTEND=noninteractive chroot "$partial" apt-get install -y -q \
            --no-install-recommends -t "$SUITE-backports" "${PACKAGES[@]}" "${pins[@]}" &&
        chroot "$partial" apt-get clean
    } >"$CACHE/backports-install.log" 2>&1 \
        || die "package install failed: see $CACHE/backports-install.log"
    umount "$partial/proc"
    trap - EXIT
    [ -x "$partial/usr/sbin/libvirtd" ] || die "no libvirtd in $partial"
    configure "$partial"
    spec >"$partial/.nls-spec"
    rm -rf "$ROOT"
    mv "$partial" "$ROOT"
    log "built $ROOT: $(versions)"
}

# The daemons' configuration inside the root: an identity of its own, QEMU
# as this host's libvirt-qemu, no systemd. Applied on every `up` (it only
# rewrites the lines it owns).
configure() {
    local r=$1
    # DMI is absent here and the main daemon's is random: a UUID of its
    # own, kept across runs.
    grep -q '^host_uuid' "$r/etc/libvirt/libvirtd.conf" || \
        echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >>"$r/etc/libvirt/libvirtd.conf"
    sed -i '/^user =\|^group =\|^namespaces =/d' "$r/etc/libvirt/qemu.conf"
    # libvirt's default namespaces = ["mount"] stays: each QEMU gets a
    # private /dev holding only its own devices (see inside for why the
    # root is pivoted into, not chrooted into).
    printf 'user = "libvirt-qemu"\ngroup = "libvirt-qemu"\n' \
        >>"$r/etc/libvirt/qemu.conf"
    echo nls-backports >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 nls-backports\n' >"$r/etc/hosts"
    mkdir -p "$r/var/log/libvirt/qemu" "$r/run/libvirt" "$r/var/lib/libvirt/qemu"
}

versions() {
    # shellcheck disable=SC2016 # dpkg-query's ${Field}s, not shell
    chroot "$ROOT" dpkg-query -W -f '${Package} ${Version}\n' \
        libvirt-daemon qemu-system-x86 2>/dev/null | tr '\n' ' '
}

pid_of() {
    local f=$ROOT/run/$1.pid
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

running() { pid_of libvirt/libvirtd >/dev/null; }

# Runs in the new mount and UTS namespaces (and the $NETNS network one),
# started by `up`: mounts what the root needs, then runs virtlogd and
# libvirtd in that root in the foreground until they are stopped.
inside() {
    if [ -z "${NLS_BACKPORTS_HOST_MNT:-}" ] ||
            [ "$(stat -L -c %i /proc/self/ns/mnt)" = "$NLS_BACKPORTS_HOST_MNT" ]; then
        die "not in a mount namespace of its own: refusing to mount"
    fi
    [ "$(stat -L -c %i /proc/self/ns/net)" = "$(stat -L -c %i "/run/netns/$NETNS")" ] \
        || die "not in network namespace $NETNS"
    hostname nls-backports
    # The root a mount of its own: pivot_root needs a mount point, and
    # libvirt's per-QEMU mount namespace starts by remounting / as a slave,
    # which fails (EINVAL) on a plain directory.
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"        # this network namespace's view
    mount --rbind /sys/fs/cgroup "$ROOT/sys/fs/cgroup"
    mount --rbind /dev "$ROOT/dev"          # with /dev/shm, /dev/net/tun
    local p
    for p in "${BINDS[@]}"; do
        [ -d "$p" ] || continue
        mkdir -p "$ROOT$p"
        mount --rbind "$p" "$ROOT$p"
    done
    ip link set lo up
    # The root becomes this mount namespace's own root (pivot_root, then
    # the host's tree detached), not a chroot inside it: libvirt builds
    # each QEMU's private /dev from a helper that enters the QEMU's mount
    # namespace with setns(), which puts the helper at that namespace's
    # root. Under a chroot that root is the host's tree, so the device
    # nodes landed in a /dev QEMU never sees ("Could not open
    # '/dev/urandom'", "Failed to create PTY"; seen with libvirt 11.3).
    cd "$ROOT"
    mkdir -p .host
    pivot_root . .host
    cd /
    umount -l /.host
    /usr/sbin/virtlogd -p /run/virtlogd.pid &
    /usr/sbin/libvirtd -p /run/libvirt/libvirtd.pid &
    wait
}

up() {
    build
    if running; then
        echo "$URI"
        return 0
    fi
    if [ ! -e "/run/netns/$NETNS" ]; then
        log "creating network namespace $NETNS"
        ip netns add "$NETNS"
    fi
    # The root's /run is on disk (the host reaches its socket there):
    # whatever a previous run left in it is stale.
    find "$ROOT/run" -mindepth 1 -delete
    configure "$ROOT"
    mkdir -p "$ROOT/run/libvirt" "$ROOT/run/lock"
    log "starting libvirtd and virtlogd of $ROOT under tini"
    # tini -s reaps the QEMU processes libvirtd daemonizes (PID 1 here does
    # not); the mounts live only as long as the namespace's processes.
    NLS_BACKPORTS_HOST_MNT=$(stat -L -c %i /proc/self/ns/mnt) \
    NLS_BACKPORTS_ROOT=$ROOT NLS_BACKPORTS_NETNS=$NETNS setsid tini -s -- \
        nsenter --net="/run/netns/$NETNS" \
        unshare --mount --uts --propagation private \
        "$0" _inside </dev/null >>"$CACHE/backports-daemons.log" 2>&1 &
    local deadline=$((SECONDS + 60))
    until virsh_ version >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "libvirtd of $ROOT did not answer within 60 s (see $CACHE/backports-daemons.log)"
        sleep 0.2
    done
    network
    log "up: $(virsh_ version | tr -s ' \n' ' ')"
    echo "$URI"
}

# The isolated test network of tools/setup-host.sh, in this host's namespace.
network() {
    local xml
    # shellcheck source=lib/test-network.sh source-path=SCRIPTDIR
    . "$repo/tools/lib/test-network.sh"
    xml=$(mktemp)
    test_network_xml "$NETWORK" >"$xml"
    virsh_ net-info "$NETWORK" >/dev/null 2>&1 || virsh_ net-define "$xml" >/dev/null
    rm -f "$xml"
    local state
    state=$(virsh_ net-info "$NETWORK")
    grep -q '^Active: *yes' <<<"$state" || virsh_ net-start "$NETWORK" >/dev/null
}

status() {
    running || { log "not running"; return 1; }
    echo "uri: $URI"
    echo "libvirtd: $(pid_of libvirt/libvirtd)  virtlogd: $(pid_of virtlogd)"
    echo "packages: $(versions)"
    virsh_ version --daemon
}

# Wait (with a deadline) until PID has exited.
wait_gone() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

down() {
    if running; then
        local d pid
        for d in $(virsh_ list --name --all); do
            virsh_ destroy "$d" >/dev/null 2>&1 || true
            virsh_ undefine --nvram "$d" >/dev/null 2>&1 || true
        done
        virsh_ net-destroy "$NETWORK" >/dev/null 2>&1 || true
        for d in libvirt/libvirtd virtlogd; do
            pid=$(pid_of "$d") || continue
            kill "$pid"
            wait_gone "$pid" 30 || { log "$d ($pid) ignored SIGTERM"; kill -9 "$pid"; }
        done
    fi
    # Whatever still runs in the host's network namespace (a QEMU left by
    # a crash: each QEMU has a mount namespace of its own, but the daemons'
    # network namespace) is found by it, never by name.
    local p
    if [ -e "/run/netns/$NETNS" ]; then
        for p in $(ip netns pids "$NETNS"); do
            log "stopping leftover $p ($(cat "/proc/$p/comm" 2>/dev/null))"
            kill -9 "$p" 2>/dev/null || true
        done
    fi
    if grep -q " $ROOT/" /proc/self/mountinfo; then
        die "mounts under $ROOT are visible here: they should only exist in its namespace"
    fi
    if [ -e "/run/netns/$NETNS" ]; then
        ip netns delete "$NETNS"
    fi
    log "down"
}

case ${1:-} in
build) build ;;
up) up ;;
uri) running && echo "$URI" ;;
status) status ;;
down) down ;;
_inside) inside ;;
*) die "usage: $0 build|up|uri|status|down" ;;
esac
