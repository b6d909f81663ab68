"""The live image format: atomic publication, strict manifest, verification.

These build small synthetic images (a real qcow2 from qemu-img, a save-image
container around a fake stream) so every refusal can be shown in
milliseconds; tests/live does the same on images of real guests.
"""

import json
import os
import shutil
import stat
import subprocess

import pytest

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import saveimage

STREAM = b'QEVM\x00\x00\x00\x03' + os.urandom(64 * 1024)


def _write_image(store, name, memory_mib=128, disk_backing=None):
    writer = store.begin(name)
    spec = domainxml.DomainSpec(name='src', disk_path='/d', console_log='/c',
                                memory_mib=memory_mib, machine='pc-i440fx-7.2')
    with open(writer.memory_path, 'wb') as f:
        f.write(saveimage.encode(domainxml.render(spec),
                                 '<cookie><cpu/></cookie>', was_running=True,
                                 compression=0))
        f.write(STREAM)
    cmd = ['qemu-img', 'create', '-q', '-f', 'qcow2']
    if disk_backing:
        cmd += ['-F', 'qcow2', '-b', disk_backing]
    subprocess.run(cmd + [writer.disk_path, '16M'], check=True)
    mem_sha, mem_size = liveimage.sha256_file(writer.memory_path)
    disk_sha, disk_size = liveimage.sha256_file(writer.disk_path)
    manifest = liveimage.build_manifest(
        image_id=writer.id, name=name,
        source={'name': 'src', 'uuid': spec.uuid, 'vcpus': 1,
                'memory_mib': memory_mib, 'machine': 'pc-i440fx-7.2',
                'arch': 'x86_64', 'cpu_model': 'qemu64'},
        host_info={'libvirt_version': '9.0.0', 'qemu_version': '7.2.0'},
        capture={'mode': 'live', 'pause_ms': 12.5, 'memory_staged': True,
                 'duration_s': 1.0},
        memory={'name': 'memory.save', 'size': mem_size, 'sha256': mem_sha},
        disk={'name': 'disk.qcow2', 'size': disk_size, 'sha256': disk_sha,
              'format': 'qcow2', 'virtual_size': 16 * 1024 * 1024})
    return writer.commit(manifest)


@pytest.fixture
def store(tmp_path):
    return liveimage.ImageStore(str(tmp_path / 'images'))


def _rewrite_manifest(image, change):
    path = os.path.join(image.path, 'manifest.json')
    with open(path) as f:
        data = json.load(f)
    change(data)
    # Signed again, as by a holder of the host key: the checks behind the
    # signature are what is tested.
    liveimage.ImageStore(os.path.dirname(image.path)).write_manifest(
        image.path, json.dumps(data).encode())


def test_published_image_verifies_and_is_private(store):
    image = _write_image(store, 'golden')
    verified = store.verify(store.get('golden'))
    assert verified.domain.memory_kib == 128 * 1024
    assert verified.save.stream_size == len(STREAM)
    for name in ('manifest.json', 'memory.save'):
        mode = stat.S_IMODE(os.stat(os.path.join(image.path, name)).st_mode)
        assert mode == 0o600, name
    assert stat.S_IMODE(os.stat(image.disk_path).st_mode) & 0o007 == 0
    assert [i.name for i in store.list()] == ['golden']


def test_unfinished_image_is_never_listed_and_abort_removes_it(store):
    writer = store.begin('half')
    with open(writer.memory_path, 'wb') as f:
        f.write(b'partial')
    assert store.list() == []
    with pytest.raises(exception.ImageNotFound):
        store.get('half')
    writer.abort()
    assert os.listdir(store.root) == []


def test_stale_partial_of_a_dead_writer_is_removed(store):
    writer = store.begin('crashed')
    with open(os.path.join(writer.path, 'writer.pid'), 'w') as f:
        f.write('999999999')    # no such process
    live = store.begin('running')   # this process: kept
    removed = store.remove_stale_partials()
    assert removed == [os.path.basename(writer.path)]
    assert os.path.isdir(live.path)


