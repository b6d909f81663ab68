#!/bin/sh
# Not a step: the function mac.sh and dhcp-stop.sh share, prepended to
# each. iface_with_mac MAC prints the name of the interface whose address
# is MAC (nothing when none is), read from /sys without a process.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as part of
# a step of nova_live_snapshot.identity. Arguments are engine-made (MACs,
# hex ids, hostname labels), never taken from the image.

iface_with_mac() {
    for d in /sys/class/net/*; do
        a=
        read -r a 2>/dev/null < "$d/address"
        if [ "$a" = "$1" ]; then
            echo "${d##*/}"
        fi
    done
}
