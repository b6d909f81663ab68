"""The parts of spawning that need no domain: whether a host's QEMU can
resume an image, and the feeder that writes a clone's header and the
shared memory stream into a FIFO (a real FIFO, read here as libvirt would).
"""

import errno
import os
import threading

import pytest

from nova_live_snapshot import clone
from nova_live_snapshot import waiting


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
    assert clone.version_tuple('7.10.0') > clone.version_tuple('7.2.22')
    assert clone.version_tuple('10.0.2') > clone.version_tuple('9.2.0')


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


def _read_all(fifo, out):
    with open(fifo, 'rb') as f:
        out.append(f.read())


def _feed(feeder, fifo):
    """Run ``feeder`` against a reader of ``fifo``, as libvirt reads it;
    what the reader got, as a one-item list."""
    out = []
    reader = threading.Thread(target=_read_all, args=(fifo, out))
    reader.start()
    feeder.start()
    feeder.join(30)
    reader.join(30)
    return out


@pytest.fixture
def memory(tmp_path):
    path = tmp_path / 'memory.save'
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    return str(path), data


def test_feeder_writes_the_header_then_the_stream_slice(tmp_path, memory):
    """The clone's own header, then the image's QEMU stream from its
    offset, spliced from the one shared file: byte for byte."""
    path, data = memory
    fifo = str(tmp_path / 'clone' / 'restore.fifo')
    os.makedirs(os.path.dirname(fifo))
    os.mkfifo(fifo, 0o600)
    header = b'LibvirtQemudSave' + b'\0' * 76 + b'<domain/>\0'
    offset = 4096
    feeder = clone._Feeder(fifo, header, path, offset, len(data) - offset)
    out = _feed(feeder, fifo)
    assert not feeder.is_alive() and feeder.error is None
    assert out == [header + data[offset:]]


def test_feeder_reports_a_stream_shorter_than_promised(tmp_path, memory):
    path, data = memory
    fifo = str(tmp_path / 'short.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = clone._Feeder(fifo, b'h', path, 0, len(data) + 100)
    out = _feed(feeder, fifo)
    assert isinstance(feeder.error, EOFError)
    assert '100 bytes early' in str(feeder.error)
    assert out == [b'h' + data]


def _open_files():
    names = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            names.append(os.readlink('/proc/self/fd/' + fd))
        except OSError:
            continue
    return names


def test_release_frees_a_feeder_whose_reader_never_came(tmp_path, memory):
    """A restore that fails before libvirt opens the FIFO must not leave
    the feeder waiting for ever."""
    path, data = memory
    fifo = str(tmp_path / 'unread.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = clone._Feeder(fifo, b'header', path, 0, len(data))
    feeder.start()
    # The stream is larger than the pipe: with no reader draining it, the
    # feeder waits in write() for room.
    wchan = '/proc/self/task/%d/wchan' % feeder.native_id
    waiting.wait_for(lambda: open(wchan).read() in (
        'pipe_write', 'pipe_wait_writable'), 10,
                     interval=0.01, what='the feeder to wait for room')
    feeder.release()
    feeder.join(30)
    assert not feeder.is_alive()
    assert feeder.error is not None and feeder.error.errno == errno.EPIPE
    assert fifo not in _open_files()


def test_a_feeder_released_before_it_ran_does_not_wait(tmp_path, memory):
    """The restore may fail before the feeder's thread first runs: nothing
    it does after that waits for a reader."""
    path, data = memory
    fifo = str(tmp_path / 'early.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = clone._Feeder(fifo, b'header', path, 0, len(data))
    feeder.release()
    feeder.start()
    feeder.join(30)
    assert not feeder.is_alive()
    assert feeder.error is not None and feeder.error.errno == errno.EPIPE
    # Neither end stays open.
    assert fifo not in _open_files()


@pytest.mark.parametrize('version, reads', [
    ('9.0.0', 1), ('11.1.0', 1), ('11.2.0', 2), ('11.3.0', 2)])
def test_the_fifo_carries_a_header_per_open_of_libvirt_s_restore(
        version, reads):
    """libvirt 11.2+ reads the header in an open of its own before the
    restore's open (bookworm-backports' 11.3: "image magic is incorrect"
    with one header)."""
    assert clone.header_reads(version) == reads
