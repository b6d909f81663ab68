"""Which save formats the platforms section runs on a platform."""

import pytest

from nova_live_snapshot.bench import platforms


@pytest.mark.parametrize('libvirt_version, qemu_version, expected', [
    ('9.0.0', '7.2.22', ['raw']),
    ('11.1.0', '10.0.2', ['raw']),          # libvirt without "sparse"
    ('11.3.0', '8.2.2', ['raw']),           # QEMU without mapped-ram
    ('11.3.0', '10.0.2', ['raw', 'sparse', 'sparse, 2 channels']),
])
def test_sparse_and_parallel_only_where_both_offer_them(
        libvirt_version, qemu_version, expected):
    """libvirt's ``sparse`` save format (11.2) is QEMU's mapped-ram (9.0);
    parallel channels need it."""
    offered = platforms.formats(libvirt_version, qemu_version)
    assert list(offered) == expected
    if 'sparse, 2 channels' in offered:
        save, restore = offered['sparse, 2 channels']
        assert save[-2:] == restore == ['--parallel-channels', '2']