def test_name_collision_and_bad_names(store):
    _write_image(store, 'golden')
    with pytest.raises(exception.ImageExists):
        store.begin('golden')
    for bad in ('../etc', '.hidden', '', 'a/b', 'x' * 65):
        with pytest.raises(exception.LiveSnapshotError, match='Invalid live'):
            store.begin(bad)


def test_delete_removes_everything(store):
    _write_image(store, 'golden')
    store.delete('golden')
    assert os.listdir(store.root) == []
    with pytest.raises(exception.ImageNotFound):
        store.delete('golden')


@pytest.mark.parametrize('change, message', [
    (lambda d: d.update(extra=1), 'Additional properties'),
    (lambda d: d.update(format_version=2), 'format_version'),
    (lambda d: d['files']['memory'].update(sha256='abc'), 'sha256'),
    (lambda d: d['files']['memory'].update(name='../../etc/shadow'),
     'memory'),
    (lambda d: d['source'].update(vcpus=0), 'vcpus'),
])
def test_manifest_schema_is_strict(store, change, message):
    image = _write_image(store, 'golden')
    _rewrite_manifest(image, change)
    with pytest.raises(exception.InvalidLiveImage, match=message):
        store.get('golden')


def _corrupt_truncate(image):
    with open(image.memory_path, 'r+b') as f:
        f.truncate(os.path.getsize(image.memory_path) - 1000)


def _signed_as_is(image):
    """Record the memory file's new hash in the manifest and sign it, as
    a holder of the host key could: the parsers behind the checksum must
    hold on their own."""
    sha = liveimage.sha256_file(image.memory_path)[0]
    _rewrite_manifest(image, lambda d: d['files']['memory'].update(sha256=sha))


def _corrupt_magic(image):
    with open(image.memory_path, 'r+b') as f:
        f.write(b'XXXX')
    _signed_as_is(image)


def _corrupt_data_len(image):
    with open(image.memory_path, 'r+b') as f:
        f.seek(20)
        f.write((1 << 23).to_bytes(4, 'little'))
    _signed_as_is(image)


def _corrupt_stream_byte(image):
    with open(image.memory_path, 'r+b') as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xff]))


def _missing_disk(image):
    os.unlink(image.disk_path)


def _manifest_memory(image):
    _rewrite_manifest(image, lambda d: d['source'].update(memory_mib=256))


@pytest.mark.parametrize('corrupt, error, message', [
    (_corrupt_truncate, exception.InvalidLiveImage, 'truncated'),
    (_corrupt_magic, exception.InvalidLiveImage,
     'not a libvirt QEMU save image'),
    (_corrupt_data_len, exception.InvalidLiveImage, 'points past the end'),
    (_corrupt_stream_byte, exception.ChecksumMismatch, 'memory.save has SHA'),
    (_missing_disk, exception.InvalidLiveImage, 'frozen disk disk.qcow2 is '
                                                'missing'),
    (_manifest_memory, exception.InvalidLiveImage,
     'memory: record 256 MiB, memory image 128 MiB'),
])
def test_verify_refuses_damaged_images(store, corrupt, error, message):
    image = _write_image(store, 'golden')
    corrupt(image)
    with pytest.raises(error, match=message):
        store.verify(store.get('golden'))


def test_disk_with_a_backing_file_is_refused(store, tmp_path):
    """A crafted disk could name any host file as its backing file."""
    target = str(tmp_path / 'host-secret.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', target, '16M'],
                   check=True)
    _write_image(store, 'golden', disk_backing=target)
    with pytest.raises(exception.InvalidLiveImage, match='backing file'):
        store.verify(store.get('golden'))


def test_symlinked_memory_file_is_refused(store, tmp_path):
    image = _write_image(store, 'golden')
    real = str(tmp_path / 'elsewhere')
    shutil.move(image.memory_path, real)
    os.symlink(real, image.memory_path)
    with pytest.raises(exception.InvalidLiveImage, match='not a regular file'):
        store.verify(store.get('golden'))
