#!/bin/sh
# Step "entropy": mix 64 fresh host bytes into the guest's pool and credit
# 64 more, reseeding the CRNG at once (nls-reseed, or python3's ioctls).
# $1: the batch's private directory, holding "mix" and "credit".
# Exit 3 (skipped): no tool to credit with; the mixed bytes still count at
# the CRNG's next reseed.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

cat "$1/mix" > /dev/urandom || exit 1
if [ -x /usr/sbin/nls-reseed ]; then
    exec /usr/sbin/nls-reseed < "$1/credit"
elif command -v python3 >/dev/null 2>&1; then
    exec python3 -c '
import fcntl, os, struct, sys
seed = sys.stdin.buffer.read(512)
fd = os.open("/dev/random", os.O_WRONLY)
fcntl.ioctl(fd, 0x40085203, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
fcntl.ioctl(fd, 0x5207)
print("credited %d bytes and reseeded the CRNG" % len(seed))' < "$1/credit"
fi
exit 3
