# shellcheck shell=bash
# What tools/build-test-guest.sh and tools/build-debian-guest.sh share: logging,
# apt, the stamp check, the lock, the temporary build directory and the
# replacement of OUTDIR by rename. Sourced by bash scripts that run under
# `set -euo pipefail`; sourcing it only defines the functions below.
#
# Call build_init first (log and die need it), then set_outdir.
#
# Variables the sourcing script sets and these functions read:
#   self       the absolute path of the build script (for the stamp)
#   OUTPUTS    the files a complete OUTDIR holds, guest.json among them
#   guest_src  the directory whose syslinux.cfg goes on the boot partition
# Variables these functions set (and the script may read):
#   build_name, build_start, apt_opts, apt_updated   (build_init)
#   outdir: absolute, no trailing slash              (set_outdir)
#   parent                                           (lock_outdir)
#   tmp, work, stage                                 (make_build_dir)
# shellcheck disable=SC2154 # self and guest_src: set by the sourcing script

# build_init NAME: NAME prefixes every message; also sets up apt.
build_init() {
    build_name=$1
    build_start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-q)
    # As root, apt-get (download, install) would warn that user _apt cannot
    # write to the current directory or some other.
    if [ "$(id -u)" = 0 ]; then
        apt_opts+=(-o APT::Sandbox::User=root)
    fi
    apt_updated=
}

log() { echo "$build_name: [$((SECONDS - build_start))s] $*" >&2; }
die() { echo "$build_name: error: $*" >&2; exit 1; }

# set_outdir DEFAULT [OUTDIR]: outdir=OUTDIR (DEFAULT when it is empty or
# not given), without a trailing slash, made absolute.
set_outdir() {
    outdir=${2:-$1}
    outdir=${outdir%/}
    case $outdir in
    /*) ;;
    *) outdir=$PWD/$outdir ;;
    esac
}

# --- apt -------------------------------------------------------------------------
apt_update_once() {
    [ -n "$apt_updated" ] && return 0
    log "apt-get update"
    apt-get "${apt_opts[@]}" update >&2
    apt_updated=1
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# install_missing PKG...: apt-get install those of PKG that are not installed.
install_missing() {
    local missing=() p
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt_update_once
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >&2
}

# --- Stamp -----------------------------------------------------------------------
sha256_of() { sha256sum <"$1" | cut -d' ' -f1; }

# stamp_scripts: the stamp's lines for the code that builds: the build
# script and this library (a change to either rebuilds the guest).
stamp_scripts() {
    echo "script $(sha256_of "$self")"
    echo "lib/build-common.sh $(sha256_of "${BASH_SOURCE[0]}")"
}

# outputs_stamp: the stamp in OUTDIR/guest.json, nothing when an output is
# missing or empty.
outputs_stamp() {
    local f
    for f in "${OUTPUTS[@]}"; do
        [ -s "$outdir/$f" ] || return 0
    done
    sed -n 's/^ *"stamp": "\([0-9a-f]*\)".*/\1/p' "$outdir/guest.json"
}

# exit_if_built STAMP [MESSAGE]: when OUTDIR's outputs carry STAMP, log
# MESSAGE (by default that OUTDIR is up to date), print OUTDIR on stdout and
# exit 0.
exit_if_built() {
    [ "$(outputs_stamp)" = "$1" ] || return 0
    log "${2:-up to date: $outdir (stamp ${1:0:12})}"
    echo "$outdir"
    exit 0
}

# --- Build directory -------------------------------------------------------------
# lock_outdir [DIR...]: create OUTDIR's parent (in parent) and DIRs, then
# hold $outdir.lock on fd 9 until the script ends.
lock_outdir() {
    parent=$(dirname "$outdir")
    mkdir -p "$parent" "$@"
    # One build per OUTDIR at a time; a second one waits, then finds it done.
    exec 9>"$outdir.lock"
    flock 9
}

# refuse_foreign_outdir: die when OUTDIR is something else than a guest
# (not empty and no guest.json): it is not replaced.
refuse_foreign_outdir() {
    if [ -e "$outdir" ] && [ ! -e "$outdir/guest.json" ] \
        && [ -n "$(ls -A "$outdir" 2>/dev/null)" ]; then
        die "$outdir exists, is not empty and holds no guest.json: not replacing it"
    fi
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r
}

# cleanup_build_dir: the EXIT trap make_build_dir sets: unmount what is
# still mounted below tmp, then remove it.
cleanup_build_dir() {
    local m left
    for m in $(mounts_under "$tmp"); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    left=$(mounts_under "$tmp")
    if [ -n "$left" ]; then
        # Never rm -rf through a mount (a bound /dev, /proc...).
        echo "$build_name: still mounted, not removing $tmp: $left" >&2
        return
    fi
    rm -rf --one-file-system "$tmp"
}

# make_build_dir: a temporary directory tmp next to OUTDIR (after
# lock_outdir), removed when the script exits, with the empty directories
# work (scratch) and stage (what becomes OUTDIR).
make_build_dir() {
    tmp=$(mktemp -d "$parent/.$(basename "$outdir").build.XXXXXX")
    trap cleanup_build_dir EXIT
    work=$tmp/work
    stage=$tmp/out
    mkdir -p "$work" "$stage"
}

# publish_outputs: replace OUTDIR by stage, by rename.
publish_outputs() {
    chmod 0755 "$stage"
    chmod 0644 "$stage"/*
    # Replace OUTDIR by rename (a QEMU run by libvirt-qemu reads the disk, so
    # everything stays world-readable).
    if [ -e "$outdir" ]; then
        mv -T "$outdir" "$tmp/old"
    fi
    mv -T "$stage" "$outdir"
}

# --- Boot partition --------------------------------------------------------------
# fat_add_boot_files IMAGE: copy stage/vmlinuz, stage/initrd.img and
# guest_src/syslinux.cfg into the FAT filesystem image file IMAGE, all three
# time-stamped SOURCE_DATE_EPOCH (mcopy -m keeps it, and mtools honours
# SOURCE_DATE_EPOCH: no build-time time stamps). Exports MTOOLS_SKIP_CHECK=1,
# which the syslinux --install that follows relies on too.
fat_add_boot_files() {
    local img=$1 f
    cp "$guest_src/syslinux.cfg" "$work/syslinux.cfg"
    touch -d "@$SOURCE_DATE_EPOCH" "$stage/vmlinuz" "$stage/initrd.img" "$work/syslinux.cfg"
    export MTOOLS_SKIP_CHECK=1
    for f in "$stage/vmlinuz" "$stage/initrd.img" "$work/syslinux.cfg"; do
        mcopy -m -i "$img" "$f" "::$(basename "$f")"
    done
}

# syslinux_cmdline: the kernel command line (the first APPEND) of
# guest_src/syslinux.cfg.
syslinux_cmdline() {
    sed -n 's/^[[:space:]]*APPEND[[:space:]]*//p' "$guest_src/syslinux.cfg" | head -n 1
}
