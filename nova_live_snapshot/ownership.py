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
"""

import grp
import os
import pwd

from nova_live_snapshot import exception

__all__ = ['service_uid', 'service_gid', 'give_to_service']


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


def give_to_service(path, gid=None):
    """Make ``path`` the service user's, with group ``gid`` (the service's
    own group when None). Only the owner, never QEMU, can then change it.

    :raises NotInQemuGroup: the service may not give ``path`` the group
        ``gid``: its user is not a member of it.
    :raises ForeignOwner: ``path`` belongs to another user and the service
        is not root.
    """
    uid = service_uid()
    if gid is None:
        gid = service_gid()
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    if st.st_uid != uid and uid != 0:
        # Only root can take a file back; and a shared file someone else
        # could rewrite is no file to share.
        raise exception.ForeignOwner(path=path, owner=st.st_uid,
                                     user=_names(uid, gid)[0])
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        user, group = _names(uid, gid)
        raise exception.NotInQemuGroup(path=path, user=user,
                                       group=group) from None
