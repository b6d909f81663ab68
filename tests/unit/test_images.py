"""The live-image record in Glance properties, its signature, and the
compute host's memory stream cache."""

import hashlib
import os
import threading

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import protocol
from nova_live_snapshot import signing
from nova_live_snapshot.virt import glance as glance_mod
from nova_live_snapshot.virt import images

KEY = 'k' * 40


def _record(**changes):
    values = dict(
        format='1', disk_image='0b6c7a3e-5f0e-4d8e-9f57-6a1f1e2f3a4b',
        project_id='6f4c1d2e3b4a59687766554433221100',
        memory_image='1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f',
        memory_sha256='a' * 64, memory_size='1048576',
        disk_hash='sha512:' + 'b' * 128, memory_mib='128', vcpus='1',
        machine='pc-i440fx-7.2', cpu_model='', qemu_version='7.2.22',
        source_instance='2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a',
        created_at='2026-11-26T10:00:00.000+00:00')
    values.update(changes)
    return images.Record(**values)


def _image(record, key=KEY, **prop_changes):
    props = record.properties(key)
    props.update(prop_changes)
    return {'id': record.disk_image, 'properties': props}


def test_record_round_trips_through_glance_properties():
    record = _record()
    assert images.Record.from_image(_image(record), KEY) == record


@pytest.mark.parametrize('prop, value', [
    ('live_snapshot_vcpus', '2'),
    ('live_snapshot_memory_mib', '256'),
    ('live_snapshot_project_id', 'someoneelse'),
    ('live_snapshot_memory_sha256', 'c' * 64),
    ('live_snapshot_memory_image', '9c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'),
])
def test_any_changed_property_breaks_the_signature(prop, value):
    with pytest.raises(exception.UntrustedImage, match='does not match'):
        images.Record.from_image(_image(_record(), **{prop: value}), KEY)


def test_properties_copied_onto_another_image_do_not_verify():
    """The signature binds the record to the disk image's own Glance id."""
    image = _image(_record())
    image['id'] = '3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b'
    with pytest.raises(exception.UntrustedImage, match='does not match'):
        images.Record.from_image(image, KEY)


def test_another_key_does_not_verify():
    with pytest.raises(exception.UntrustedImage, match='another key'):
        images.Record.from_image(_image(_record(), key='x' * 40), KEY)


def test_unsigned_and_foreign_scheme_are_refused():
    image = _image(_record())
    del image['properties'][protocol.SIGNATURE_PROPERTY]
    with pytest.raises(exception.UntrustedImage, match='no signature'):
        images.Record.from_image(image, KEY)
    image['properties'][protocol.SIGNATURE_PROPERTY] = 'rsa:abc'
    with pytest.raises(exception.UntrustedImage, match='not of scheme'):
        images.Record.from_image(image, KEY)


@pytest.mark.parametrize('prop, value, what', [
    ('live_snapshot_memory_size', '-1', 'a size'),
    ('live_snapshot_machine', 'pc\n<x/>', 'a machine type'),
    ('live_snapshot_memory_image', '../../etc/passwd', 'a UUID'),
    ('live_snapshot_format', '2', 'format 1'),
])
def test_malformed_fields_are_refused_before_the_signature(prop, value, what):
    with pytest.raises(exception.UntrustedImage, match=what):
        images.Record.from_image(_image(_record(), **{prop: value}), KEY)


def test_missing_or_short_key_is_a_configuration_error():
    with pytest.raises(exception.NotConfigured, match='signing_key'):
        _record().properties(None)
    with pytest.raises(exception.NotConfigured, match='fewer than 32'):
        signing.sign('short', {})


def test_is_live_image_reads_the_system_metadata_hint():
    class Instance:
        system_metadata = {'image_live_snapshot_format': '1'}
    assert images.is_live_image(Instance)
    Instance.system_metadata = {'image_hw_disk_bus': 'virtio'}
    assert not images.is_live_image(Instance)


# Memory cache -----------------------------------------------------------------

KEY1 = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
KEY2 = '2c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
KEY3 = '3c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
MIB = 1024 * 1024


def _writer(data, calls):
    def fetch(path):
        calls.append(path)
        with open(path, 'wb') as f:
            f.write(data)
    return fetch


def test_cache_downloads_once_and_verifies(tmp_path):
    cache = images.MemoryCache(str(tmp_path / 'cache'), max_mib=10)
    data = os.urandom(1000)
    sha = hashlib.sha256(data).hexdigest()
    calls = []
    with cache.use(KEY1, sha, '1000', _writer(data, calls), 'img') as path:
        with open(path, 'rb') as f:
            assert f.read() == data
    with cache.use(KEY1, sha, '1000', _writer(data, calls), 'img'):
        pass
    assert len(calls) == 1
    assert oct(os.stat(tmp_path / 'cache').st_mode & 0o777) == '0o700'


