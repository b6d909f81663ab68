"""Property tests of every reader of untrusted input (issue 14).

A live image may come from anyone with a Glance account or a copy of a
store: whatever bytes reach a reader, it ends in the project's own
exception with a message that names the problem, within a time bound, never
in a traceback of some other kind (a bad image must never break a command
for another).

``make unit`` runs a bounded number of examples (the ``ci`` profile);
``make fuzz`` runs many more (``HYPOTHESIS_PROFILE=fuzz``).
"""

import io
import json
import os
import struct

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import hostkey
from nova_live_snapshot import liveimage
from nova_live_snapshot import migstream
from nova_live_snapshot import saveimage
from nova_live_snapshot import signing
from nova_live_snapshot.virt import images

# Every example must end within this (ms): a reader that can be made to
# spin or allocate without bound fails the deadline.
DEADLINE_MS = 5000
settings.register_profile(
    'ci', max_examples=60, deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    'fuzz', max_examples=5000, deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

KEY = 'k' * 40


def _ends_in(error_class, fn, *args):
    """Run ``fn``: it returns, or raises ``error_class`` with a message."""
    try:
        return fn(*args)
    except error_class as e:
        assert str(e).strip(), 'an error without a message'
        return None


# JSON that looks like a manifest, mutated: the schema's paths get reached.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                     st.floats(allow_nan=True), st.text(max_size=80))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.text(max_size=20), inner, max_size=6)), max_leaves=30)


def _good_manifest():
    return {
        'format_version': 1, 'id': '0b6c7a3e-5f0e-4d8e-9f57-6a1f1e2f3a4b',
        'name': 'golden', 'created_at': '2026-12-03T10:00:00.000+00:00',
        'source': {'name': 's', 'uuid': 'u', 'vcpus': 1, 'memory_mib': 128,
                   'machine': 'pc-i440fx-7.2', 'arch': 'x86_64',
                   'cpu_model': None},
        'host': {'hostname': 'h', 'libvirt_version': '9.0.0',
                 'qemu_version': '7.2.0'},
        'capture': {'mode': 'live', 'pause_ms': 1.0, 'memory_staged': True,
                    'duration_s': 1.0},
        'files': {
            'memory': {'name': 'memory.save', 'size': 1, 'sha256': 'a' * 64},
            'disk': {'name': 'disk.qcow2', 'size': 1, 'sha256': 'b' * 64,
                     'format': 'qcow2', 'virtual_size': 1}},
    }


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


_MANIFEST_PATHS = sorted(_paths(_good_manifest()))


@st.composite
def _mutated_manifest(draw):
    data = _good_manifest()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_MANIFEST_PATHS))
        target = data
        for key in path[:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(key, {})
        else:
            if isinstance(target, dict):
                target[path[-1]] = draw(_json)
    return json.dumps(data).encode()


@given(st.one_of(st.binary(max_size=4096), _mutated_manifest(),
                 _json.map(lambda d: json.dumps(d).encode())))
def test_any_manifest_ends_in_invalid_live_image(data):
    _ends_in(exception.InvalidLiveImage, liveimage.Manifest.from_json, data,
             'fuzzed')


@given(st.binary(max_size=2048))
@settings(max_examples=30)
def test_any_signed_manifest_in_a_store_is_read_or_refused(tmp_path_factory,
                                                           data):
    """Through the store: the bytes are signed (the key holder's mistake or
    an attack on the parser behind the signature) and still only ever end
    in InvalidLiveImage; the store lists nothing wrong."""
    root = tmp_path_factory.mktemp('store') / 'images'
    store = liveimage.ImageStore(str(root))
    path = os.path.join(store.root, 'golden')
    os.mkdir(path, 0o700)
    store.write_manifest(path, data)
    _ends_in(exception.InvalidLiveImage, store.get, 'golden')
    images_, problems = store.scan()
    assert len(images_) + len(problems) == 1


# The save-image container -------------------------------------------------

@st.composite
def _save_headers(draw):
    magic = draw(st.sampled_from([saveimage.MAGIC, saveimage.PARTIAL_MAGIC,
                                  b'x' * 16]))
    fields = [draw(st.sampled_from([2, draw(st.integers(0, 2 ** 32 - 1))])),
              draw(st.integers(0, 4096)), draw(st.integers(0, 2)),
              draw(st.integers(0, 5)), draw(st.integers(0, 4096))]
    header = magic + struct.pack('<5I', *fields) + bytes(56)
    return header + draw(st.binary(max_size=4096))


@given(st.one_of(st.binary(max_size=512), _save_headers()))
def test_any_save_image_ends_in_invalid_live_image(data):
    _ends_in(exception.InvalidLiveImage, saveimage.read, io.BytesIO(data),
             len(data), 'fuzzed')


# The QEMU migration stream reader ----------------------------------------

@st.composite
def _streams(draw):
    head = struct.pack('>II', migstream.FILE_MAGIC, migstream.FILE_VERSION)
    body = draw(st.lists(st.sampled_from([
        bytes([migstream.START]) + struct.pack('>I', 1) + b'\x03ram'
        + struct.pack('>II', 0, 4),
        bytes([migstream.PART]) + struct.pack('>I', 1),
        bytes([migstream.END]) + struct.pack('>I', 1),
        struct.pack('>Q', migstream.MEM_SIZE | 4096) + b'\x06pc.ram'
        + struct.pack('>Q', 4096),
        struct.pack('>Q', migstream.PAGE | migstream.CONTINUE) + bytes(4096),
        struct.pack('>Q', migstream.ZERO) + b'\x06pc.ram\x00',
        struct.pack('>Q', migstream.EOS),
        bytes([migstream.FOOTER]) + struct.pack('>I', 1),
        bytes([migstream.EOF]),
    ]), max_size=12))
    return head + b''.join(body) + draw(st.binary(max_size=64))


@given(st.one_of(st.binary(max_size=1024), _streams()))
def test_any_migration_stream_ends_in_invalid_live_image(data):
    out = []
    _ends_in(exception.InvalidLiveImage, migstream.rename_ram_block,
             io.BufferedReader(io.BytesIO(data)), len(data), out.append,
             domainxml.LAZY_RAM_ID)


# Domain XML facts and the cookie -----------------------------------------

_tags = st.sampled_from(['domain', 'memory', 'vcpu', 'os', 'type', 'devices',
                         'disk', 'target', 'interface', 'mac', 'model',
                         'channel', 'genid', 'cookie', 'cpu', 'x'])
_attrs = st.dictionaries(st.sampled_from(['unit', 'arch', 'machine', 'dev',
                                          'bus', 'address', 'type', 'name']),
                         st.text(max_size=12), max_size=3)


def _xml_text(text):
    return (text.replace('&', '&amp;').replace('<', '&lt;')
            .replace('"', '&quot;'))


_elements = st.recursive(
    st.tuples(_tags, _attrs, st.text(max_size=20)).map(
        lambda t: '<%s %s>%s</%s>' % (t[0], ' '.join(
            '%s="%s"' % (k, _xml_text(v)) for k, v in t[1].items()),
            _xml_text(t[2]), t[0])),
    lambda inner: st.tuples(_tags, st.lists(inner, max_size=4)).map(
        lambda t: '<%s>%s</%s>' % (t[0], ''.join(t[1]), t[0])),
    max_leaves=20)

_xmlish = st.one_of(
    _elements, st.text(max_size=300), st.binary(max_size=300),
    st.sampled_from(['<!DOCTYPE d [<!ENTITY e "x">]><domain>&e;</domain>',
                     '<cookie>&e;</cookie>', '<cookie><?pi x?></cookie>',
                     '<domain><memory unit="k">١٢٣</memory></domain>',
                     '<domain><memory>99999999999999999999999</memory>'
                     '</domain>']))


@given(_xmlish)
def test_any_domain_xml_ends_in_unsafe_domain_xml(text):
    _ends_in(exception.UnsafeDomainXML, domainxml.facts, text, 'fuzzed')


@given(_xmlish)
def test_any_cookie_ends_in_unsafe_domain_xml(text):
    _ends_in(exception.UnsafeDomainXML, domainxml.check_cookie, text,
             'fuzzed')


# The Glance record and its signature -------------------------------------

def _good_props():
    record = images.Record(
        format='1', disk_image='0b6c7a3e-5f0e-4d8e-9f57-6a1f1e2f3a4b',
        project_id='p', memory_image='1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f',
        memory_sha256='a' * 64, memory_size='1048576',
        disk_hash='sha512:' + 'b' * 128, memory_mib='128', vcpus='1',
        machine='pc-i440fx-7.2', cpu_model='', qemu_version='7.2.22',
        source_instance='2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a',
        created_at='2026-11-26T10:00:00.000+00:00')
    return record.disk_image, record.properties(KEY)


@st.composite
def _glance_images(draw):
    image_id, props = _good_props()
    props = dict(props)
    for name in draw(st.lists(st.sampled_from(sorted(props)), max_size=3)):
        props[name] = draw(_json)
    image = {'id': draw(st.sampled_from([image_id, None, 7, image_id + '\n'])),
             'properties': props}
    if draw(st.booleans()):
        image['properties'] = draw(_json)
    return image


@given(_glance_images())
def test_any_glance_image_ends_in_untrusted_image(image):
    _ends_in(exception.UntrustedImage, images.Record.from_image, image, KEY)


@given(_json, _json)
def test_any_signature_ends_in_untrusted_image(record, signature):
    if not isinstance(record, dict) or not all(
            isinstance(v, str) for v in record.values()):
        record = {'a': 'b'}
    _ends_in(exception.UntrustedImage, signing.verify, KEY, record,
             signature, 'fuzzed')


@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=80)))
def test_any_manifest_signature_ends_in_untrusted_image(data, signature):
    _ends_in(exception.UntrustedImage, hostkey.verify_manifest, 'a' * 64,
             data, signature, 'fuzzed')


