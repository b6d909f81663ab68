#!/bin/sh
# Step "hostname": the clone's name as the kernel's hostname, also in
# /etc/hostname and /etc/hosts. Through /proc/sys/kernel/hostname, read
# back from there: no hostname process (each process start costs 0.1-1 s
# in a freshly restored TCG clone), and /etc/hosts is rewritten only when it
# names the old hostname.
# $1: the new hostname (an engine-made label).
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

k=/proc/sys/kernel/hostname
old=
now=
if read -r old 2>/dev/null < $k && { echo "$1" > $k; } 2>/dev/null; then
    read -r now < $k
else
    old=$(hostname)
    hostname "$1" || exit 1
    now=$(hostname)
fi
[ "$now" = "$1" ] || exit 1
[ -f /etc/hostname ] && echo "$1" > /etc/hostname
named=
if [ -n "$old" ] && [ -f /etc/hosts ]; then
    while IFS= read -r line; do
        case $line in
            *"$old"*) named=1; break ;;
        esac
    done < /etc/hosts
fi
if [ -n "$named" ]; then
    sed -i "s/$old/$1/g" /etc/hosts || exit 1
fi
# No hostnamectl: systemd-hostnamed (started on demand, 0.15 s under TCG)
# would only write what is written above; journald and others follow the
# kernel's hostname.
echo "$old -> $now"
