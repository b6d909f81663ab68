#!/bin/sh
# Runs inside the new root (chroot) once debootstrap has installed every
# package, as root, with /proc mounted: configures the Debian test guest.
# Usage: configure.sh MACHINE_ID HOSTNAME
# tools/build-debian-guest.sh has already copied tools/debian-guest/rootfs/
# over the root (units, networkd and journald settings, scripts).
set -eu
machine_id=$1
host_name=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "configure.sh: $*" >&2; }

# --- Identity ----------------------------------------------------------------
echo "$host_name" >/etc/hostname
cat >/etc/hosts <<HOSTS
127.0.0.1	localhost
127.0.1.1	$host_name
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
HOSTS
# A fixed machine id (the engine gives each clone a new one). systemd's
# postinst made a random one.
echo "$machine_id" >/etc/machine-id
# D-Bus reads /etc/machine-id itself; make sure no second copy exists.
if [ -e /var/lib/dbus/machine-id ] || [ -L /var/lib/dbus/machine-id ]; then
    ln -sf /etc/machine-id /var/lib/dbus/machine-id
fi
# debootstrap copied the build host's resolv.conf. Nothing in the guest
# needs DNS (no systemd-resolved; networkd leaves this file alone).
echo "# nova-live-snapshot test guest: no DNS configured" >/etc/resolv.conf

# No password login for root (root:*: becomes root:!*:).
passwd -l root >/dev/null

cat >/etc/fstab <<'FSTAB'
# <file system> <mount point> <type> <options> <dump> <pass>
# The initramfs mounts the root read-write (rw on the kernel command line);
# pass 0: no fsck at boot (the ext4 journal makes a crash-consistent copy
# mountable).
/dev/vda2	/	ext4	rw,errors=remount-ro	0	0
FSTAB

# --- sshd --------------------------------------------------------------------
# openssh-server's postinst generated host keys named after the build host
# (root@<build host> in the .pub files): make them anew for this guest.
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
for t in rsa ecdsa ed25519; do
    ssh-keygen -q -t "$t" -N '' -C "root@$host_name" -f "/etc/ssh/ssh_host_${t}_key"
done

# --- Services ----------------------------------------------------------------
systemctl -q enable systemd-networkd.service ssh.service \
    workload.service ready-marker.service >&2
# Boot time under TCG goes to every process systemd starts (1 vCPU: units
# that run "in parallel" take turns). Masked: nothing here waits for the
# network; timers and jobs that only slow a test boot down or write to the
# disk; no login prompts (root has no password); pseudo filesystems, module
# preloads and bookkeeping nothing in this guest uses. The root is mounted
# read-write by the initramfs with the options it needs (errors=remount-ro is
# set in the superblock), so systemd-remount-fs has nothing to do.
systemctl -q mask \
    systemd-networkd-wait-online.service systemd-network-generator.service \
    dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount sys-fs-fuse-connections.mount sys-kernel-config.mount \
    proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount systemd-binfmt.service \
    kmod-static-nodes.service systemd-modules-load.service \
    modprobe@configfs.service modprobe@dm_mod.service modprobe@drm.service \
    modprobe@efi_pstore.service modprobe@fuse.service modprobe@loop.service \
    systemd-remount-fs.service systemd-sysusers.service systemd-random-seed.service \
    systemd-journal-flush.service systemd-pstore.service \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    dpkg-db-backup.timer dpkg-db-backup.service \
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service \
    fstrim.timer fstrim.service \
    man-db.timer man-db.service \
    systemd-tmpfiles-clean.timer \
    getty.target serial-getty@ttyS0.service getty@tty1.service \
    >&2
# The guest agent's unit is static: udev starts it when the virtio-serial
# port org.qemu.guest_agent.0 appears. Check the rule that does it is there.
grep -qs 'org.qemu.guest_agent.0' /lib/udev/rules.d/*qemu-guest-agent*.rules \
    || { log "no udev rule starts qemu-guest-agent"; exit 1; }

# --- initramfs ---------------------------------------------------------------
# MODULES=list (conf.d/nls.conf): exactly what mounting /dev/vda2 needs, plus
# modprobe's dependencies of each.
cat >>/etc/initramfs-tools/modules <<'MODULES'
# nova-live-snapshot test guest: the root is ext4 on virtio-blk (PCI).
virtio_pci
virtio_blk
ext4
MODULES
update-initramfs -u -k all >&2
