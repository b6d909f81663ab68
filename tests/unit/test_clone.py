"""The parts of spawning a clone that need no domain: whether a host's
QEMU can resume an image (the restore itself: test_restore.py).
"""

from nova_live_snapshot import clone
from nova_live_snapshot import restore


class QemuHost:
    """What host_reasons asks of a host: its machine types and QEMU."""

    def __init__(self, version='7.2.0', machines=('pc-i440fx-7.2', 'pc')):
        self.version = version
        self.machines = set(machines)

    def machine_types(self):
        return set(self.machines)

    def qemu_version(self):
        return self.version


def test_versions_compare_as_numbers():
    assert restore.version_tuple('7.10.0') > restore.version_tuple('7.2.22')
    assert restore.version_tuple('10.0.2') > restore.version_tuple('9.2.0')


def test_a_host_that_can_resume_the_image_has_no_reason():
    assert clone.host_reasons(QemuHost(), 'x86_64', 'pc-i440fx-7.2',
                              '7.2.0') == []
    # Older QEMU's streams load into newer QEMU.
    assert clone.host_reasons(QemuHost('8.2.2'), 'x86_64', 'pc',
                              '7.2.0') == []


def test_every_reason_is_named():
    reasons = clone.host_reasons(QemuHost('7.2.0'), 'aarch64', 'virt-8.2',
                                 '8.2.2')
    assert reasons == [
        'it is a aarch64 guest; this host runs x86_64 guests',
        "this host's QEMU has no machine type virt-8.2",
        'it was captured with QEMU 8.2.2, this host has the older QEMU '
        '7.2.0']
