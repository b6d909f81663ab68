"""Capturing running guests: the source keeps running, the image is a
point-in-time pair, and a capture that cannot finish leaves nothing."""

import os
import stat

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import qemuimg
from nova_live_snapshot import testbed


def test_live_capture_keeps_the_source_running(bed, source, golden):
    """The source stays running with the same workload (same token), its
    counter never goes backwards, and the pause was measured from QEMU's
    own STOP/RESUME events."""
    result, before, after = golden
    assert source.is_running()
    assert after.token == before.token
    assert after.counter >= before.counter
    later = testbed.wait_counter(source, after.counter + 1)
    assert later.token == before.token
    assert result.pause_ms is not None and result.pause_ms > 0
    assert result.image.manifest.capture['mode'] == 'live'


def test_manifest_describes_the_source_and_host(bed, source, golden):
    result, _, _ = golden
    m = result.image.manifest
    assert m.source['uuid'] == source.uuid
    assert m.source['memory_mib'] == 128
    assert m.source['vcpus'] == 1
    assert m.source['machine'].startswith('pc-i440fx-')
    assert m.host['qemu_version'] == bed.host.qemu_version()
    assert m.host['libvirt_version'] == bed.host.libvirt_version()
    for key in ('memory', 'disk'):
        entry = m.files[key]
        path = os.path.join(result.image.path, entry['name'])
        assert os.path.getsize(path) == entry['size']
        assert liveimage.sha256_file(path)[0] == entry['sha256']


def test_image_files_are_private(golden):
    result, _, _ = golden
    path = result.image.path
    for name in ('memory.save', 'manifest.json'):
        assert stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode) == 0o600
    # The frozen disk is readable by QEMU's group only (clones back onto it).
    assert stat.S_IMODE(os.stat(os.path.join(path, 'disk.qcow2')).st_mode) \
        & 0o007 == 0
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0


def test_frozen_disk_never_changes_while_the_source_writes(
        bed, source, golden):
    """The source now writes to a new overlay: what it writes after the
    capture reaches neither its old image nor the image's disk."""
    result, _, _ = golden
    overlay = result.source_overlays['vda']
    assert source.disk_sources()['vda'] == overlay
    chain = qemuimg.info(overlay, chain=True)
    frozen = chain[1]['filename']
    frozen_sum = liveimage.sha256_file(frozen)[0]
    rc, _, err = source.agent_exec(
        ['/bin/sh', '-c', 'echo after-capture > /mnt/disk/after; sync'])
    assert rc == 0, err
    assert liveimage.sha256_file(frozen)[0] == frozen_sum
    bed.engine.verify(result.image.name)


def test_save_mode_capture_restores_the_source(bed):
    """Save mode stops the source, then restores it onto a new overlay; the
    workload continues (same token) and the image spawns a clone that
    resumes it too."""
    eng = bed.engine_with(capture_mode='save')
    guest = bed.boot('save')
    try:
        before = testbed.read_workload(guest)
        result = eng.capture(guest.name, bed.name('saveimg'))
        restored = bed.host.lookup(guest.name)
        assert restored.is_running()
        assert restored.disk_sources()['vda'] == result.source_overlays['vda']
        state = testbed.read_workload(restored)
        assert state.token == before.token
        assert state.counter >= before.counter
        assert result.image.manifest.capture['mode'] == 'save'
        clones = bed.spawn(result.image.name, engine=eng)
        try:
            clone_state = testbed.read_workload(bed.host.lookup(clones[0].name))
            assert clone_state.token == before.token
        finally:
            bed.destroy_all(clones, engine=eng)
        eng.delete_image(result.image.name)
    finally:
        bed.guest_image.remove(bed.host, guest.name)


def test_capture_refuses_a_domain_that_is_not_running(bed):
    name = bed.name('paused')
    guest = bed.guest_image.boot(bed.host, name, paused=True)
    assert guest.state() == 'paused'
    images = os.path.join(bed.root, 'images-paused')
    eng = bed.engine_with(image_dir=images)
    try:
        with pytest.raises(exception.DomainNotRunning, match='paused'):
            eng.capture(name, bed.name('never'))
        assert os.listdir(images) == []
    finally:
        bed.guest_image.remove(bed.host, name)


def test_staging_dir_full_refuses_cleanly(bed, source):
    """memory_staging=always and a staging tmpfs too small for the guest's
    memory: a clear error before the source is touched, nothing left."""
    staging = bed.tmpfs('tiny-staging', '8m')
    images = os.path.join(bed.root, 'images-nostage')
    eng = bed.engine_with(staging_dir=staging, memory_staging='always',
                          image_dir=images)
    disk_before = source.disk_sources()
    with pytest.raises(exception.InsufficientSpace, match='tiny-staging'):
        eng.capture(source.name, bed.name('nostage'))
    assert source.is_running()
    assert source.disk_sources() == disk_before
    assert os.listdir(staging) == []
    assert os.listdir(images) == []


def test_staging_dir_full_auto_writes_to_disk(bed, source):
    """memory_staging=auto falls back to writing the memory file straight
    into the image directory when tmpfs has no room."""
    staging = bed.tmpfs('tiny-staging-auto', '8m')
    images = os.path.join(bed.root, 'images-auto')
    eng = bed.engine_with(staging_dir=staging, image_dir=images)
    result = eng.capture(source.name, bed.name('unstaged'))
    try:
        assert result.memory_staged is False
        assert result.image.manifest.capture['memory_staged'] is False
        eng.verify(result.image.name)
        assert source.is_running()
    finally:
        eng.delete_image(result.image.name)


def test_image_dir_full_refuses_cleanly(bed, source):
    images = bed.tmpfs('tiny-images', '16m')
    eng = bed.engine_with(image_dir=images)
    with pytest.raises(exception.InsufficientSpace, match='tiny-images'):
        eng.capture(source.name, bed.name('nospace'))
    assert source.is_running()
    assert os.listdir(images) == []


def test_capture_under_a_taken_name_is_refused(bed, source, golden):
    result, _, _ = golden
    with pytest.raises(exception.ImageExists):
        bed.engine.capture(source.name, result.image.name)
    assert source.is_running()


def test_capture_of_an_unknown_domain(bed):
    with pytest.raises(exception.DomainNotFound, match='no-such-domain'):
        bed.engine.capture('no-such-domain', bed.name('x'))
