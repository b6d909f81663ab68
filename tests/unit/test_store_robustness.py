"""A bad image is reported as bad and never affects another (issue 14).

Each case damages one image of a store that also holds a good one: the bad
one is named with what is wrong, the good one is still listed and
verified, and the bad one can be deleted.
"""

import json
import os
import shutil
import stat

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from tests.unit.test_liveimage import _write_image


@pytest.fixture
def store(tmp_path):
    return liveimage.ImageStore(str(tmp_path / 'images'))


def _manifest(image):
    return os.path.join(image.path, 'manifest.json')


def _resign(store, image):
    """Sign the damaged manifest again, as a holder of the host key could:
    what is behind the signature must hold on its own."""
    with open(_manifest(image), 'rb') as f:
        store.write_manifest(image.path, f.read())


def _raw(data):
    def damage(image):
        with open(_manifest(image), 'wb') as f:
            f.write(data)
    return damage


def _edit(change):
    def damage(image):
        with open(_manifest(image)) as f:
            data = json.load(f)
        text = change(data)
        with open(_manifest(image), 'w') as f:
            f.write(text if isinstance(text, str) else json.dumps(data))
    return damage


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


DAMAGE = [
    ('not UTF-8', _raw(b'{"name": "\xff\xfe"}'), 'not UTF-8'),
    ('nested', _raw(b'[' * 20000 + b']' * 20000), 'nested too deeply'),
    ('NaN', _edit(lambda d: json.dumps(d).replace(
        '"duration_s": 1.0', '"duration_s": NaN')), 'NaN'),
    ('Infinity', _edit(lambda d: json.dumps(d).replace(
        '"duration_s": 1.0', '"duration_s": Infinity')), 'Infinity'),
    ('duplicate key', _edit(lambda d: json.dumps(d)[:-1]
                            + ', "name": "other"}'), 'appears twice'),
    ('float RAM', _edit(_set(('source', 'memory_mib'), 128.0)),
     'memory_mib'),
    ('boolean vCPUs', _edit(_set(('source', 'vcpus'), True)), 'vcpus'),
    ('RAM without bound', _edit(_set(('source', 'memory_mib'), 10 ** 30)),
     'memory_mib'),
    ('name with a newline', _edit(_set(('name',), 'victim\n')), 'name'),
    ('version with a newline', _edit(_set(('host', 'qemu_version'),
                                          '7.2.0\n')), 'qemu_version'),
    ('not an object', _raw(b'[]'), 'top level'),
    ('empty', _raw(b''), 'not JSON'),
    ('huge', _raw(b' ' * (2 * 1024 * 1024)), 'at most'),
]


@pytest.mark.parametrize('what, damage, message', DAMAGE,
                         ids=[d[0] for d in DAMAGE])
def test_a_corrupt_manifest_is_reported_and_affects_no_other_image(
        store, what, damage, message):
    good = _write_image(store, 'good')
    bad = _write_image(store, 'bad')
    damage(bad)
    _resign(store, bad)
    with pytest.raises(exception.InvalidLiveImage, match=message):
        store.get('bad')
    images, problems = store.scan()
    assert [i.name for i in images] == ['good']
    assert [name for name, _ in problems] == ['bad']
    assert [i.name for i in store.list()] == ['good']
    store.verify(store.get('good'))
    store.delete('bad')
    assert sorted(os.listdir(store.root)) == ['good']
    assert os.path.isdir(good.path)


def test_a_symlinked_image_directory_is_refused_and_deleted_not_followed(
        store, tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    _write_image(liveimage.ImageStore(str(elsewhere)), 'linked')
    _write_image(store, 'good')
    os.symlink(str(elsewhere / 'linked'), os.path.join(store.root, 'linked'))
    with pytest.raises(exception.InvalidLiveImage, match='symbolic link'):
        store.get('linked')
    assert [n for n, _ in store.scan()[1]] == ['linked']
    store.delete('linked')
    assert sorted(os.listdir(store.root)) == ['good']
    assert os.path.isfile(elsewhere / 'linked' / 'manifest.json')


def test_unexpected_entries_make_an_image_invalid(store):
    image = _write_image(store, 'odd')
    os.symlink('/etc/shadow', os.path.join(image.path, 'extra'))
    with pytest.raises(exception.InvalidLiveImage, match="unexpected.*'extra'"):
        store.get('odd')
    store.delete('odd')
    assert os.listdir(store.root) == []


def test_a_stray_file_or_bad_name_in_the_store_is_reported(store):
    _write_image(store, 'good')
    with open(os.path.join(store.root, 'stray'), 'w') as f:
        f.write('not an image')
    os.mkdir(os.path.join(store.root, 'bad name'))
    images, problems = store.scan()
    assert [i.name for i in images] == ['good']
    assert dict(problems).keys() == {'stray', 'bad name'}
    assert 'not a directory' in dict(problems)['stray']
    store.delete('stray')
    assert 'stray' not in os.listdir(store.root)


def test_a_manifest_that_is_a_fifo_does_not_hang(store):
    image = _write_image(store, 'fifo')
    os.unlink(_manifest(image))
    os.mkfifo(_manifest(image))
    with pytest.raises(exception.InvalidLiveImage, match='regular file'):
        store.get('fifo')


@pytest.mark.parametrize('name', ['golden\n', 'golden\n\n', '\ngolden'])
def test_names_ending_in_a_newline_are_refused(store, name):
    with pytest.raises(exception.LiveSnapshotError, match='Invalid live'):
        store.begin(name)


# Authenticity: the host key ------------------------------------------------

def test_a_tampered_and_rehashed_image_is_refused(store):
    """Changing a file and writing its new SHA-256 into the manifest no
    longer makes an image valid: the manifest is signed."""
    image = _write_image(store, 'golden')
    with open(image.memory_path, 'r+b') as f:
        f.seek(-10, os.SEEK_END)
        f.write(b'0123456789')
    with open(_manifest(image)) as f:
        data = json.load(f)
    data['files']['memory']['sha256'] = liveimage.sha256_file(
        image.memory_path)[0]
    with open(_manifest(image), 'w') as f:
        json.dump(data, f)
    with pytest.raises(exception.UntrustedImage, match='does not match'):
        store.get('golden')
    assert [n for n, _ in store.scan()[1]] == ['golden']
    store.delete('golden')


def test_an_unsigned_image_or_one_of_another_host_is_refused(store, tmp_path):
    image = _write_image(store, 'unsigned')
    os.unlink(os.path.join(image.path, 'manifest.sig'))
    with pytest.raises(exception.UntrustedImage, match='no signature'):
        store.get('unsigned')
    other = liveimage.ImageStore(str(tmp_path / 'other' / 'images'))
    foreign = _write_image(other, 'foreign')
    shutil.copytree(foreign.path, os.path.join(store.root, 'foreign'))
    with pytest.raises(exception.UntrustedImage, match='another key'):
        store.get('foreign')


def test_a_host_without_its_key_trusts_no_image(store):
    _write_image(store, 'golden')
    os.unlink(store.key_file)
    with pytest.raises(exception.UntrustedImage, match='no host key'):
        store.get('golden')


def test_the_host_key_is_root_s_alone_and_outside_the_store(store):
    _write_image(store, 'golden')
    st = os.stat(store.key_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert not store.key_file.startswith(store.root + os.sep)
    os.chmod(store.key_file, 0o644)
    with pytest.raises(exception.NotConfigured, match='mode 644'):
        store.get('golden')
