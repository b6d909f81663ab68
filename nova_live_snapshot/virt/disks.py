"""Nova's shared base images stay out of every QEMU's reach.

Nova's qcow2 instance disks are overlays on a base file in
``instances/_base`` that every instance of the image shares; clones of a
live image share its disk image's base the same way. libvirt's DAC driver
chowns a starting domain's whole disk chain to the QEMU user and, for
backing files, never gives them back: after one guest ran, any compromised
QEMU could rewrite what all the others read.

:func:`protect` names each file disk's backing chain in the domain XML with
relabelling off (:func:`nova_live_snapshot.domainxml.with_backing_chains`)
and puts the backing files back in root's hands, read-only to everyone
else: QEMU opens them read-only, through the "other" read bit Nova's files
have. The chain is read with ``qemu-img`` from Nova's own files, which
this host made.
"""

import logging
import os
import stat

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import qemuimg

LOG = logging.getLogger(__name__)

__all__ = ['protect', 'lock_down']


def lock_down(path):
    """Make ``path`` root's and writable by root alone (readable as it was
    for everyone else)."""
    st = os.stat(path)
    if st.st_uid != 0 or st.st_gid != 0:
        os.chown(path, 0, 0)
    mode = stat.S_IMODE(st.st_mode) & ~0o022 | 0o444
    if mode != stat.S_IMODE(st.st_mode):
        os.chmod(path, mode)


def _chain(path):
    """[(backing path, format), ...] of Nova's disk ``path``, nearest first;
    empty when it has no backing file or cannot be read."""
    try:
        infos = qemuimg.info(path, chain=True)
    except (exception.LiveSnapshotError, ValueError):
        return []
    chain = []
    for info in infos[1:]:
        if not isinstance(info, dict) or not info.get('filename'):
            return []
        chain.append((info['filename'], info.get('format', 'raw')))
    return chain


def protect(xml):
    """Nova's domain XML ``xml`` with the backing chains of its file disks
    protected from relabelling, and their backing files locked down."""
    root = domainxml.parse(xml, 'Nova guest config')
    chains = {}
    for source in root.findall("devices/disk[@type='file']/source"):
        path = source.get('file')
        if not path or not os.path.isfile(path):
            continue
        chain = _chain(path)
        if chain:
            for backing, _fmt in chain:
                lock_down(backing)
            chains[path] = chain
    if not chains:
        return xml
    return domainxml.with_backing_chains(xml, chains, 'Nova guest config')
