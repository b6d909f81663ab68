#!/bin/bash
# Prepare this host to run live-image tests: install the Debian packages that
# bindep.txt lists, create what libvirtd's QEMU driver expects, start virtlogd
# and libvirtd when they are not running (there is no systemd here), and check
# that qemu:///system answers.
#
# Idempotent: a second run installs nothing and starts nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "setup-host: $*" >&2; }

missing=()
for pkg in $("$root/tools/bindep-packages.sh"); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    # Maintainer scripts (mariadb-server, rabbitmq-server) start their
    # service through invoke-rc.d; without an init system that fails or
    # leaves a daemon nobody owns. A policy-rc.d answering 101 ("action
    # forbidden") makes them skip the start; the test cloud starts its own.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if [ -n "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
fi

# libvirt-daemon-system would create these; we do not install it because its
# maintainer scripts expect systemd.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null \
    || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
# What Debian's udev rule does: /dev/kvm belongs to group kvm. Guests here
# run under TCG (nested KVM hangs), but libvirtd probes QEMU's capabilities
# as root (KVM found) and then validates the cached result as the QEMU user:
# if that user cannot open /dev/kvm the cache is judged stale on every
# lookup and QEMU is re-probed for seconds on every domain definition.
if [ -c /dev/kvm ]; then
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi
mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt

# libvirtd's read-write socket for the libvirt group (whom Debian's
# libvirt-daemon-system admits through polkit), so that an unprivileged nova-compute
# (the test cloud's runs as nova, a member) can reach it. Debian lets polkit
# authorise that group; no polkit daemon runs here (no systemd, no system
# bus), so the socket's group and mode are the check and auth is none:
# membership of libvirt is root on the host either way. Written only where
# the file sets none of these; takes effect when libvirtd starts.
getent group libvirt >/dev/null || groupadd -r libvirt
conf=/etc/libvirt/libvirtd.conf
if ! grep -qsE '^[[:space:]]*(unix_sock_group|unix_sock_rw_perms|auth_unix_rw)[[:space:]]*=' "$conf"; then
    mkdir -p /etc/libvirt
    cat >>"$conf" <<'EOF'
# tools/setup-host.sh: the read-write socket for the libvirt group.
unix_sock_group = "libvirt"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
EOF
fi

# Debian ships the stock configuration as *.dpkg-new when the package was
# unpacked without its configure step having run; adopt it.
for f in /etc/libvirt/*.dpkg-new; do
    [ -e "$f" ] && [ ! -e "${f%.dpkg-new}" ] && cp "$f" "${f%.dpkg-new}"
done

# PID 1 on these machines does not reap orphans. libvirt daemonizes QEMU
# (double fork), so every QEMU that exits, including the short-lived ones
# libvirtd starts to probe capabilities, would stay a zombie; libvirtd then
# waits for a probe process that never disappears while holding its
# capabilities lock, and every domain definition hangs behind it. Running the
# daemons under `tini -s` (a child subreaper) makes orphans tini's to reap.
running() { pgrep -x "$1" >/dev/null; }
start_reaped() {
    local name=$1; shift
    log "starting $name under tini"
    setsid tini -s -- "$@" </dev/null >>"/var/log/libvirt/$name.out" 2>&1 &
}
# libvirtd runs inside a network namespace of its own, so that every network
# it creates for guests (bridge, dnsmasq, firewall rules) and every guest's
# traffic stays there: nothing but the unix socket connects it to the host.
# Only the network namespace is entered (nsenter, not `ip netns exec`, which
# would also give libvirtd a mount namespace of its own).
NETNS=${NLS_NETNS:-nls-test}
if [ ! -e "/run/netns/$NETNS" ]; then
    log "creating network namespace $NETNS"
    ip netns add "$NETNS"
fi
ip -n "$NETNS" link set lo up
running virtlogd || start_reaped virtlogd virtlogd
running libvirtd || start_reaped libvirtd nsenter --net="/run/netns/$NETNS" libvirtd
for d in virtlogd libvirtd; do
    pid=$(pgrep -xo "$d" || true)
    ppid=$([ -n "$pid" ] && ps -o ppid= -p "$pid" | tr -d ' ' || true)
    parent=$([ -n "$ppid" ] && ps -o comm= -p "$ppid" || true)
    [ "$parent" = tini ] || log "warning: $d (pid ${pid:-none}) does not run under tini; QEMU processes it starts will not be reaped: stop it and rerun this script"
done
sock=/var/run/libvirt/libvirt-sock
if [ -S "$sock" ] && [ "$(stat -c %G:%a "$sock")" != libvirt:770 ]; then
    log "note: libvirtd (started before $conf gave its socket to the libvirt group) has a $(stat -c %G:%a "$sock") socket; the test cloud's nova-compute reaches it through a relay until libvirtd is restarted"
fi
pid=$(pgrep -xo libvirtd || true)
if [ -n "$pid" ] && [ "$(stat -L -c %i "/proc/$pid/ns/net")" != \
        "$(stat -L -c %i "/run/netns/$NETNS")" ]; then
    log "warning: libvirtd (pid $pid) is not in network namespace $NETNS: stop it and rerun this script"
fi

# Wait (with a deadline) until the daemon answers.
deadline=$((SECONDS + 30))
until virsh -c qemu:///system version >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        log "libvirtd did not answer on qemu:///system within 30 s"
        exit 1
    fi
    sleep 0.2
done
virsh -c qemu:///system version | sed 's/^/setup-host: /' >&2

# The isolated test network (tools/lib/test-network.sh), inside the
# namespace.
NETWORK=${NLS_NETWORK:-nls-test}
# shellcheck source=lib/test-network.sh source-path=SCRIPTDIR
. "$root/tools/lib/test-network.sh"
netxml=$(mktemp)
test_network_xml "$NETWORK" >"$netxml"
if virsh -c qemu:///system net-info "$NETWORK" >/dev/null 2>&1 && \
        ! grep -q "<lease expiry='60'" \
            <<<"$(virsh -c qemu:///system net-dumpxml "$NETWORK")"; then
    log "redefining network $NETWORK"
    virsh -c qemu:///system net-destroy "$NETWORK" >/dev/null 2>&1 || true
    virsh -c qemu:///system net-undefine "$NETWORK" >/dev/null
fi
if ! virsh -c qemu:///system net-info "$NETWORK" >/dev/null 2>&1; then
    log "defining isolated network $NETWORK"
    virsh -c qemu:///system net-define "$netxml" >/dev/null
fi
rm -f "$netxml"
# (Read the state first: grep -q would close the pipe early, and pipefail
# would then report virsh's SIGPIPE as "not active".)
state=$(virsh -c qemu:///system net-info "$NETWORK")
if ! grep -q '^Active: *yes' <<<"$state"; then
    log "starting network $NETWORK"
    virsh -c qemu:///system net-start "$NETWORK" >/dev/null
fi