def test_cache_refuses_a_stream_that_is_not_the_signed_one(tmp_path):
    cache = images.MemoryCache(str(tmp_path), max_mib=10)
    data = os.urandom(1000)
    with pytest.raises(exception.ChecksumMismatch):
        with cache.use(KEY1, 'f' * 64, '1000', _writer(data, []), 'img'):
            pass
    with pytest.raises(exception.UntrustedImage, match='999'):
        with cache.use(KEY1, 'f' * 64, '999', _writer(data, []), 'img'):
            pass
    # Nothing of the refused downloads stays.
    assert sorted(os.listdir(tmp_path)) == [KEY1 + '.lock']


def test_cache_evicts_least_recently_used_but_never_one_in_use(tmp_path):
    cache = images.MemoryCache(str(tmp_path), max_mib=2)
    data = b'\0' * MIB
    sha = hashlib.sha256(data).hexdigest()
    entered, release = threading.Event(), threading.Event()

    def hold():
        with cache.use(KEY1, sha, str(MIB), _writer(data, []), 'img'):
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(30)
    with cache.use(KEY2, sha, str(MIB), _writer(data, []), 'img'):
        pass
    with cache.use(KEY3, sha, str(MIB), _writer(data, []), 'img'):
        pass
    # Three streams, room for two: KEY1 is oldest but in use, so KEY2 goes.
    keys = [k for k, _, _ in cache.entries()]
    assert KEY1 in keys and KEY2 not in keys and KEY3 in keys
    release.set()
    holder.join()
    cache.evict()
    assert len(cache.entries()) == 2


def test_cache_ids_must_be_uuids(tmp_path):
    cache = images.MemoryCache(str(tmp_path), max_mib=2)
    with pytest.raises(exception.InvalidLiveImage, match='UUID'):
        with cache.use('../x', 'a' * 64, '1', _writer(b'', []), 'img'):
            pass


def test_prune_drops_deleted_images_keeps_unknown_and_in_use(tmp_path):
    """Streams of images Glance says are gone leave the cache; one whose
    state Glance could not tell, one still there and one being read stay;
    the lock file of a failed download goes."""
    cache = images.MemoryCache(str(tmp_path), max_mib=10)
    data = os.urandom(100)
    sha = hashlib.sha256(data).hexdigest()
    for key in (KEY1, KEY2, KEY3):
        with cache.use(key, sha, '100', _writer(data, []), 'img'):
            pass
    key4 = '4c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
    with pytest.raises(exception.ChecksumMismatch):
        with cache.use(key4, 'f' * 64, '100', _writer(data, []), 'img'):
            pass
    key5 = '5c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'
    answers = {KEY1: False, KEY2: None, KEY3: True, key5: False}
    with cache.use(key5, sha, '100', _writer(data, []), 'img'):
        assert cache.prune(answers.get) == [KEY1]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [k + suffix for k in (KEY2, KEY3, key5)
         for suffix in ('', '.lock', '.sha256')])
    assert cache.prune(answers.get) == [key5]


# Issue 14: what an attacker's Glance image tried ---------------------------

@pytest.mark.parametrize('signature', [['hmac-sha256-v1:' + 'a' * 64], 42,
                                       {'a': 1}, True, 1.5])
def test_a_signature_that_is_not_a_string_is_refused(signature):
    image = _image(_record())
    image['properties'][protocol.SIGNATURE_PROPERTY] = signature
    with pytest.raises(exception.UntrustedImage, match='not a string'):
        images.Record.from_image(image, KEY)


@pytest.mark.parametrize('prop, value', [
    ('live_snapshot_machine', 'pc-i440fx-7.2\n'),
    ('live_snapshot_memory_image', KEY1 + '\n'),
    ('live_snapshot_memory_sha256', 'a' * 64 + '\n'),
    ('live_snapshot_format', '1\n'),
    ('live_snapshot_memory_mib', '128.0'),
    ('live_snapshot_memory_mib', 'NaN'),
    ('live_snapshot_memory_mib', '99999999'),
    ('live_snapshot_vcpus', '1e3'),
    ('live_snapshot_memory_size', 1048576),
])
def test_record_fields_are_matched_whole_and_bounded(prop, value):
    with pytest.raises(exception.UntrustedImage, match='is missing or not'):
        images.Record.from_image(_image(_record(), **{prop: value}), KEY)


def test_properties_that_are_not_a_mapping_are_refused():
    with pytest.raises(exception.UntrustedImage, match='not a mapping'):
        images.Record.from_image({'id': KEY1, 'properties': ['x']}, KEY)