class _Domain:
    """What Guest asks of a libvirt domain here: its name."""

    def name(self):
        return 'clone-under-test'


_agent_values = st.one_of(_json, st.text(max_size=40).map(
    lambda t: {'exited': True, 'exitcode': 0, 'out-data': t}))


@given(st.lists(st.one_of(st.binary(max_size=200).map(
    lambda b: b.decode('latin-1')), _agent_values.map(
        lambda v: json.dumps({'return': v}))), min_size=1, max_size=4))
def test_any_guest_agent_reply_ends_in_guest_agent_error(replies):
    """The guest writes every agent reply: whatever it answers, running a
    command, reading a file or reading its clock returns values of the
    protocol's types or raises GuestAgentError, nothing else."""
    import libvirt_qemu

    from nova_live_snapshot import guest as guest_mod

    answers = iter(replies * 50)
    original = libvirt_qemu.qemuAgentCommand
    libvirt_qemu.qemuAgentCommand = lambda *args: next(answers)
    try:
        g = guest_mod.Guest(_Domain())
        result = _ends_in(exception.GuestAgentError, g.agent_exec,
                          ['/bin/true'], 0)
        if result is not None:
            rc, out, err = result
            assert rc is None or type(rc) is int
            assert isinstance(out, bytes) and isinstance(err, bytes)
        data = _ends_in(exception.GuestAgentError, g.agent_read_file, '/f')
        assert data is None or isinstance(data, bytes)
        now = _ends_in(exception.GuestAgentError, g.agent_time_ns)
        assert now is None or type(now) is int
    finally:
        libvirt_qemu.qemuAgentCommand = original
