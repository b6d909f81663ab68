#!/bin/bash
# Build the test guest that the live-image tests boot under libvirt: a 64 MiB
# qcow2 disk holding a bare vfat filesystem with syslinux, Debian's generic
# amd64 kernel (it has CONFIG_VMGENID=y, the cloud kernel does not) and a
# busybox initramfs that runs the QEMU guest agent and an in-memory workload.
# Everything comes from Debian 12 packages; see tools/guest/ for what runs in
# the guest and why.
#
# Usage: tools/build-test-guest.sh [OUTDIR]
#   OUTDIR defaults to ${NLS_CACHE_DIR:-/var/cache/nova-live-snapshot}/guest.
#   Downloaded .debs are kept in ${NLS_CACHE_DIR:-...}/debs.
#
# Outputs in OUTDIR: busybox-guest.qcow2 (the bootable disk), vmlinuz,
# initrd.img and guest.json (versions, VM size, disk name, stamp). The stamp
# is a sha256 over this script, tools/lib/build-common.sh, the files in
# tools/guest/, the .deb files used and the host packages whose bits end up
# in the image; when OUTDIR already holds outputs with the same stamp,
# nothing is rebuilt. The build happens in a temporary directory next to
# OUTDIR, which then replaces OUTDIR by rename. Progress goes to stderr;
# OUTDIR is printed on stdout at the end.
#
# Needs root only to apt-get install missing build tools (on a fresh Debian
# 12 machine it installs them, with --no-install-recommends).
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")
# shellcheck source=lib/build-common.sh source-path=SCRIPTDIR
. "$here/lib/build-common.sh"
build_init build-test-guest
guest_src=$here/guest
cache_root=${NLS_CACHE_DIR:-/var/cache/nova-live-snapshot}
set_outdir "$cache_root/guest" "${1:-}"
deb_cache=$cache_root/debs

DISK_NAME=busybox-guest.qcow2
# Every time stamp in the outputs (FAT can store nothing before 1980).
export SOURCE_DATE_EPOCH=1700000000
DISK_MIB=64
MEMORY_MIB=128
VCPUS=1
OUTPUTS=("$DISK_NAME" vmlinuz initrd.img guest.json)

[ -d "$guest_src" ] || die "missing $guest_src"

# pkg_info PKG...: record the candidate version, architecture and Depends of
# each PKG in p_ver, p_arch and p_deps. One apt-cache call for all of them:
# each call costs more than half a second.
declare -A p_ver=() p_arch=() p_deps=()
pkg_info() {
    local out line pkg=
    out=$(apt-cache show --no-all-versions "$@" 2>/dev/null || true)
    while IFS= read -r line; do
        case $line in
        "Package: "*) pkg=${line#Package: } ;;
        "Version: "*) p_ver[$pkg]=${line#Version: } ;;
        "Architecture: "*) p_arch[$pkg]=${line#Architecture: } ;;
        "Depends: "*) p_deps[$pkg]=${line#Depends: } ;;
        esac
    done <<<"$out"
}

# The file name apt-get download gives PKG=VERSION (':' of the epoch as %3a).
deb_name() { echo "${1}_${2//:/%3a}_${3}.deb"; }

# --- Build tools (host side) ------------------------------------------------
# command -> Debian package. busybox itself comes from the downloaded .deb
# (it also serves as depmod), so kmod is not needed.
declare -A tool_pkg=(
    [cpio]=cpio [gzip]=gzip [mkfs.vfat]=dosfstools [mcopy]=mtools
    [syslinux]=syslinux [qemu-img]=qemu-utils [flock]=util-linux
    [ldd]=libc-bin [sha256sum]=coreutils
)
need=()
for t in "${!tool_pkg[@]}"; do
    command -v "$t" >/dev/null 2>&1 || need+=("${tool_pkg[$t]}")
