#!/bin/sh
# Step "hooks": the executables in the hooks directory, in name order, with
# the clone's name and UUID.
# $1: the clone's name, $2: its UUID, $3: the hooks directory.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

[ -d "$3" ] || exit 3
ran=
for f in "$3"/*; do
    if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
    "$f" "$1" "$2" || { echo "$f exited $?"; exit 1; }
    ran="$ran ${f##*/}"
done
echo "ran:${ran:- none}"
