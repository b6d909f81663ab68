#!/bin/sh
# Step "entropy": mix 64 fresh host bytes into the guest's pool and credit
# 64 more, reseeding the CRNG at once: nls-reseed, else perl (perl-base is
# in every Debian and Ubuntu; it starts in a third of python3's time under
# TCG), else python3, each one process for both.
# $1: the batch's private directory, holding "mix" and "credit".
# Exit 3 (skipped): no tool to credit with; the mixed bytes still count at
# the CRNG's next reseed.
#
# Runs in the guest (POSIX sh: busybox and full distributions) as a step of
# nova_live_snapshot.identity: "exit" ends the step, exit 3 means "not
# applicable here". Arguments are engine-made (MACs, hex ids, hostname
# labels), never taken from the image.

if [ -x /usr/sbin/nls-reseed ]; then
    cat "$1/mix" > /dev/urandom || exit 1
    exec /usr/sbin/nls-reseed < "$1/credit"
elif command -v perl >/dev/null 2>&1; then
    # RNDADDENTROPY (_IOW('R', 3, int[2])) and RNDRESEEDCRNG (_IO('R', 7)).
    # shellcheck disable=SC2016
    exec perl -e '
my ($m, $c, $mix, $seed);
open($m, "<", "$ARGV[0]/mix") and read($m, $mix, 512) or die "mix: $!";
open($c, "<", "$ARGV[0]/credit") and read($c, $seed, 512) or die "seed: $!";
open(my $r, ">", "/dev/random") or die "/dev/random: $!";
syswrite($r, $mix) == length($mix) or die "mixing: $!";
ioctl($r, 0x40085203, pack("ii", length($seed) * 8, length($seed)) . $seed)
    or die "RNDADDENTROPY: $!";
ioctl($r, 0x5207, 0) or die "RNDRESEEDCRNG: $!";
printf "mixed %d bytes, credited %d and reseeded the CRNG\n", length($mix), length($seed);' "$1"
elif command -v python3 >/dev/null 2>&1; then
    exec python3 -c '
import fcntl, os, struct, sys
d = sys.argv[1]
mix = open(d + "/mix", "rb").read(512)
seed = open(d + "/credit", "rb").read(512)
fd = os.open("/dev/random", os.O_WRONLY)
assert os.write(fd, mix) == len(mix)
fcntl.ioctl(fd, 0x40085203, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
fcntl.ioctl(fd, 0x5207)
print("mixed %d bytes, credited %d and reseeded the CRNG" % (len(mix), len(seed)))' "$1"
fi
cat "$1/mix" > /dev/urandom || exit 1
exit 3
