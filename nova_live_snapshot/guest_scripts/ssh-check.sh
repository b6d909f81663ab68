#!/bin/sh
# Step "ssh_host_keys", second half, after link up: the sshd that was sent
# SIGHUP listens again, on sockets other than its old ones, that is with
# the new keys it read before listening. By now it has long finished.
# $1: sshd's PID, then its old listening sockets' inodes. Prints the new
# ones.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

pid=$1
shift
i=0
s=0.05
while :; do
    new=$(sshd_listeners "$pid") || { echo "sshd $pid is gone"; exit 1; }
    fresh=
    for n in $new; do
        stale=
        for o in "$@"; do
            [ "$o" = "$n" ] && stale=1
        done
        [ -n "$stale" ] && { echo "sshd $pid still listens on $n"; exit 1; }
        fresh="$fresh $n"
    done
    if [ -n "$fresh" ]; then
        echo "sshd $pid listens again:$fresh"
        exit 0
    fi
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "sshd $pid did not listen again"; exit 1; }
    # 0.05, 0.1, then 0.2 s apart: a look starts a process (stat).
    sleep $s
    case $s in 0.05) s=0.1 ;; 0.1) s=0.2 ;; esac
done
