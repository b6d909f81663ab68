#!/bin/sh
# Step "hostname": the clone's name as the kernel's hostname, also in
# /etc/hostname and /etc/hosts.
# $1: the new hostname (an engine-made label).
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

old=$(hostname)
hostname "$1" || exit 1
[ -f /etc/hostname ] && echo "$1" > /etc/hostname
if [ -n "$old" ] && [ -f /etc/hosts ] && grep -q "$old" /etc/hosts; then
    sed -i "s/$old/$1/g" /etc/hosts
fi
# No hostnamectl: systemd-hostnamed (started on demand, 0.15 s under TCG)
# would only write what is written above; journald and others follow the
# kernel's hostname.
echo "$old -> $(hostname)"
