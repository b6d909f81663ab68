#!/bin/sh
# Step "mac": give the guest interface that still carries the image's MAC
# the clone's MAC (virtio-net's MAC is migration state: the domain XML alone
# does not change what the guest uses), checked from inside. The source's
# addresses are flushed by dhcp-stop.sh, once no DHCP client can put them
# back; the link is down until then.
# $1: the image's MAC, $2: the clone's. Prints the interface's name.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=$(iface_with_mac "$1")
[ -n "$ifc" ] || exit 3
ip link set dev "$ifc" address "$2" || exit 1
read -r a < "/sys/class/net/$ifc/address"
[ "$a" = "$2" ] || exit 1
echo "$ifc"
