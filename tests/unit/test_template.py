"""Template files on tmpfs: zero pages punched out without changing the
content; a template directory that is not tmpfs refused before anything is
written."""

import hashlib
import os
import uuid

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import template

PAGE = template._PAGE


@pytest.fixture
def shm_file():
    path = '/dev/shm/nls-unit-%s' % uuid.uuid4().hex[:8]
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_zero_pages_are_punched_out_and_the_content_kept(shm_file):
    """A 4 MiB file with data in four pages (one alone in an otherwise zero
    megabyte, two adjacent at the end) keeps just those pages on tmpfs, the
    same bytes, and the SHA-256 of what was there."""
    data = bytearray(4 << 20)
    for page in (3, 300, 1022, 1023):
        data[page * PAGE:page * PAGE + 5] = b'data!'
    with open(shm_file, 'wb') as f:
        f.write(data)
    assert os.stat(shm_file).st_blocks * 512 == len(data)
    digest = template.sparsify_and_hash(shm_file)
    assert digest == hashlib.sha256(data).hexdigest()
    with open(shm_file, 'rb') as f:
        assert f.read() == bytes(data)
    assert os.stat(shm_file).st_blocks * 512 == 4 * PAGE


def test_zero_runs_cover_exactly_the_zero_pages():
    chunk = bytearray(8 * PAGE)
    chunk[2 * PAGE] = 1
    chunk[7 * PAGE + 9] = 1
    assert list(template._zero_runs(bytes(chunk))) == [
        (0, 2 * PAGE), (3 * PAGE, 4 * PAGE)]
    assert list(template._zero_runs(bytes(template._CHUNK))) == [
        (0, template._CHUNK)]


def test_a_template_dir_not_on_tmpfs_is_refused(tmp_path):
    root = tmp_path / 'templates'
    if template._fstype(str(tmp_path)) == 'tmpfs':
        pytest.skip('%s is on tmpfs here' % tmp_path)
    store = template.TemplateStore(
        str(root), host=None,
        images=liveimage.ImageStore(str(tmp_path / 'images')),
        allow_writable=True)
    image_id = str(uuid.uuid4())
    source = template.Source(
        key=image_id, image_id=image_id, name='img', memory_path='/nowhere',
        save=None, memory_mib=128, backend=None, render=None)
    with pytest.raises(exception.TemplateDirUnsuitable, match='not tmpfs'):
        store.acquire_source(source)
    assert os.listdir(root) == []


class _Qemu:
    """A host of the given QEMU version (all the version gate asks)."""

    def __init__(self, version):
        self.version = version

    def qemu_version(self):
        return self.version


@pytest.mark.parametrize('version, allowed, error', [
    ('7.2.22', False, exception.TemplateUnsafe),
    ('7.2.22', True, exception.TemplateDirUnsuitable),
    ('8.2.0', False, exception.TemplateDirUnsuitable),
])
def test_lazy_mode_needs_a_qemu_that_opens_the_template_read_only(
        tmp_path, version, allowed, error):
    """QEMU before 8.2 opens a private RAM file read-write: no template is
    built for its clones unless the operator accepted that risk."""
    if template._fstype(str(tmp_path)) == 'tmpfs':
        pytest.skip('%s is on tmpfs here' % tmp_path)
    root = tmp_path / 'templates'
    store = template.TemplateStore(
        str(root), host=_Qemu(version),
        images=liveimage.ImageStore(str(tmp_path / 'images')),
        allow_writable=allowed)
    source = template.Source(
        key='k', image_id='k', name='img', memory_path='/nowhere',
        save=None, memory_mib=128, backend=None, render=None)
    with pytest.raises(error) as e:
        store.acquire_source(source)
    if error is exception.TemplateUnsafe:
        assert 'QEMU 7.2.22' in str(e.value)
        assert 'lazy_writable_templates' in str(e.value)
        assert not root.exists()
