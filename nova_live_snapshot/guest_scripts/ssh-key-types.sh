#!/bin/sh
# Before step "ssh_host_keys": the SSH host key types the guest has, one a
# line, so that the host can make new keys of the same types meanwhile.
# Exit 3 (skipped): no ssh-keygen or no /etc/ssh.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

command -v ssh-keygen >/dev/null 2>&1 || exit 3
[ -d /etc/ssh ] || exit 3
for f in /etc/ssh/ssh_host_*_key; do
    [ -f "$f" ] && t=${f#/etc/ssh/ssh_host_} && echo "${t%_key}"
done
true
