"""Nova's shared base images are named with relabelling off and given back
to root (virt/disks.py), on real qcow2 files made by qemu-img."""

import os
import stat
import subprocess

from nova_live_snapshot import domainxml
from nova_live_snapshot.virt import disks


def _xml(path):
    return ("<domain><devices><disk type='file' device='disk'>"
            "<driver name='qemu' type='qcow2'/><source file='%s'/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"
            % path)


def test_a_base_handed_to_qemu_is_taken_back_and_never_relabelled(tmp_path):
    base, disk = str(tmp_path / 'base'), str(tmp_path / 'disk')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', base, '1M'],
                   check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw',
                    '-b', base, disk], check=True)
    # As libvirt leaves a backing file after a guest ran.
    os.chown(base, 12345, 12345)
    os.chmod(base, 0o664)
    root = domainxml.parse(disks.protect(_xml(disk)), 'test')
    store = root.find('devices/disk/backingStore')
    assert store.find('source').get('file') == base
    assert store.find('format').get('type') == 'raw'
    assert store.find('source/seclabel').attrib == {'model': 'dac',
                                                    'relabel': 'no'}
    st = os.stat(base)
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(st.st_mode) == 0o644


def test_disks_without_a_backing_file_are_left_alone(tmp_path):
    disk = str(tmp_path / 'disk')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '1M'],
                   check=True)
    assert disks.protect(_xml(disk)) == _xml(disk)
    assert disks.protect(_xml('/no/such/disk')) == _xml('/no/such/disk')


def test_what_is_not_a_domain_is_left_to_libvirt():
    """Nova wrote it: XML that is not a domain, or not XML, passes through
    unchanged for libvirt to refuse as it would without this driver (Nova's
    own driver tests pass ``<xml>``)."""
    for xml in ('<xml>', '<xml/>', 'not xml'):
        assert disks.protect(xml) == xml
