"""The save-image header codec: what libvirt writes, we read; what we write,
libvirt reads; and a crafted header is refused before it is trusted."""

import io
import struct

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import saveimage

XML = "<domain type='qemu'><name>a</name></domain>"
COOKIE = '<cookie><cpu mode="custom"/></cookie>'
STREAM = b'QEVM' + b'\x00\x00\x00\x03' + b'x' * 100


def _image(domain_xml=XML, cookie=COOKIE, stream=STREAM, **kw):
    kw.setdefault('was_running', True)
    kw.setdefault('compression', saveimage.Compression.RAW)
    return saveimage.encode(domain_xml, cookie, **kw) + stream


def _read(data):
    return saveimage.read(io.BytesIO(data), len(data), origin='test.save')


def _patch(data, field, value):
    """Overwrite one u32 header field (0 version .. 4 cookieOffset)."""
    off = 16 + 4 * field
    return data[:off] + struct.pack('<I', value) + data[off + 4:]


def test_round_trip_keeps_xml_cookie_flags_and_stream_offset():
    data = _image()
    image = _read(data)
    assert image.domain_xml == XML
    assert image.cookie == COOKIE
    assert image.header.was_running is True
    assert image.header.compression is saveimage.Compression.RAW
    assert data[image.stream_offset:] == STREAM
    assert image.stream_size == len(STREAM)


def test_header_is_92_bytes_and_stream_block_aligned():
    data = _image()
    assert saveimage.HEADER_SIZE == 92
    assert _read(data).stream_offset % 4096 == 0
    assert data[:16] == b'LibvirtQemudSave'


def test_cookie_offset_points_after_the_xml_nul():
    image = _read(_image())
    assert image.header.cookie_offset == len(XML.encode()) + 1


def test_no_cookie_gives_zero_offset():
    image = _read(_image(cookie=''))
    assert image.header.cookie_offset == 0
    assert image.cookie == ''


def test_unicode_xml_survives():
    xml = "<domain><name>caf\u00e9</name></domain>"
    assert _read(_image(domain_xml=xml)).domain_xml == xml


@pytest.mark.parametrize('mutate, message', [
    (lambda d: b'NotLibvirtAtAll!' + d[16:], 'not a libvirt QEMU save image'),
    (lambda d: b'LibvirtQemudPart' + d[16:], 'unfinished'),
    (lambda d: _patch(d, 0, 3), 'version 3 is not supported'),
    (lambda d: _patch(d, 1, len(d)), 'points past the end'),
    (lambda d: _patch(d, 1, 1 << 30), 'points past the end'),
    (lambda d: _patch(d, 2, 7), 'was_running is 7'),
    (lambda d: _patch(d, 3, 9), 'unknown compression 9'),
    (lambda d: _patch(d, 4, 3), 'cookieOffset 3 does not follow'),
    (lambda d: d[:50], 'shorter than the 92-byte'),
])
def test_crafted_headers_are_refused_with_a_reason(mutate, message):
    with pytest.raises(exception.InvalidLiveImage, match=message):
        _read(mutate(_image()))


def test_huge_data_len_is_refused_before_it_is_read():
    data = _patch(_image(stream=b'\0' * (17 * 1024 * 1024)), 1,
                  16 * 1024 * 1024 + 1)
    with pytest.raises(exception.InvalidLiveImage, match='exceeds'):
        _read(data)


def test_xml_without_nul_is_refused():
    data = bytearray(_image(cookie=''))
    header = _read(bytes(data)).header
    # Fill the whole data area with non-NUL bytes.
    data[92:92 + header.data_len] = b'A' * header.data_len
    with pytest.raises(exception.InvalidLiveImage, match='not NUL-terminated'):
        _read(bytes(data))


def test_xml_that_is_not_utf8_is_refused():
    data = bytearray(_image())
    data[92] = 0xff
    with pytest.raises(exception.InvalidLiveImage, match='not UTF-8'):
        _read(bytes(data))


def test_encode_refuses_unknown_compression():
    with pytest.raises(ValueError):
        saveimage.encode(XML, '', was_running=True, compression=42)
