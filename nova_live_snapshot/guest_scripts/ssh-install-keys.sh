#!/bin/sh
# Step "ssh_host_keys": old host keys go, the new ones take their place with
# sshd's modes, and sshd restarts with them. With no staged keys (no
# ssh-keygen on the host) the guest makes its own.
# $1: the batch's private directory, holding ssh_host_*_key[.pub].
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

cd /etc/ssh || exit 1
rm -f ssh_host_*key ssh_host_*key.pub
set -- "$1"/ssh_host_*
if [ -f "$1" ]; then
    mv "$@" . || exit 1
else
    ssh-keygen -A >/dev/null || exit 1
fi
chmod 600 ssh_host_*key
chmod 644 ssh_host_*key.pub
if command -v systemctl >/dev/null 2>&1; then
    systemctl try-restart ssh.service sshd.service >/dev/null 2>&1 || true
fi
# One ssh-keygen for every key (0.2 s each under TCG).
cat ssh_host_*_key.pub | ssh-keygen -lf -
