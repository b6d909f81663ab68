"""The parts of a capture that need no domain: overlay names and how an
interrupted capture's overlay is recognised, where the memory file goes and
the space checks, on real directories and a real image writer."""

import os

import pytest

from nova_live_snapshot import capture
from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import exception
from nova_live_snapshot import liveimage

IMAGE_ID = '0c758976-1f2e-4e5b-9a3c-5d6e7f8a9b0c'


class DiskGuest:
    """What capture_overlays reads of a guest: its disks' sources."""

    def __init__(self, sources):
        self.sources = sources

    def disk_sources(self):
        return dict(self.sources)


@pytest.fixture
def store(tmp_path):
    return liveimage.ImageStore(str(tmp_path / 'images'))


def _conf(tmp_path, **kw):
    return conf_mod.new(image_dir=str(tmp_path / 'images'),
                        staging_dir=str(tmp_path / 'staging'), **kw)


def test_the_overlay_sits_beside_the_disk_and_names_the_image():
    name = capture._overlay_name('/srv/inst/disk.qcow2', IMAGE_ID)
    assert name == '/srv/inst/disk.ls-0c758976.qcow2'
    assert capture._overlay_name('/srv/inst/disk', IMAGE_ID) == \
        '/srv/inst/disk.ls-0c758976.qcow2'


def test_only_capture_overlays_are_taken_for_leftovers():
    """Recovery merges back what a capture left; a disk that merely has
    '.ls-' somewhere in its path is the source's own."""
    guest = DiskGuest({
        'vda': capture._overlay_name('/srv/inst/disk', IMAGE_ID),
        'vdb': '/srv/inst.ls-0c758976.qcow2/data.qcow2',
        'vdc': '/srv/inst/disk.ls-0c75897.qcow2',
        'vdd': None,
    })
    assert capture.capture_overlays(guest) == {
        'vda': '/srv/inst/disk.ls-0c758976.qcow2'}


def test_memory_is_staged_when_it_fits(tmp_path, store):
    conf = _conf(tmp_path)
    writer = store.begin('fits')
    try:
        path, staged = capture._plan_memory(conf, writer, memory_mib=16)
        assert staged
        assert path == os.path.join(conf.staging_dir, writer.id,
                                    liveimage.MEMORY)
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == '0o700'
    finally:
        writer.abort()


def test_never_staging_writes_into_the_image(tmp_path, store):
    conf = _conf(tmp_path, memory_staging='never')
    writer = store.begin('direct')
    try:
        assert capture._plan_memory(conf, writer, memory_mib=16) == (
            writer.memory_path, False)
        assert not os.path.exists(conf.staging_dir)
    finally:
        writer.abort()


def test_staging_that_cannot_hold_the_memory(tmp_path, store):
    """auto falls back to the image directory; always refuses, naming the
    directory and the option, before anything is written."""
    huge = 1 << 40
    writer = store.begin('huge')
    try:
        auto = _conf(tmp_path)
        assert capture._plan_memory(auto, writer, huge) == (
            writer.memory_path, False)
        always = _conf(tmp_path, memory_staging='always')
        with pytest.raises(exception.InsufficientSpace) as e:
            capture._plan_memory(always, writer, huge)
        assert always.staging_dir in str(e.value)
        assert 'staging_dir' in str(e.value)
        assert os.listdir(always.staging_dir) == []
    finally:
        writer.abort()


def test_image_space_counts_memory_margin_and_disk(tmp_path, store):
    conf = _conf(tmp_path)
    writer = store.begin('space')
    try:
        capture._check_image_space(conf, writer, memory_mib=1,
                                   disk_estimate_mib=1)
        with pytest.raises(exception.InsufficientSpace, match='image_dir'):
            capture._check_image_space(conf, writer, memory_mib=1,
                                       disk_estimate_mib=1 << 40)
    finally:
        writer.abort()
