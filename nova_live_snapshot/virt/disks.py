"""Nova's shared base images stay out of every QEMU's reach.

Nova's qcow2 instance disks are overlays on a base file in
``instances/_base`` that every instance of the image shares; clones of a
live image share its disk image's base the same way. libvirt's DAC driver
chowns a starting domain's whole disk chain to the QEMU user and, for
backing files, never gives them back: after one guest ran, any compromised
QEMU could rewrite what all the others read.

:func:`protect` names each file disk's backing chain in the domain XML with
relabelling off (:func:`nova_live_snapshot.domainxml.with_backing_chains`)
and puts the backing files back in the hands of the user nova-compute runs
as (``nova`` in a packaged deployment, root where it runs as root), read-only
to everyone else: QEMU opens them read-only, through the "other" read bit
Nova's files have. A backing file libvirt already gave to the QEMU user
(before this driver protected it) only root can take back: nova-compute
asks Nova's own privsep context for that one ``chown``
(``nova.privsep.path.chown``, ``[nova_sys_admin]``), never holding root
itself. The chain is read with ``qemu-img`` from Nova's own files, which
this host made.
"""

import logging
import os
import stat

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import ownership
from nova_live_snapshot import qemuimg

LOG = logging.getLogger(__name__)

__all__ = ['protect', 'lock_down', 'privileged_chown']


def lock_down(path):
    """Make ``path`` the service user's and writable by it alone; QEMU
    reads it through the "other" read bit (Nova's base files are 0644
    anyway). Where it belongs to someone else, root takes it back: this
    process if it is root, Nova's privsep daemon otherwise."""
    ownership.give_to_service(path)
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode) & ~0o022 | 0o004
    if mode != stat.S_IMODE(st.st_mode):
        os.chmod(path, mode)


def privileged_chown(path, uid=-1, gid=-1):
    """``chown`` through Nova's sys_admin privsep context (its daemon
    starts on first use, through ``[nova_sys_admin] helper_command``); the
    driver hands it to :func:`ownership.use_privileged_chown`."""
    # Imported here: the engine and the unit tests never need Nova's
    # privsep context, and importing it registers Nova's options.
    from nova.privsep import path as privsep_path
    LOG.info('Taking back %s from uid %d through privsep', path,
             os.stat(path).st_uid)
    privsep_path.chown(path, uid=uid, gid=gid)


def _chain(path, fmt):
    """[(backing path, format), ...] of Nova's disk ``path`` (of format
    ``fmt``), nearest first; empty when it has none or cannot be read. The
    base came from Glance: qemu-img runs under the untrusted-file limits."""
    try:
        infos = qemuimg.info_untrusted(path, fmt, chain=True)
    except exception.LiveSnapshotError:
        return []
    if not isinstance(infos, list):
        return []
    chain = []
    for info in infos[1:]:
        if not isinstance(info, dict) or not info.get('filename'):
            return []
        chain.append((info['filename'], info.get('format', 'raw')))
    return chain


def protect(xml):
    """Nova's domain XML ``xml`` with the backing chains of its file disks
    protected from relabelling, and their backing files locked down.

    Anything that is not a domain (Nova's own unit tests pass ``<xml>``)
    is returned unchanged, for libvirt to accept or refuse as it would
    without this driver: Nova wrote it, it is not untrusted input.
    """
    try:
        root = domainxml.parse(xml, 'Nova guest config')
    except exception.UnsafeDomainXML:
        return xml
    if root.tag != 'domain':
        return xml
    chains = {}
    for disk in root.findall("devices/disk[@type='file']"):
        source, driver = disk.find('source'), disk.find('driver')
        path = source.get('file') if source is not None else None
        fmt = driver.get('type') if driver is not None else None
        if not path or fmt not in ('qcow2', 'raw') or not os.path.isfile(path):
            continue
        chain = _chain(path, fmt)
        if chain:
            for backing, _fmt in chain:
                lock_down(backing)
            chains[path] = chain
    if not chains:
        return xml
    return domainxml.with_backing_chains(xml, chains, 'Nova guest config')