done
# syslinux --install writes the boot code of this package into the image.
installed syslinux || need+=(syslinux)
[ ${#need[@]} -eq 0 ] || install_missing "${need[@]}"

# --- Which packages ----------------------------------------------------------
debs=()     # "pkg version arch" of each package unpacked into the image
kernel_pkg=
resolve_debs() {
    local top=(linux-image-amd64 busybox-static qemu-guest-agent) p entry
    pkg_info "${top[@]}"
    for p in "${top[@]}"; do
        if [ -z "${p_ver[$p]:-}" ]; then
            # A fresh machine's apt lists may be empty.
            apt_update_once
            pkg_info "${top[@]}"
            break
        fi
    done
    for p in "${top[@]}"; do
        [ -n "${p_ver[$p]:-}" ] || die "apt-cache knows no package $p"
    done
    # The kernel that the linux-image-amd64 metapackage currently depends
    # on; the metapackage pins its exact version with "(= VERSION)".
    entry=$(echo "${p_deps[linux-image-amd64]:-}" | sed 's/[,|]/\n/g' \
        | sed 's/^ *//' | grep -m1 '^linux-image-.*-amd64\b' || true)
    kernel_pkg=${entry%% *}
    [ -n "$kernel_pkg" ] || die "cannot tell which kernel linux-image-amd64 depends on"
    if [[ $entry =~ \(=\ *([^\)\ ]+)\) ]]; then
        p_ver[$kernel_pkg]=${BASH_REMATCH[1]}
        p_arch[$kernel_pkg]=${p_arch[linux-image-amd64]}
    else
        pkg_info "$kernel_pkg"
        [ -n "${p_ver[$kernel_pkg]:-}" ] || die "apt-cache knows no package $kernel_pkg"
    fi
    debs=()
    for p in "$kernel_pkg" busybox-static qemu-guest-agent; do
        debs+=("$p ${p_ver[$p]} ${p_arch[$p]}")
    done
}
resolve_debs

# qemu-ga is dynamically linked; the initramfs gets the shared libraries from
# this host, so the library packages it depends on must be installed here.
qga_libs=$(echo "${p_deps[qemu-guest-agent]:-}" | tr ',' '\n' \
    | sed 's/|.*//' | awk '{print $1}' | grep '^lib' || true)
# shellcheck disable=SC2086
install_missing $qga_libs

compute_stamp() {
    {
        stamp_scripts
        local f
        for f in $(cd "$guest_src" && LC_ALL=C ls); do
            echo "guest/$f $(sha256_of "$guest_src/$f")"
        done
        local d
        for d in "${debs[@]}"; do
            # shellcheck disable=SC2086
            echo "deb $(deb_name $d)"
        done
        # shellcheck disable=SC2086
        dpkg-query -W -f='host ${Package}=${Version}\n' syslinux $qga_libs
    } | sha256sum | cut -d' ' -f1
}

stamp=$(compute_stamp)
exit_if_built "$stamp"

# --- Build -------------------------------------------------------------------
lock_outdir "$deb_cache"
exit_if_built "$stamp" "built meanwhile by another run: $outdir"
refuse_foreign_outdir
make_build_dir

# fetch_debs: put every .deb of $debs into $deb_cache; return 1 on failure.
fetch_debs() {
    local d pkg ver arch name
    for d in "${debs[@]}"; do
        read -r pkg ver arch <<<"$d"
        name=$(deb_name "$pkg" "$ver" "$arch")
        [ -s "$deb_cache/$name" ] && continue
        log "downloading $pkg $ver"
        mkdir -p "$work/dl"
        (cd "$work/dl" && apt-get "${apt_opts[@]}" download "$pkg=$ver" >&2) || return 1
        [ -s "$work/dl/$name" ] || { log "apt-get download gave no $name"; return 1; }
        mv -f "$work/dl/$name" "$deb_cache/$name"
        # Keep one version per package in the cache.
        find "$deb_cache" -maxdepth 1 -name "${pkg}_*.deb" ! -name "$name" -delete
    done
}
if ! fetch_debs; then
    # The package lists may name a version the mirror no longer has.
    apt_updated=
    apt_update_once
    resolve_debs
    fetch_debs || die "cannot download ${debs[*]}"
    stamp=$(compute_stamp)
fi

deb_file() {
    local d pkg ver arch
    for d in "${debs[@]}"; do
        read -r pkg ver arch <<<"$d"
        [ "$pkg" = "$1" ] && { echo "$deb_cache/$(deb_name "$pkg" "$ver" "$arch")"; return; }
    done
    die "no .deb for $1"
}
deb_version() { dpkg-deb -f "$(deb_file "$1")" Version; }

log "unpacking packages"
dpkg-deb -x "$(deb_file "$kernel_pkg")" "$work/kernel"
dpkg-deb -x "$(deb_file busybox-static)" "$work/busybox"
dpkg-deb -x "$(deb_file qemu-guest-agent)" "$work/qga"
bb=$work/busybox/bin/busybox
[ -x "$bb" ] || die "busybox-static has no bin/busybox"

kdirs=("$work"/kernel/lib/modules/*)
[ -d "${kdirs[0]}" ] || die "$kernel_pkg has no lib/modules/<version>"
kdir=${kdirs[0]}
kver=$(basename "$kdir")
vmlinuz=$work/kernel/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "$kernel_pkg has no boot/vmlinuz-$kver"
log "kernel $kver ($kernel_pkg $(deb_version "$kernel_pkg"))"

# --- initramfs tree ------------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share/udhcpc} \
    "$root"/{etc,proc,sys,dev,run,tmp,root,mnt/disk,var}
# Debian 12 is merged-/usr: the library paths ldd prints (/lib/..., /lib64/...)
# resolve through these links, as on the host.
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s ../run "$root/var/run"
chmod 1777 "$root/tmp"

cp "$bb" "$root/bin/busybox"
# Every applet at its usual path (sbin/hwclock matters: qemu-ga's
# guest-set-time refuses to work unless /sbin/hwclock exists).
"$bb" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

install -m 0755 "$guest_src/init" "$root/init"
install -m 0755 "$guest_src/workload" "$root/usr/bin/workload"
install -m 0755 "$guest_src/udhcpc.script" "$root/usr/share/udhcpc/default.script"
# qemu-ga's guest-get-osinfo reads /etc/os-release.
install -m 0644 "$guest_src/os-release" "$root/etc/os-release"
mkdir -p "$root/etc/nova-live-snapshot/clone.d"
install -m 0755 "$guest_src/clone-hook" \
    "$root/etc/nova-live-snapshot/clone.d/10-record"
# The entropy helper clones run through the agent (see nls-reseed.c).
gcc -static -Os -Wall -o "$root/usr/sbin/nls-reseed" "$guest_src/nls-reseed.c"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
: >"$root/etc/resolv.conf"

# qemu-ga and the shared libraries it links (as this host resolves them),
# plus the ELF interpreter.
install -m 0755 "$work/qga/usr/sbin/qemu-ga" "$root/usr/sbin/qemu-ga"
ldd_out=$(ldd "$work/qga/usr/sbin/qemu-ga")
if echo "$ldd_out" | grep -q 'not found'; then
    die "qemu-ga needs libraries this host lacks: $(echo "$ldd_out" | grep 'not found' | tr -s ' \t' ' ')"
fi
for lib in $(echo "$ldd_out" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

# Kernel modules: the ones tools/guest/modules names, plus their dependencies
# (taken from a modules.dep that busybox depmod makes for the whole kernel),
# minus those built into the kernel.
log "selecting kernel modules"
"$bb" depmod -b "$work/kernel" "$kver"
declare -A mod_path=() mod_deps=() builtin=() seen=()
while IFS= read -r line; do
    key=${line%%:*}
    name=${key##*/}
    name=${name%.ko}
    mod_path[${name//-/_}]=$key
    mod_deps[$key]=${line#*:}
done <"$kdir/modules.dep"
while IFS= read -r key; do
    name=${key##*/}
    name=${name%.ko}
    builtin[${name//-/_}]=1
done <"$kdir/modules.builtin"

ordered=()
add_module() {
    local key=$1 dep
    [ -n "${seen[$key]:-}" ] && return 0
    seen[$key]=1
    for dep in ${mod_deps[$key]}; do
        add_module "$dep"
    done
    ordered+=("$key")
}
load=()
while read -r want; do
    want=${want%%#*}
    want=$(echo "$want" | tr -d '[:space:]')
    [ -n "$want" ] || continue
    optional=
    if [ "${want#\?}" != "$want" ]; then
        optional=1
        want=${want#\?}
    fi
    name=${want//-/_}
    if [ -n "${builtin[$name]:-}" ]; then
        log "module $want: built into the kernel"
    elif [ -n "${mod_path[$name]:-}" ]; then
        add_module "${mod_path[$name]}"
        load+=("$name")
    elif [ -n "$optional" ]; then
        log "module $want: not in $kernel_pkg (optional, skipped)"
    else
        die "module $want: neither built in nor a .ko in $kernel_pkg (compressed modules are not handled)"
    fi
done <"$guest_src/modules"

mdir=$root/lib/modules/$kver
mkdir -p "$mdir"
for key in "${ordered[@]}"; do
    mkdir -p "$mdir/$(dirname "$key")"
    cp "$kdir/$key" "$mdir/$key"
done
cp "$kdir/modules.builtin" "$kdir/modules.order" "$mdir/"
"$bb" depmod -b "$root" "$kver"
printf '%s\n' "${load[@]}" >"$root/etc/initrd-modules"
log "modules: ${ordered[*]##*/}"

log "packing initramfs"
# Reproducible: fixed mtimes, sorted names, renumbered inodes, no gzip time
# stamp, every file owned by root whoever builds. Same inputs, same bytes, so
# a rebuild after a change that does not touch the guest gives the very same
# disk under any overlay that still uses it.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# gzip, not xz: under TCG the kernel unpacks xz ~0.5 s slower and the
# smaller file loads no faster. (xz would need --check=crc32 and a small
# --lzma2 dict: xz -9's 64 MiB dictionary panics a 128 MiB guest.)
(cd "$root" && find . | LC_ALL=C sort \
    | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$stage/initrd.img"
cp "$vmlinuz" "$stage/vmlinuz"

# --- Boot disk -----------------------------------------------------------------
log "making the ${DISK_MIB} MiB vfat boot disk"
fat=$work/disk.raw
# --invariant, mcopy -m and SOURCE_DATE_EPOCH (which mtools honours): no
# random volume id, no build-time time stamps.
mkfs.vfat --invariant -n NLSGUEST -C "$fat" $((DISK_MIB * 1024)) >&2
fat_add_boot_files "$fat"
# The mtools-based installer: writes the boot sector and ldlinux.sys into a
# filesystem image file, no loop device or mount needed.
syslinux --install "$fat"
qemu-img convert -f raw -O qcow2 "$fat" "$stage/$DISK_NAME"

# --- guest.json ----------------------------------------------------------------
cmdline=$(syslinux_cmdline)
cat >"$stage/guest.json" <<EOF
{
  "disk": "$DISK_NAME",
  "disk_format": "qcow2",
  "disk_virtual_mib": $DISK_MIB,
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "kernel_cmdline": "$cmdline",
  "kernel_version": "$kver",
  "kernel_package": "$kernel_pkg",
  "kernel_package_version": "$(deb_version "$kernel_pkg")",
  "busybox_version": "$(deb_version busybox-static)",
  "qemu_ga_version": "$(deb_version qemu-guest-agent)",
  "memory_mib": $MEMORY_MIB,
  "vcpus": $VCPUS,
  "machine": "pc",
  "stamp": "$stamp"
}
EOF

publish_outputs
log "done: $(du -h "$outdir/$DISK_NAME" | cut -f1) disk, $(du -h "$outdir/initrd.img" | cut -f1) initrd"
echo "$outdir"
