"""Damaged or foreign live images are refused with a clear error, and a
spawn that fails inside libvirt leaves no domain, overlay or FIFO behind.

Each case damages a copy of an image captured from a real guest.
"""

import json
import os
import shutil

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage


def _copy(bed, golden, what):
    result, _, _ = golden
    name = bed.name(what)
    dest = os.path.join(bed.engine.images.root, name)
    shutil.copytree(result.image.path, dest)
    _edit_manifest(dest, lambda m: m.update(name=name))
    return bed.engine.images.get(name)


def _edit_manifest(path, change):
    """Change the manifest and sign it again with the host key: what is
    tested is behind the signature (tests/unit/test_store_robustness shows
    that an unsigned change is refused first)."""
    mpath = os.path.join(path, 'manifest.json')
    with open(mpath) as f:
        data = json.load(f)
    change(data)
    liveimage.ImageStore(os.path.dirname(path)).write_manifest(
        path, json.dumps(data).encode())


def _signed_as_is(image):
    sha = liveimage.sha256_file(image.memory_path)[0]
    _edit_manifest(image.path,
                   lambda m: m['files']['memory'].update(sha256=sha))


def _patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def truncated(image):
    size = os.path.getsize(image.memory_path)
    with open(image.memory_path, 'r+b') as f:
        f.truncate(size // 2)


def wrong_magic(image):
    _patch(image.memory_path, 0, b'LibvirtXXXXXSave')
    _signed_as_is(image)


def data_len_past_end(image):
    size = os.path.getsize(image.memory_path)
    _patch(image.memory_path, 20, (size - 50).to_bytes(4, 'little'))
    _signed_as_is(image)


def flipped_stream_byte(image):
    offset = os.path.getsize(image.memory_path) // 2
    with open(image.memory_path, 'rb') as f:
        f.seek(offset)
        byte = f.read(1)[0]
    _patch(image.memory_path, offset, bytes([byte ^ 0x01]))


def other_memory_size(image):
    _edit_manifest(image.path, lambda m: m['source'].update(memory_mib=512))


def missing_frozen_disk(image):
    os.unlink(image.disk_path)


@pytest.mark.parametrize('damage, error, message', [
    (truncated, exception.InvalidLiveImage, 'truncated'),
    (wrong_magic, exception.InvalidLiveImage, 'not a libvirt QEMU save image'),
    (data_len_past_end, exception.InvalidLiveImage, 'points past the end'),
    (flipped_stream_byte, exception.ChecksumMismatch,
     'memory.save has SHA-256'),
    (other_memory_size, exception.InvalidLiveImage,
     'memory: record 512 MiB, memory image 128 MiB'),
    (missing_frozen_disk, exception.InvalidLiveImage,
     'frozen disk disk.qcow2 is missing'),
])
def test_damaged_image_is_refused(bed, golden, damage, error, message):
    image = _copy(bed, golden, damage.__name__.replace('_', ''))
    damage(image)
    clones_before = os.listdir(bed.engine.clones.root)
    with pytest.raises(error, match=message):
        bed.spawn(image.name, count=2)
    assert os.listdir(bed.engine.clones.root) == clones_before
    bed.engine.delete_image(image.name)


def test_image_from_a_newer_qemu_is_refused(bed, golden):
    image = _copy(bed, golden, 'newer')
    _edit_manifest(image.path,
                   lambda m: m['host'].update(qemu_version='99.0.0'))
    with pytest.raises(exception.IncompatibleImage,
                       match='captured with QEMU 99.0.0'):
        bed.spawn(image.name)
    bed.engine.delete_image(image.name)


def test_restore_failure_inside_qemu_leaves_nothing(bed, golden):
    """A stream QEMU rejects, with a manifest that matches it (what a forger
    without the image's history could write): the spawn fails in libvirt,
    and the clone's domain, overlay and FIFO are all gone."""
    image = _copy(bed, golden, 'badstream')
    with open(image.memory_path, 'rb') as f:
        data_len = int.from_bytes(f.read(24)[20:24], 'little')
    _patch(image.memory_path, 92 + data_len, b'NOPE')   # QEMU's 'QEVM' magic
    sha, _ = liveimage.sha256_file(image.memory_path)
    _edit_manifest(image.path,
                   lambda m: m['files']['memory'].update(sha256=sha))
    clones_before = os.listdir(bed.engine.clones.root)
    domains_before = bed.our_domains()
    with pytest.raises(exception.CloneSpawnFailed, match='restore'):
        bed.spawn(image.name, count=2)
    assert os.listdir(bed.engine.clones.root) == clones_before
    assert bed.our_domains() == domains_before
    bed.engine.delete_image(image.name)
