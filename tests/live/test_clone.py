"""Clones resume the captured state, side by side and isolated."""

import os

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import testbed


def _read_in(guest, path):
    rc, out, _ = guest.agent_exec(['/bin/cat', path])
    return out.decode().strip() if rc == 0 else None


def test_clone_resumes_the_captured_state(bed, source, golden):
    """The clone carries the source's token (generated once at the source's
    boot, kept only in memory) and a counter that continues from the capture
    point, not from 0; the source keeps counting on its own."""
    result, before, after = golden
    clones = bed.spawn(result.image.name)
    try:
        guest = bed.host.lookup(clones[0].name)
        state = testbed.read_workload(guest)
        assert state.token == before.token
        assert state.counter >= before.counter
        src_now = testbed.read_workload(source)
        assert src_now.token == before.token
        assert src_now.counter >= after.counter
        assert guest.uuid != source.uuid
        assert guest.is_persistent()
    finally:
        bed.destroy_all(clones)


def test_four_concurrent_clones_are_distinct_and_isolated(bed, source, golden):
    """Four clones spawn concurrently with distinct names, UUIDs, generation
    IDs, MACs and overlays; a file one clone writes is seen neither by the
    other clones nor by the source; the memory stream is not copied."""
    result, before, _ = golden
    clones = bed.spawn(result.image.name, count=4)
    try:
        guests = [bed.host.lookup(c.name) for c in clones]
        assert len({c.name for c in clones}) == 4
        assert len({g.uuid for g in guests} | {source.uuid}) == 5
        assert len({g.genid() for g in guests} | {source.genid()}) == 5
        macs = [g.interface_macs()[0] for g in guests]
        assert len(set(macs) | set(source.interface_macs())) == 5
        assert [c.mac for c in clones] == macs
        overlays = [g.disk_sources()['vda'] for g in guests]
        assert len(set(overlays)) == 4
        assert all(o.startswith(bed.engine.clones.root) for o in overlays)

        for g in guests:
            assert testbed.read_workload(g).token == before.token

        secret = 'written-by-%s' % clones[0].name
        rc, _, err = guests[0].agent_exec(
            ['/bin/sh', '-c', 'echo %s > /mnt/disk/marker; sync' % secret])
        assert rc == 0, err
        assert _read_in(guests[0], '/mnt/disk/marker') == secret
        for g in guests[1:] + [source]:
            # Drop the page cache so the read goes to each one's own disk.
            g.agent_exec(['/bin/sh', '-c', 'echo 3 > /proc/sys/vm/drop_caches'])
            assert _read_in(g, '/mnt/disk/marker') != secret

        # One memory stream on disk whatever the number of clones: each
        # clone directory holds only its small overlay and console log.
        stream = result.image.manifest.files['memory']['size']
        for c in clones:
            sizes = [os.path.getsize(os.path.join(c.path, f))
                     for f in os.listdir(c.path)]
            assert sum(sizes) < stream / 10
        bed.engine.verify(result.image.name)
    finally:
        bed.destroy_all(clones)


def test_destroy_and_delete_leave_nothing(bed, source):
    """An image with clones cannot be deleted; destroying the clones and
    deleting the image removes every domain and file."""
    image = bed.engine.capture(source.name, bed.name('doomed')).image
    clones = bed.spawn(image.name, count=2)
    with pytest.raises(exception.ImageInUse, match=clones[0].name):
        bed.engine.delete_image(image.name)
    bed.destroy_all(clones)
    for c in clones:
        assert bed.host.find(c.name) is None
        assert not os.path.exists(c.path)
    bed.engine.delete_image(image.name)
    assert not os.path.exists(image.path)
    with pytest.raises(exception.CloneNotFound):
        bed.engine.destroy(clones[0].name)