def test_a_cached_stream_is_served_only_to_a_record_with_its_hash(tmp_path):
    """A stream cached for one record (its memory image id and hash) is
    not served to a record that names the same memory image with another
    hash: that record's stream is fetched and verified."""
    cache = images.MemoryCache(str(tmp_path / 'cache'), max_mib=10)
    first, second = os.urandom(1000), os.urandom(1000)
    calls = []
    with cache.use(KEY1, hashlib.sha256(first).hexdigest(), '1000',
                   _writer(first, calls), 'img'):
        pass
    with cache.use(KEY1, hashlib.sha256(second).hexdigest(), '1000',
                   _writer(second, calls), 'img') as path:
        with open(path, 'rb') as f:
            assert f.read() == second
    assert len(calls) == 2
    # And a stream changed in the cache is not the one that was verified.
    with pytest.raises(exception.ChecksumMismatch):
        with cache.use(KEY1, hashlib.sha256(first).hexdigest(), '1000',
                       _writer(second, []), 'img'):
            pass


def test_a_captured_stream_enters_the_cache_with_its_hash(tmp_path):
    cache = images.MemoryCache(str(tmp_path / 'cache'), max_mib=10)
    data = os.urandom(1000)
    src = tmp_path / 'captured'
    src.write_bytes(data)
    cache.add(KEY1, str(src), hashlib.sha256(data).hexdigest())
    calls = []
    with cache.use(KEY1, hashlib.sha256(data).hexdigest(), '1000',
                   _writer(data, calls), 'img'):
        pass
    assert calls == []
    assert cache.remove(KEY1)
    assert os.listdir(tmp_path / 'cache') == []


class _Glance:
    """Glance's image API as a dict of images (what the sweep asks of a
    keystoneauth adapter: GET a list or an image, DELETE an image), with
    its pagination (``next``)."""

    class _Response:
        def __init__(self, status, body=None):
            self.status_code = status
            self._body = body

        def json(self):
            return self._body

    def __init__(self, images_, page=2):
        self.images = {i['id']: i for i in images_}
        self.page = page

    def get(self, url, raise_exc=True):
        path, _, query = url.partition('?')
        if path != '/v2/images':
            image = self.images.get(path.rsplit('/', 1)[-1])
            return self._Response(200 if image else 404, image)
        params = dict(p.split('=') for p in query.split('&'))
        matching = sorted(i for i, image in self.images.items()
                          if image.get(protocol.ROLE_PROPERTY)
                          == params[protocol.ROLE_PROPERTY])
        start = 0
        if 'marker' in params:
            if params['marker'] not in self.images:
                return self._Response(400)      # as Glance: marker not found
            start = matching.index(params['marker']) + 1
        body = {'images': [self.images[i] for i in
                           matching[start:start + self.page]]}
        if start + self.page < len(matching):
            body['next'] = '%s&marker=%s' % (url.split('&marker')[0],
                                             matching[start + self.page - 1])
        return self._Response(200, body)

    def delete(self, url, raise_exc=True):
        gone = self.images.pop(url.rsplit('/', 1)[-1], None)
        return self._Response(204 if gone else 404)


def _uuid(n):
    return '%08d-0000-4000-8000-000000000000' % n


def test_the_memory_of_a_live_image_deleted_in_glance_goes_with_it():
    """`openstack image delete` of a disk image leaves its hidden memory
    image; the periodic sweep deletes it, and only it (across pages)."""
    disks = [{'id': _uuid(i)} for i in range(1, 4)]
    memories = [{'id': _uuid(10 + i),
                 protocol.ROLE_PROPERTY: protocol.MEMORY_ROLE,
                 protocol.DISK_IMAGE_PROPERTY: _uuid(i), 'os_hidden': True}
                for i in range(1, 4)]
    other = {'id': _uuid(20), protocol.ROLE_PROPERTY: 'something else',
             protocol.DISK_IMAGE_PROPERTY: _uuid(99)}
    glance = _Glance(disks + memories + [other])
    del glance.images[_uuid(2)]             # a plain image delete
    del glance.images[_uuid(3)]

    def exists(key):
        return key in glance.images
    assert sorted(glance_mod.sweep_orphaned_memory(glance, exists)) == [
        _uuid(12), _uuid(13)]
    assert sorted(glance.images) == [_uuid(1), _uuid(11), _uuid(20)]


def test_the_sweep_keeps_memory_when_glance_cannot_tell():
    glance = _Glance([{'id': _uuid(11),
                       protocol.ROLE_PROPERTY: protocol.MEMORY_ROLE,
                       protocol.DISK_IMAGE_PROPERTY: _uuid(1)}])
    assert glance_mod.sweep_orphaned_memory(glance, lambda key: None) == []
    assert list(glance.images) == [_uuid(11)]
