#!/bin/sh
# Step "network", first half, last before the link comes up: stop the DHCP
# client that holds the source's lease, wait until it is gone, then flush
# the source's addresses, and name the client. A client that saw the link
# come up with the source's identity would ask for the source's lease
# (same client identifier, hostname, address) before anything could
# replace it, and one stopped with a release would free the source's
# lease: neither must reach the network, and with no carrier nothing does.
# Flushed only now, so that no client still running can put an address of
# the source back; no neighbour ever maps the source's address to a clone.
# $1: the clone's MAC (the interface mac.sh gave it). Prints networkd,
# dhclient, udhcpc or none, then the interface; exit 3: no interface with
# that MAC.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=$(iface_with_mac "$1")
[ -n "$ifc" ] || exit 3

# The PIDs of the processes named $1 (as /proc/PID/comm has it).
pids_of() {
    for p in /proc/[0-9]*; do
        c=
        read -r c 2>/dev/null < "$p/comm"
        [ "$c" = "$1" ] && echo "${p#/proc/}"
    done
}

# Wait until none of the PIDs given runs (gone, or a zombie).
wait_gone() {
    i=0
    for p in "$@"; do
        while [ -d "/proc/$p" ]; do
            s=
            read -r s 2>/dev/null < "/proc/$p/stat"
            case $s in *") Z "*|'') break ;; esac
            i=$((i + 1))
            [ $i -lt 1500 ] || { echo "process $p did not end"; return 1; }
            sleep 0.02
        done
    done
}

idx=
read -r idx < "/sys/class/net/$ifc/ifindex"
networkd=
if [ -n "$idx" ] && [ -r "/run/systemd/netif/links/$idx" ] && \
        command -v systemctl >/dev/null 2>&1; then
    while IFS= read -r line; do
        case $line in NETWORK_FILE=/*) networkd=1; break ;; esac
    done < "/run/systemd/netif/links/$idx"
fi
if [ -n "$networkd" ]; then
    # networkd's DHCP client identifier derives from the machine-id, which
    # it read at start: restarted now, it asks with the new one once the
    # carrier appears. Not waiting for its start (the lease wait after link
    # up does), only for the old one to end.
    old=$(pids_of systemd-network)
    systemctl restart --no-block systemd-networkd.service || exit 1
    # One word a PID.
    # shellcheck disable=SC2086
    wait_gone $old || exit 1
    client=networkd
elif command -v dhclient >/dev/null 2>&1; then
    old=$(pids_of dhclient)
    dhclient -x "$ifc" >/dev/null 2>&1
    # shellcheck disable=SC2086
    wait_gone $old || exit 1
    client=dhclient
elif old=$(pidof udhcpc); then
    # A fresh client asks for a lease with the new MAC; signalling the old
    # one (release, renew) raced with its own state machine.
    # shellcheck disable=SC2086
    kill $old
    # shellcheck disable=SC2086
    wait_gone $old || exit 1
    client=udhcpc
else
    client=none
fi
ip addr flush dev "$ifc" scope global || exit 1
echo "$client"
echo "$ifc"
