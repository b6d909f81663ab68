#!/bin/bash
# Build the Debian test guest that the live-image tests boot under libvirt: a
# real Debian 12 (bookworm) system made by debootstrap --variant=minbase, with
# systemd, Debian's generic amd64 kernel (CONFIG_VMGENID=y), sshd, the QEMU
# guest agent, python3-minimal and the same in-memory workload as the busybox
# guest. See tools/debian-guest/ for what goes into it and why.
#
# Usage: tools/build-debian-guest.sh [--apps] [OUTDIR]
#   OUTDIR defaults to ${NLS_CACHE_DIR:-/var/cache/nova-live-snapshot}/debian-guest
#   (with --apps: .../apps-guest).
#   --apps builds the apps guest instead: the same guest plus what
#   tools/apps-guest/ adds (a JVM and a JIT-sensitive Java service,
#   PostgreSQL 15 with a pgbench data set), a bigger disk and more RAM; see
#   tools/apps-guest/README.md for why it is a guest of its own.
#   The debootstrap tarball (every .deb the guest needs) is kept in
#   ${NLS_CACHE_DIR:-...}/debian-debs; NLS_DEBIAN_REFRESH=1 downloads it anew
#   (otherwise it is reused as long as the package list does not change).
#   The packages come from the repository the host's apt sources name for
#   bookworm main (as `apt-get indextargets` reports it; one-line or deb822
#   sources), checked with the keyring those sources name (Signed-By);
#   NLS_DEBIAN_MIRROR overrides the repository.
#
# Outputs in OUTDIR: debian-guest.qcow2 (the bootable disk: MBR, partition 1
# vfat with syslinux, kernel and initramfs, partition 2 the ext4 root),
# vmlinuz, initrd.img (copies of what partition 1 holds) and guest.json
# (versions, VM size, disk name, ssh host key fingerprints, stamp). The stamp
# is a sha256 over this script, tools/lib/build-common.sh, the files in
# tools/debian-guest/, the .deb files in the debootstrap tarball and the host
# packages whose bits end up in the image; when OUTDIR already holds outputs
# with the same stamp, nothing is rebuilt. The build happens in a temporary
# directory next to OUTDIR, which then replaces OUTDIR by rename. Progress
# goes to stderr; OUTDIR is printed on stdout at the end.
#
# Needs root (debootstrap, chroot). On a fresh Debian 12 machine it installs
# the build tools it lacks with apt-get --no-install-recommends.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")
# shellcheck source=lib/build-common.sh source-path=SCRIPTDIR
. "$here/lib/build-common.sh"
# shellcheck source=lib/apt-sources.sh source-path=SCRIPTDIR
. "$here/lib/apt-sources.sh"
build_init build-debian-guest
guest_src=$here/debian-guest
cache_root=${NLS_CACHE_DIR:-/var/cache/nova-live-snapshot}
flavour=debian
if [ "${1:-}" = --apps ]; then
    flavour=apps
    shift
fi
set_outdir "$cache_root/$flavour-guest" "${1:-}"
deb_cache=$cache_root/debian-debs

SUITE=bookworm
ARCH=amd64
VARIANT=minbase
HOSTNAME_=debian-guest
DISK_NAME=debian-guest.qcow2
# Every time stamp in the boot partition (FAT can store nothing before 1980).
export SOURCE_DATE_EPOCH=1700000000
# Disk layout (MiB): 1 for the MBR and alignment, partition 1 (vfat, boot),
# partition 2 (ext4, root) up to the end.
BOOT_START_MIB=1
BOOT_MIB=64
DISK_MIB=1600
ROOT_START_MIB=$((BOOT_START_MIB + BOOT_MIB))
ROOT_MIB=$((DISK_MIB - ROOT_START_MIB))
MEMORY_MIB=512
VCPUS=1
# The apps guest: tools/apps-guest/ on top (packages, rootfs, configure.sh,
# the Java service's source). Its pgbench data set (scale 4: 400,000
# accounts, about 60 MiB with indexes) fits in shared_buffers.
apps_src=$here/apps-guest
PGBENCH_SCALE=4
SHARED_BUFFERS_MB=128
if [ "$flavour" = apps ]; then
    HOSTNAME_=apps-guest
    DISK_NAME=apps-guest.qcow2
    DISK_MIB=2400
    ROOT_MIB=$((DISK_MIB - ROOT_START_MIB))
    MEMORY_MIB=1024
    [ -d "$apps_src" ] || die "missing $apps_src"
