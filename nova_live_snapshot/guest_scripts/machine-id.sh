#!/bin/sh
# Step "machine_id": a new /etc/machine-id (and D-Bus's copy), read back.
# $1: the new id (32 hex digits).
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

[ -f /etc/machine-id ] || exit 3
echo "$1" > /etc/machine-id || exit 1
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    echo "$1" > /var/lib/dbus/machine-id
fi
read -r id < /etc/machine-id
[ "$id" = "$1" ] || exit 1
echo "$id"
