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
    """The source is back on its own disk (the capture's overlay merged
    back and gone): what it writes after the capture reaches that disk but
    not the image's disk, which is a copy of its own."""
    result, _, _ = golden
    assert source.disk_sources() == result.source_disks
    disk = result.source_disks['vda']
    assert not [n for n in os.listdir(os.path.dirname(disk)) if '.ls-' in n]
    image_disk = result.image.disk_path
    assert qemuimg.info(image_disk, chain=True)[0].get(
        'backing-filename') is None
    image_sum = liveimage.sha256_file(image_disk)[0]
    rc, _, err = source.agent_exec(
        ['/bin/sh', '-c', 'echo after-capture > /mnt/disk/after; sync'])
    assert rc == 0, err
    assert liveimage.sha256_file(image_disk)[0] == image_sum
    bed.engine.verify(result.image.name)


def test_save_mode_capture_restores_the_source(bed):
    """Save mode stops the source, then restores it onto a new overlay,
    merged back into its own disk once the image is made; the workload
    continues (same token) and the image spawns a clone that resumes it
    too."""
    eng = bed.engine_with(capture_mode='save')
    guest = bed.boot('save')
    try:
        before = testbed.read_workload(guest)
        result = eng.capture(guest.name, bed.name('saveimg'))
        restored = bed.host.lookup(guest.name)
        assert restored.is_running()
        assert restored.disk_sources() == result.source_disks
        assert result.source_disks['vda'].endswith('/disk.qcow2')
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


def test_thirty_captures_of_one_source_leave_it_on_its_own_disk(bed):
    """Capturing one source again and again: after every capture the
    source runs on its original disk path with its original backing chain
    (the capture's overlay merged back and gone), its workload still
    counting with the same token; the first and the thirtieth image both
    restore clones that resume the source. (Before every capture merged
    its overlay back, each one added a layer and a ``.ls-<id>`` to the
    disk's name, and about the twentieth failed with "File name too
    long".)"""
    guest = bed.boot('thirty')
    try:
        disk = guest.disk_sources()['vda']
        depth = len(qemuimg.info(disk, chain=True))
        first = testbed.read_workload(guest)
        kept = {}
        for n in range(1, 31):
            before = testbed.read_workload(guest)
            result = bed.engine.capture(guest.name, bed.name('cap%02d' % n))
            assert guest.disk_sources() == {'vda': disk}, n
            assert len(qemuimg.info(disk, chain=True)) == depth, n
            after = testbed.wait_counter(guest, before.counter + 1)
            assert after.token == first.token, n
            if n in (1, 30):
                kept[n] = (result.image.name, before)
            else:
                bed.engine.delete_image(result.image.name)
        assert sorted(os.listdir(os.path.dirname(disk))) == [
            'console.log', 'disk.qcow2']
        for n, (name, before) in sorted(kept.items()):
            clones = bed.spawn(name)
            try:
                state = testbed.read_workload(
                    bed.host.lookup(clones[0].name))
                assert state.token == first.token, n
                assert state.counter >= before.counter, n
            finally:
                bed.destroy_all(clones)
            bed.engine.delete_image(name)
    finally:
        bed.guest_image.remove(bed.host, guest.name)
