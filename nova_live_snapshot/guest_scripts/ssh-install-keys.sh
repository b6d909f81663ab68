#!/bin/sh
# Step "ssh_host_keys", first half, link still down: new host keys of the
# types the guest has replace the old ones, and a running sshd reloads.
# The host made ed25519, ecdsa and RSA keys (natively, in parallel with the
# restore) and staged them with sshd's modes; a type the guest has and the
# host did not make, the guest makes itself.
# Reload: SIGHUP makes sshd close its listening sockets and re-execute
# itself, and the new image reads the host keys before it listens again
# (what "systemctl reload ssh" does, without a systemctl process or a
# restart). The step waits until the old listening sockets are closed: from
# then on no connection can reach an sshd holding the old keys (ssh-check.sh
# checks the new listeners after link up). Without a pid file, systemctl
# try-restart as before.
# $1: the batch's private directory, holding ssh_host_*_key[.pub];
# $2: the hostname for the comment of keys made here.
# Prints "types T...", "made T..." (made here), "sshd hup PID INODE...",
# "sshd restarted" or "sshd none", then the fingerprints of keys made here.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

command -v ssh-keygen >/dev/null 2>&1 || exit 3
[ -d /etc/ssh ] || exit 3
cd /etc/ssh || exit 1
staged=$1
types=
for f in ssh_host_*_key; do
    [ -f "$f" ] || continue
    t=${f#ssh_host_}
    types="$types ${t%_key}"
done
[ -n "$types" ] || exit 3
set --
made=
for t in $types; do
    k=ssh_host_${t}_key
    if [ -f "$staged/$k" ] && [ -f "$staged/$k.pub" ]; then
        # Replaced by a rename: never a moment without a key.
        set -- "$@" "$staged/$k" "$staged/$k.pub"
    else
        rm -f "$k" "$k.pub" || exit 1
        ssh-keygen -q -t "$t" -N '' -C "root@$2" -f "$k" || exit 1
        made="$made $t"
    fi
done
if [ $# -gt 0 ]; then
    mv "$@" . || exit 1
fi
echo "types$types"
echo "made$made"
pid=
[ -r /run/sshd.pid ] && read -r pid < /run/sshd.pid
comm=
[ -n "$pid" ] && read -r comm 2>/dev/null < "/proc/$pid/comm"
if [ "$comm" = sshd ]; then
    old=$(sshd_listeners "$pid") || exit 1
    kill -HUP "$pid" || exit 1
    i=0
    s=0.01
    while [ -n "$old" ]; do
        open=
        for t in /proc/net/tcp /proc/net/tcp6; do
            [ -r "$t" ] || continue
            # shellcheck disable=SC2034
            while read -r sl loc rem st q tm rt uid to ino rest; do
                for o in $old; do
                    [ "$o" = "$ino" ] && open=1
                done
            done < "$t"
        done
        [ -z "$open" ] && break
        i=$((i + 1))
        [ $i -lt 200 ] || { echo "sshd kept its old sockets"; exit 1; }
        # Looks further apart (0.01, 0.05, then 0.1 s): each sleep is a
        # process, taking the CPU from the sshd it waits for.
        sleep $s
        case $s in 0.01) s=0.05 ;; 0.05) s=0.1 ;; esac
    done
    # One word an inode.
    # shellcheck disable=SC2086
    echo "sshd hup $pid" $old
elif command -v systemctl >/dev/null 2>&1 && \
        systemctl try-restart ssh.service sshd.service >/dev/null 2>&1; then
    echo "sshd restarted"
else
    echo "sshd none"
fi
if [ -n "$made" ]; then
    for t in $made; do
        cat "ssh_host_${t}_key.pub"
    done | ssh-keygen -lf -
fi
