"""Files no QEMU may write belong to the service's own user.

Frozen disks, template RAM files and device states are shared by every
clone, so no clone's QEMU may ever write them. They used to be given to
root; but nova-compute runs as an unprivileged ``nova`` user in a packaged
deployment, and it cannot give a file away. Nor does it need to: QEMU runs
as libvirt's QEMU user (``libvirt-qemu``), so a file owned by the service's
own user, mode 0440 with the QEMU group, is readable by QEMU and writable by
no QEMU (only the owner may change its mode, and the owner is not QEMU).
Run as root (the standalone engine), the owner is root, as before.

Giving the file the QEMU group needs no privilege either, provided the
service's user is a member of that group (``usermod -aG libvirt-qemu
nova``); without it the kernel refuses and :class:`NotInQemuGroup` says so.

What libvirtd (root) writes for the service, a capture's memory file, is
root's, 0600: only root can give it to the service. The engine is root;
nova-compute is not, and takes such files back the way Nova's own driver
takes back a live snapshot's delta: one ``chown`` through Nova's sys_admin
privsep daemon (:func:`use_privileged_chown`, set by the driver), never
holding root itself.
"""

import grp
import os
import pwd

from nova_live_snapshot import exception

__all__ = ['service_uid', 'service_gid', 'give_to_service', 'take_back',
           'use_privileged_chown']

#: chown(path, uid, gid) run with privilege, or None (see use_privileged_chown)
_privileged_chown = None


def service_uid():
    """The user files QEMU must not write belong to: the effective user of
    this process (``nova`` in nova-compute, root for the engine)."""
    return os.geteuid()


def service_gid():
    return os.getegid()


def _names(uid, gid):
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return user, group


def use_privileged_chown(chown):
    """Have an unprivileged service take files back with ``chown(path,
    uid=, gid=)``, a privileged entrypoint (nova-compute: Nova's
    ``nova.privsep.path.chown``). None: never (the default)."""
    global _privileged_chown
    _privileged_chown = chown


def take_back(path):
    """Make ``path``, written for this service by someone else (libvirtd,
    or the QEMU user libvirt gave it to), the service user's. Nothing to do
    for root, which reads and changes anything, or for a file already the
    service's.

    :raises ForeignOwner: it is not, and the service has no privileged
        ``chown`` to take it back with.
    """
    uid = service_uid()
    st = os.stat(path)
    if uid == 0 or st.st_uid == uid:
        return
    if _privileged_chown is None:
        raise exception.ForeignOwner(path=path, owner=st.st_uid,
                                     user=_names(uid, service_gid())[0])
    _privileged_chown(path, uid=uid, gid=service_gid())


def give_to_service(path, gid=None):
    """Make ``path`` the service user's, with group ``gid`` (the service's
    own group when None). Only the owner, never QEMU, can then change it.

    :raises NotInQemuGroup: the service may not give ``path`` the group
        ``gid``: its user is not a member of it.
    :raises ForeignOwner: ``path`` belongs to another user and the service
        cannot take it back (:func:`take_back`).
    """
    uid = service_uid()
    if gid is None:
        gid = service_gid()
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    if st.st_uid != uid:
        take_back(path)
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        user, group = _names(uid, gid)
        raise exception.NotInQemuGroup(path=path, user=user,
                                       group=group) from None
