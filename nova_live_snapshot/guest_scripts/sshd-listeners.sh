#!/bin/sh
# Not a step: the function ssh-install-keys.sh and ssh-check.sh share,
# prepended to each. sshd_listeners PID prints the inodes of the listening
# TCP sockets process PID holds, one a line: the sockets' inodes from the
# process's descriptors (one stat), kept where /proc/net/tcp or tcp6 lists
# them in state LISTEN (0A), read without starting a process.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

sshd_listeners() {
    # A descriptor that closes while it is looked at is no listening socket
    # to wait for; nothing readable at all means the process is gone.
    fds=$(stat -L -c %i "/proc/$1"/fd/* 2>/dev/null)
    [ -n "$fds" ] || return 1
    for t in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$t" ] || continue
        # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...
        # shellcheck disable=SC2034
        while read -r sl loc rem st q tm rt uid to ino rest; do
            [ "$st" = 0A ] || continue
            for f in $fds; do
                if [ "$f" = "$ino" ]; then
                    echo "$ino"
                fi
            done
        done < "$t"
    done
    # Not the status of the last comparison: another program's listening
    # socket last in the table (PostgreSQL's, a JVM's) is no failure.
    return 0
}