fi
OUTPUTS=("$DISK_NAME" vmlinuz initrd.img guest.json)

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
[ -d "$guest_src" ] || die "missing $guest_src"

# --- Build tools (host side) ------------------------------------------------
# syslinux and syslinux-common: their boot code is written into the image
# (syslinux --install, mbr.bin); debian-archive-keyring and gpgv: debootstrap
# checks the mirror's Release signature.
install_missing debootstrap debian-archive-keyring gpgv e2fsprogs dosfstools \
    mtools syslinux syslinux-common fdisk qemu-utils util-linux coreutils tar gzip
# javac compiles the apps guest's Java service on the host: the guest then
# needs only a JRE.
[ "$flavour" = apps ] && install_missing openjdk-17-jdk-headless
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -s "$MBR_BIN" ] || die "missing $MBR_BIN (syslinux-common)"
[ -s "$KEYRING" ] || die "missing $KEYRING (debian-archive-keyring)"

# --- Which packages ----------------------------------------------------------
# The --include list: tools/debian-guest/packages without comments.
package_lists=("$guest_src/packages")
[ "$flavour" = apps ] && package_lists+=("$apps_src/packages")
mapfile -t include < <(cat "${package_lists[@]}" | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d')
[ ${#include[@]} -gt 0 ] || die "$guest_src/packages lists no package"
include_csv=$(IFS=,; echo "${include[*]}")
debootstrap_args=(--variant="$VARIANT" --arch="$ARCH" --components=main
    --include="$include_csv" --keyring="$KEYRING")

# The debootstrap tarball is named after what determines the package set it
# resolves to (not the mirror: any bookworm mirror gives the same set).
# One per flavour (the apps guest's is named apart, so that building one
# flavour never drops the other's).
tar_key=$(echo "$SUITE $ARCH $VARIANT main $include_csv" | sha256sum | cut -c1-12)
tar_prefix=$SUITE-$ARCH-$VARIANT-
[ "$flavour" = apps ] && tar_prefix=${tar_prefix}apps-
tarball=$deb_cache/$tar_prefix$tar_key.tgz
# The sorted .deb file names the tarball holds; written once the tarball is
# complete, so its presence means the tarball is usable.
deblist=$tarball.debs

# The repository the host's apt uses for $SUITE main (deb822 or one-line
# sources), and the keyring apt checks it with (debootstrap checks the
# Release signature with the same one; its default keyring otherwise).
mirror=
keyring_args=()
find_mirror() {
    [ -n "$mirror" ] && return 0
    if [ -n "${NLS_DEBIAN_MIRROR:-}" ]; then
        mirror=$NLS_DEBIAN_MIRROR
        return 0
    fi
    local found keyring
    found=$(host_source "$SUITE" main)
    [ -n "$found" ] || die "the host's apt sources have no '$SUITE main' (set NLS_DEBIAN_MIRROR)"
    mirror=${found%%|*}
    keyring=$(source_keyring "${found#*|}")
    if [ -n "$keyring" ]; then
        keyring_args=(--keyring="$keyring")
    fi
}

# Same proxy as the host's apt, if it has one (debootstrap uses wget).
if [ -z "${http_proxy:-}" ]; then
    apt_proxy=
    eval "$(apt-config shell apt_proxy Acquire::http::Proxy)"
    if [ -n "$apt_proxy" ] && [ "$apt_proxy" != DIRECT ]; then
        export http_proxy=$apt_proxy
    fi
fi

compute_stamp() {
    {
        stamp_scripts
        echo "lib/apt-sources.sh $(sha256_of "$here/lib/apt-sources.sh")"
        local f
        # Every file under tools/debian-guest/, with its executable bit.
        while IFS= read -r f; do
            echo "guest/$f $(stat -c %a "$guest_src/$f" | cut -c1) $(sha256_of "$guest_src/$f")"
        done < <(cd "$guest_src" && find . -type f | LC_ALL=C sort)
        if [ "$flavour" = apps ]; then
            while IFS= read -r f; do
                echo "apps/$f $(stat -c %a "$apps_src/$f" | cut -c1) $(sha256_of "$apps_src/$f")"
            done < <(cd "$apps_src" && find . -type f | LC_ALL=C sort)
            echo "apps pgbench-scale $PGBENCH_SCALE shared-buffers $SHARED_BUFFERS_MB"
            dpkg-query -W -f='host ${Package}=${Version}\n' openjdk-17-jdk-headless
        fi
        echo "flavour $flavour $DISK_MIB $MEMORY_MIB"
        echo "suite $SUITE $ARCH $VARIANT"
        sed 's/^/deb /' "$deblist"
        dpkg-query -W -f='host ${Package}=${Version}\n' syslinux syslinux-common
    } | sha256sum | cut -d' ' -f1
}

if [ -z "${NLS_DEBIAN_REFRESH:-}" ] && [ -s "$deblist" ] && [ -s "$tarball" ]; then
    stamp=$(compute_stamp)
    exit_if_built "$stamp"
fi

# --- Build -------------------------------------------------------------------
lock_outdir "$deb_cache"
make_build_dir

# The debootstrap tarball: made once (under its own lock, shared by every
# OUTDIR), then reused without network access.
make_tarball() {
    exec 8>"$deb_cache/.lock"
    flock 8
    if [ -z "${NLS_DEBIAN_REFRESH:-}" ] && [ -s "$deblist" ] && [ -s "$tarball" ]; then
        exec 8>&-
        return 0
    fi
    find_mirror
    log "downloading $SUITE packages from $mirror (debootstrap --make-tarball)"
    local mt=$work/make-tarball part=$tarball.part.$$
    mkdir -p "$mt"
    if ! debootstrap "${debootstrap_args[@]}" "${keyring_args[@]}" --make-tarball="$part" \
        "$SUITE" "$mt" "$mirror" >"$work/make-tarball.log" 2>&1; then
        tail -n 30 "$work/make-tarball.log" >&2
        rm -f "$part"
        die "debootstrap --make-tarball failed"
    fi
    tar -tzf "$part" | sed -n 's#^\(\./\)\{0,1\}var/cache/apt/archives/\([^/]*\.deb\)$#\2#p' \
        | LC_ALL=C sort >"$part.debs"
    [ -s "$part.debs" ] || die "the debootstrap tarball holds no .deb"
    rm -f "$deblist"
    mv -f "$part" "$tarball"
    mv -f "$part.debs" "$deblist"
    # Keep one tarball per package list... and drop those of older lists.
    find "$deb_cache" -maxdepth 1 -name "$tar_prefix????????????.tgz*" \
        ! -name "$(basename "$tarball")" ! -name "$(basename "$deblist")" -delete
    rm -rf "$mt"
    log "tarball: $(wc -l <"$deblist") packages, $(du -h "$tarball" | cut -f1)"
    exec 8>&-
}
make_tarball

stamp=$(compute_stamp)
exit_if_built "$stamp"
refuse_foreign_outdir

root=$work/root
mkdir -p "$root"
chroot_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root LC_ALL=C LANG=C DEBIAN_FRONTEND=noninteractive
    DEBCONF_NONINTERACTIVE_SEEN=true)

# First stage: unpack the base from the tarball (no network). The mirror only
# ends up in the guest's /etc/apt/sources.list.
find_mirror
log "debootstrap first stage"
if ! debootstrap "${debootstrap_args[@]}" --foreign --unpack-tarball="$tarball" \
    "$SUITE" "$root" "$mirror" >"$work/stage1.log" 2>&1; then
    tail -n 30 "$work/stage1.log" >&2
    die "debootstrap (first stage) failed"
fi

# Before dpkg runs: the files of tools/debian-guest/rootfs (so dpkg's
# path-excludes and the initramfs settings apply from the first package on),
# and a policy-rc.d that keeps maintainer scripts from starting daemons (an
# sshd started in the chroot would listen on the build host).
cp -R --no-preserve=ownership "$guest_src/rootfs/." "$root/"
if [ "$flavour" = apps ]; then
    cp -R --no-preserve=ownership "$apps_src/rootfs/." "$root/"
    mkdir -p "$root/usr/local/lib/nls-apps"
    javac --release 17 -d "$root/usr/local/lib/nls-apps" "$apps_src/java/JitService.java" \
        || die "javac JitService.java failed"
fi
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

log "debootstrap second stage (dpkg installs ${#include[@]} packages and their dependencies)"
if ! chroot "$root" "${chroot_env[@]}" /debootstrap/debootstrap --second-stage \
    >"$work/stage2.log" 2>&1; then
    tail -n 30 "$work/stage2.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap (second stage) failed"
fi
for m in $(mounts_under "$root"); do
    umount "$m"
done

log "configuring the guest"
machine_id=$(echo "nls debian-guest machine-id $stamp" | sha256sum | cut -c1-32)
install -m 0755 "$guest_src/configure.sh" "$root/tmp/configure.sh"
mount -t proc proc "$root/proc"
chroot "$root" "${chroot_env[@]}" /bin/sh /tmp/configure.sh "$machine_id" "$HOSTNAME_" \
    || die "configure.sh failed"
if [ "$flavour" = apps ]; then
    log "configuring the apps (PostgreSQL, pgbench data set)"
    install -m 0755 "$apps_src/configure.sh" "$root/tmp/apps-configure.sh"
    chroot "$root" "${chroot_env[@]}" /bin/sh /tmp/apps-configure.sh \
        "$PGBENCH_SCALE" "$SHARED_BUFFERS_MB" || die "apps configure.sh failed"
    rm -f "$root/tmp/apps-configure.sh"
fi
umount "$root/proc"
rm -f "$root/tmp/configure.sh" "$root/usr/sbin/policy-rc.d"

# What the outputs describe.
kvers=("$root"/lib/modules/*)
if [ ${#kvers[@]} -ne 1 ] || [ ! -d "${kvers[0]}" ]; then
    die "expected one kernel in /lib/modules, found: ${kvers[*]##*/}"
fi
kver=$(basename "${kvers[0]}")
[ -f "$root/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver"
[ -f "$root/boot/initrd.img-$kver" ] || die "no /boot/initrd.img-$kver"
# shellcheck disable=SC2016 # a dpkg-query format
pkg_version() { chroot "$root" dpkg-query -W -f='${Version}' "$1"; }
kernel_pkg=linux-image-$kver
kernel_pkg_version=$(pkg_version "$kernel_pkg")
log "kernel $kver ($kernel_pkg $kernel_pkg_version)"

# The initramfs must load what mounting the root needs (or have it built in).
initrd_mods=$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver" | sed -n 's,.*/\([^/]*\)\.ko$,\1,p')
for m in virtio_pci virtio_blk ext4; do
    echo "$initrd_mods" | grep -qx "$m" \
        || grep -q "/$m.ko\$" "$root/lib/modules/$kver/modules.builtin" \
        || die "the initramfs lacks $m"
done

fingerprints=()
for t in ed25519 ecdsa rsa; do
    f=$root/etc/ssh/ssh_host_${t}_key.pub
    [ -s "$f" ] || die "no ssh host key $t"
    fp=$(chroot "$root" ssh-keygen -lf "/etc/ssh/ssh_host_${t}_key.pub" | awk '{print $2}')
    fingerprints+=("\"$t\": \"$fp\"")
done

log "cleaning the root (apt caches, docs, logs)"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root"/var/log/bootstrap.log "$root"/var/log/dpkg.log "$root"/var/log/apt/* \
    "$root"/var/log/alternatives.log
find "$root/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {} +
# What debootstrap's first stage unpacked before nls-nodoc existed.
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/* \
    "$root"/usr/share/linda/* "$root"/usr/share/groff/* "$root"/usr/share/bug/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.bash_history
[ -z "$(mounts_under "$root")" ] || die "still mounted under $root"

cp "$root/boot/vmlinuz-$kver" "$stage/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$stage/initrd.img"

# --- Disk ----------------------------------------------------------------------
log "making the ${ROOT_MIB} MiB ext4 root from the directory"
root_uuid=$(echo "nls debian-guest root $stamp" | sha256sum \
    | sed 's/^\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)\(.\{12\}\).*/\1-\2-\3-\4-\5/')
# (An existing file: mke2fs then does not announce that it creates one.)
truncate -s "${ROOT_MIB}M" "$work/root.img"
mkfs.ext4 -q -F -L debian-root -U "$root_uuid" -e remount-ro -E root_owner=0:0 \
    -d "$root" "$work/root.img" "${ROOT_MIB}M" >&2

log "making the ${BOOT_MIB} MiB vfat boot partition"
# -h: the partition starts this many sectors into the disk (the FAT boot
# sector records it; syslinux's boot code uses it to find ldlinux.sys).
mkfs.vfat --invariant -F 16 -n DEBBOOT -h $((BOOT_START_MIB * 2048)) \
    -C "$work/boot.img" $((BOOT_MIB * 1024)) >&2
fat_add_boot_files "$work/boot.img"

log "assembling the ${DISK_MIB} MiB disk"
raw=$work/disk.raw
truncate -s "${DISK_MIB}M" "$raw"
sfdisk -q --no-reread --no-tell-kernel "$raw" >&2 <<EOF
label: dos
label-id: 0x4e4c5344
unit: sectors
start=$((BOOT_START_MIB * 2048)), size=$((BOOT_MIB * 2048)), type=e, bootable
start=$((ROOT_START_MIB * 2048)), size=$((ROOT_MIB * 2048)), type=83
EOF
dd if="$work/boot.img" of="$raw" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$raw" bs=1M seek="$ROOT_START_MIB" conv=notrunc,sparse status=none
rm -f "$work/boot.img" "$work/root.img"
# syslinux's mtools-based installer into partition 1 of the image file (boot
# sector + ldlinux.sys, no loop device), then the MBR boot code, which loads
# the boot sector of the active partition.
syslinux --offset $((BOOT_START_MIB * 1024 * 1024)) --install "$raw"
dd if="$MBR_BIN" of="$raw" bs=440 count=1 conv=notrunc status=none
# Compressed (zstd: QEMU >= 5.1 reads it): ~150 MiB instead of ~420 MiB,
# and no slower to boot from; what a guest writes goes to its overlay.
qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$raw" "$stage/$DISK_NAME"
rm -f "$raw"

# --- guest.json ----------------------------------------------------------------
cmdline=$(syslinux_cmdline)
# What the apps guest serves (tools/apps-guest/README.md).
apps_json() {
    [ "$flavour" = apps ] || return 0
    cat <<APPS

  "apps": {
    "jvm": {"unit": "jit-service.service", "port": 8081,
            "java_version": "$(pkg_version openjdk-17-jre-headless)"},
    "postgres": {"unit": "postgresql@15-main.service", "port": 5432,
                 "database": "bench", "user": "postgres",
                 "pgbench_scale": $PGBENCH_SCALE,
                 "shared_buffers_mib": $SHARED_BUFFERS_MB,
                 "version": "$(pkg_version postgresql-15)"}
  },
APPS
}
fp_json=$(IFS=,; echo "${fingerprints[*]}")
fp_json=${fp_json//,/, }
cat >"$stage/guest.json" <<EOF
{
  "disk": "$DISK_NAME",
  "disk_format": "qcow2",
  "disk_virtual_mib": $DISK_MIB,
  "boot_partition": "/dev/vda1",
  "root_partition": "/dev/vda2",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "kernel_cmdline": "$cmdline",
  "kernel_version": "$kver",
  "kernel_package": "$kernel_pkg",
  "kernel_package_version": "$kernel_pkg_version",
  "debian_suite": "$SUITE",
  "debian_version": "$(cat "$root/etc/debian_version")",
  "qemu_ga_version": "$(pkg_version qemu-guest-agent)",
  "openssh_version": "$(pkg_version openssh-server)",
  "systemd_version": "$(pkg_version systemd)",
  "python3_version": "$(pkg_version python3-minimal)",
  "hostname": "$HOSTNAME_",
  "machine_id": "$machine_id",
  "ssh_host_key_fingerprints": {$fp_json},
  "memory_mib": $MEMORY_MIB,
  "vcpus": $VCPUS,
  "machine": "pc",
  "flavour": "$flavour",$(apps_json)
  "stamp": "$stamp"
}
EOF

publish_outputs
log "done: $(du -h "$outdir/$DISK_NAME" | cut -f1) disk ($DISK_MIB MiB virtual), $(du -h "$outdir/initrd.img" | cut -f1) initrd"
echo "$outdir"
