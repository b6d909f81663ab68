#!/bin/sh
# Step "mac": give the guest interface that still carries the image's MAC
# the clone's MAC (virtio-net's MAC is migration state: the domain XML alone
# does not change what the guest uses), checked from inside.
# $1: the image's MAC, $2: the clone's. Prints the interface's name.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=
for d in /sys/class/net/*; do
    a=
    read -r a < "$d/address" 2>/dev/null
    [ "$a" = "$1" ] && ifc=${d##*/}
done
[ -n "$ifc" ] || exit 3
ip link set dev "$ifc" address "$2" || exit 1
read -r a < "/sys/class/net/$ifc/address"
[ "$a" = "$2" ] || exit 1
# The source's addresses must not be used with the new MAC, not even for
# the moment between link up and the new lease: neighbours would map the
# source's address to this clone.
ip addr flush dev "$ifc" scope global
echo "$ifc"
