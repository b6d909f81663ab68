"""Renaming the RAM block of a QEMU migration stream, on streams built by
hand in QEMU's precopy layout."""

import io
import struct

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import migstream as ms


def _name(text):
    return bytes([len(text)]) + text.encode()


def _section(kind, section_id, idstr=None):
    out = bytes([kind]) + struct.pack('>I', section_id)
    if idstr is not None:
        out += _name(idstr) + struct.pack('>II', 0, 4)
    return out


def _footer(section_id):
    return bytes([ms.FOOTER]) + struct.pack('>I', section_id)


def _rec(addr, flags):
    return struct.pack('>Q', addr | flags)


def _device(opaque=b'device state'):
    """A device section (not parsed: copied) and the end of the stream."""
    return _section(ms.FULL, 1, 'virtio-net') + opaque + bytes([ms.EOF])


def _command(command=ms.SWITCHOVER_START, data=b''):
    return bytes([ms.COMMAND]) + struct.pack('>HH', command, len(data)) + data


def _stream(ram='pc.ram', flags_extra=0, device=_device(), before_end=b''):
    # Guest memory that happens to hold the block's name, length byte and
    # all: data, never renamed.
    page = (_name('pc.ram') * 586)[:ms.PAGE_SIZE]
    out = struct.pack('>II', ms.FILE_MAGIC, ms.FILE_VERSION)
    out += bytes([ms.CONFIGURATION]) + struct.pack('>I', 13) + b'pc-i440fx-7.2'
    out += _section(ms.START, 0, 'ram')
    out += _rec(3 * ms.PAGE_SIZE, ms.MEM_SIZE)
    out += _name(ram) + struct.pack('>Q', 2 * ms.PAGE_SIZE)
    out += _name('pc.bios') + struct.pack('>Q', ms.PAGE_SIZE)
    out += _rec(0, ms.EOS) + _footer(0)
    out += _section(ms.PART, 0)
    out += _rec(0, ms.PAGE | flags_extra) + _name(ram) + page
    out += _rec(ms.PAGE_SIZE, ms.ZERO | ms.CONTINUE) + b'\x00'
    out += _rec(0, ms.PAGE) + _name('pc.bios') + page
    out += _rec(0, ms.EOS) + _footer(0)
    out += before_end
    out += _section(ms.END, 0)
    out += _rec(0, ms.ZERO) + _name(ram) + b'\x00'
    out += _rec(0, ms.EOS) + _footer(0)
    return out + device


def _rename(data, new='nls.ram'):
    chunks = []
    ms.rename_ram_block(io.BytesIO(data), len(data), chunks.append, new,
                        origin='test')
    return b''.join(chunks)


def test_every_mention_of_the_block_is_renamed_and_nothing_else():
    """The block list, the page records that name the block, a name of a
    different length; page data (holding the old name), other blocks and the
    device state after the RAM sections are copied as they are."""
    assert _rename(_stream()) == _stream(ram='nls.ram')
    assert _rename(_stream(), new='lazy-ram-x') == _stream(ram='lazy-ram-x')


def test_device_state_that_looks_like_a_block_name_is_not_touched():
    sneaky = _device(opaque=_name('pc.ram'))
    assert _rename(_stream(device=sneaky)).endswith(sneaky)


@pytest.mark.parametrize('flags, what', [(0x40, 'XBZRLE'),
                                         (0x100, 'compressed')])
def test_records_it_cannot_walk_are_refused(flags, what):
    with pytest.raises(exception.InvalidLiveImage, match=what):
        _rename(_stream(flags_extra=flags))


def test_a_truncated_stream_is_refused():
    data = _stream()
    with pytest.raises(exception.InvalidLiveImage, match='ends early'):
        _rename(data[:200])


def test_not_a_qemu_stream_is_refused():
    with pytest.raises(exception.InvalidLiveImage, match='version 3 header'):
        _rename(b'LibvirtQemudSave' + bytes(64))


def test_qemu_10_switchover_start_is_passed_on():
    """QEMU 10.0 (bookworm-backports) writes a switch-over-start command,
    no data, before the last RAM section: the walk copies it and renames
    the block in the sections around it."""
    assert _rename(_stream(before_end=_command())) == _stream(
        ram='nls.ram', before_end=_command())


@pytest.mark.parametrize('command', [
    _command(command=8, data=b'\0\0\0\4ABCD'),     # a packaged stream
    _command(data=b'x'),                            # unexpected data
])
def test_other_commands_are_refused(command):
    with pytest.raises(exception.InvalidLiveImage, match='command'):
        _rename(_stream(before_end=command))
