#!/bin/sh
# Step "network", second half, link up (the host has set the carrier): the
# client dhcp-stop.sh named asks for a lease with the new identity; waits
# for the address.
# $1: the interface, $2: the client. Prints the address, then
# "waited <uptime before> <uptime after>".
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=$1
ip link set dev "$ifc" up
read -r t0 _ < /proc/uptime
case $2 in
    dhclient) dhclient -1 "$ifc" || exit 1 ;;
    udhcpc) udhcpc -b -i "$ifc" -s /usr/share/udhcpc/default.script \
        >/dev/null 2>&1 || exit 1 ;;
esac
i=0
while [ $i -lt 300 ]; do
    addr=$(ip -o -4 addr show dev "$ifc" | awk '{print $4}' | head -n 1)
    if [ -n "$addr" ]; then
        read -r t1 _ < /proc/uptime
        echo "$addr"
        echo "waited $t0 $t1"
        exit 0
    fi
    i=$((i + 1)); sleep 0.1
done
exit 1
