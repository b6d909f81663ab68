#!/bin/sh
# Step "network", second half, link up (the host has set the carrier): the
# client dhcp-stop.sh named asks for a lease with the new identity (the
# restarted networkd on its own); waits for the address, one ip a look.
# $1: the interface, $2: the client. Prints the address, then
# "waited <uptime before> <uptime after>".
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

ifc=$1
client=$2
flags=0
read -r flags < "/sys/class/net/$ifc/flags"
if [ $((flags & 1)) -eq 0 ]; then
    ip link set dev "$ifc" up || exit 1
fi
read -r t0 _ < /proc/uptime
case $client in
    dhclient) dhclient -1 "$ifc" || { echo "dhclient -1 failed"; exit 1; } ;;
    udhcpc) udhcpc -b -i "$ifc" -s /usr/share/udhcpc/default.script \
        >/dev/null 2>&1 || { echo "udhcpc failed"; exit 1; } ;;
    networkd) ;;
    *) echo "no DHCP client named '$client' is known"; exit 1 ;;
esac
set -f
s=0.05
while :; do
    # "2: eth0    inet 10.77.0.2/16 brd ...": the fourth word.
    # shellcheck disable=SC2046
    set -- $(ip -o -4 addr show dev "$ifc")
    if [ -n "${4:-}" ]; then
        read -r t1 _ < /proc/uptime
        echo "$4"
        echo "waited $t0 $t1"
        exit 0
    fi
    read -r now _ < /proc/uptime
    # As long as the old loop's 300 looks took on a loaded host.
    [ $((${now%.*} - ${t0%.*})) -lt 90 ] || {
        echo "no IPv4 address on $ifc after 90 s ($client)"; exit 1; }
    # Looks further apart (0.05, 0.1, then 0.2 s): each starts two
    # processes, which take the CPU from the DHCP client starting.
    sleep $s
    case $s in 0.05) s=0.1 ;; 0.1) s=0.2 ;; esac
done
