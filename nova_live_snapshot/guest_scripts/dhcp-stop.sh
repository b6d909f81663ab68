#!/bin/sh
# Step "network", first half, while the link is still down: stop (or
# restart) the DHCP client that holds the source's lease, and name it. A
# client that saw the link come up with the source's identity would ask for
# the source's lease (same client identifier, hostname, address) before
# anything could replace it, and one stopped with a release would free the
# source's lease: neither must reach the network, and with no carrier
# nothing does.
# $1: the interface. Prints networkd, dhclient or udhcpc; exit 3: none.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=$1
if command -v networkctl >/dev/null 2>&1 && \
        networkctl status "$ifc" 2>/dev/null | grep -q 'Network File: /'; then
    # networkd's DHCP client identifier derives from the machine-id, which
    # it read at start: restarted now, it asks with the new one once the
    # carrier appears.
    systemctl restart systemd-networkd.service || exit 1
    echo networkd
elif command -v dhclient >/dev/null 2>&1; then
    dhclient -x "$ifc" >/dev/null 2>&1
    echo dhclient
elif pid=$(pidof udhcpc); then
    # A fresh client asks for a lease with the new MAC; signalling the old
    # one (release, renew) raced with its own state machine. Unquoted: one
    # word a PID.
    # shellcheck disable=SC2086
    kill $pid
    echo udhcpc
else
    exit 3
fi
