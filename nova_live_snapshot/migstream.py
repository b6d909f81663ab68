"""QEMU's migration stream, read just far enough to rename a RAM block.

A lazy template maps its guest RAM from a file of ours (``memory-backend-file``
passed with ``<qemu:commandline>``). libvirt always creates the machine's
default RAM backend itself, with the id ``pc.ram``, so our backend must have
another id, and QEMU names a RAM block after its backend's id. A live image's
stream, made by an ordinary domain, carries its RAM under ``pc.ram``; QEMU
refuses to load it into a machine whose RAM block has another name ("Unknown
ramblock"). :func:`rename_ram_block` copies the stream with that one name
changed, everywhere QEMU wrote it: the block list of the RAM section's setup
and the page records that name their block.

The stream layout is QEMU's precopy format (``migration/savevm.c`` and
``migration/ram.c``, file version 3): a header, an optional configuration
section, then sections. The RAM sections (``START``/``PART``/``END`` of the
``ram`` handler) come before any device section and are made of page records
whose sizes follow from their flags, so they can be walked without knowing
the devices; the first device section and everything after it is copied
unchanged. QEMU 10's switch-over-start command between them is copied as it
is. Anything this walk does not know (compressed or XBZRLE pages,
other iterable sections, RDMA hooks) is refused rather than guessed.
"""

import io
import struct

from nova_live_snapshot import exception

__all__ = ['rename_ram_block', 'DEFAULT_RAM_BLOCK']

DEFAULT_RAM_BLOCK = 'pc.ram'

FILE_MAGIC = 0x5145564d
FILE_VERSION = 3

# Section types (migration/savevm.c).
EOF = 0x1f
START = 0x01
PART = 0x02
END = 0x03
FULL = 0x04
SUBSECTION = 0x05
CONFIGURATION = 0x07
COMMAND = 0x08
FOOTER = 0x7e

# The one command this walk passes on (migration/savevm.c, qemu_vm_cmd):
# QEMU 10.0 marks the start of the switch-over with it, just before the
# last RAM section, on machine types of 10.0 and later (bookworm-backports'
# QEMU), with no data.
SWITCHOVER_START = 11

# RAM record flags (migration/ram.c), in the low bits of a page address.
ZERO = 0x02
MEM_SIZE = 0x04
PAGE = 0x08
EOS = 0x10
CONTINUE = 0x20
_KNOWN = ZERO | MEM_SIZE | PAGE | EOS | CONTINUE
PAGE_SIZE = 4096        # TARGET_PAGE_SIZE of x86_64
_FLAG_MASK = PAGE_SIZE - 1

# The configuration section's subsections and the fixed size of each one's
# fields ("capabilities" has a count-prefixed list: handled apart).
_CONFIG_SUBSECTIONS = {'configuration/target-page-bits': 4,
                       'configuration/uuid': 16}


class _Copier:
    """Reads the input stream and writes what it read (or a replacement)."""

    def __init__(self, src, length, write, origin):
        self.src = src
        self.remaining = length
        self.write_out = write
        self.origin = origin
        self.out = bytearray()

    def fail(self, reason):
        return exception.InvalidLiveImage(
            image=self.origin, reason='its QEMU stream %s' % reason)

    def take(self, n):
        if n > self.remaining:
            raise self.fail('ends early')
        data = self.src.read(n)
        if len(data) != n:
            raise self.fail('ends early')
        self.remaining -= n
        return data

    def copy(self, n):
        data = self.take(n)
        self.emit(data)
        return data

    def emit(self, data):
        self.out += data
        if len(self.out) >= 1 << 20:
            self.flush()

    def flush(self):
        if self.out:
            self.write_out(bytes(self.out))
            self.out.clear()

    def peek_byte(self):
        if not self.remaining:
            return None
        data = self.src.peek(1)[:1]
        return data[0] if data else None

    def u8(self):
        return self.copy(1)[0]

    def be32(self):
        return struct.unpack('>I', self.copy(4))[0]

    def be64(self):
        return struct.unpack('>Q', self.copy(8))[0]

    def rest(self):
        self.flush()
        while self.remaining:
            self.write_out(self.take(min(self.remaining, 1 << 20)))


def _config(c):
    """The configuration section: machine name, then known subsections."""
    c.copy(c.be32())
    while c.peek_byte() == SUBSECTION:
        c.u8()
        name = c.copy(c.u8()).decode('ascii', 'replace')
        c.be32()                                   # version
        if name == 'configuration/capabilities':
            for _ in range(c.be32()):
                cap = c.copy(c.u8()).decode('ascii', 'replace')
                if cap == 'x-ignore-shared':
                    raise c.fail('was saved with x-ignore-shared: it holds '
                                 'no guest RAM')
        elif name in _CONFIG_SUBSECTIONS:
            c.copy(_CONFIG_SUBSECTIONS[name])
        else:
            raise c.fail('has an unknown configuration subsection %s' % name)


def _block_name(c, old, new):
    """A block name (length byte and text), replaced when it is ``old``."""
    name = c.take(c.take(1)[0])
    if name == old:
        name = new
    c.emit(bytes([len(name)]) + name)


def _ram_records(c, old, new):
    """Page records up to the end-of-section record."""
    while True:
        addr = c.be64()
        flags = addr & _FLAG_MASK
        if flags & ~_KNOWN:
            raise c.fail('has RAM records this engine does not read '
                         '(flags 0x%x: compressed, XBZRLE or RDMA)' % flags)
        if flags & EOS:
            return
        if flags & MEM_SIZE:
            total, seen = addr & ~_FLAG_MASK, 0
            while seen < total:
                _block_name(c, old, new)
                seen += c.be64()
            continue
        if not flags & CONTINUE:
            _block_name(c, old, new)
        if flags & ZERO:
            c.copy(1)
        elif flags & PAGE:
            c.copy(PAGE_SIZE)
        else:
            raise c.fail('has a RAM record without data (flags 0x%x)' % flags)


def _footer(c, section_id):
    if c.peek_byte() == FOOTER:
        c.u8()
        if c.be32() != section_id:
            raise c.fail('has a section footer for the wrong section')


def rename_ram_block(src, length, write, new, old=DEFAULT_RAM_BLOCK,
                     origin='stream'):
    """Copy ``length`` bytes of QEMU stream from file ``src`` to ``write``
    (called with successive chunks), naming RAM block ``old`` ``new``.

    :raises InvalidLiveImage: the stream is not one this walk understands,
        naming what it found.
    """
    if not isinstance(src, io.BufferedReader):
        src = io.BufferedReader(src, 1 << 20)
    c = _Copier(src, length, write, origin)
    old, new = old.encode(), new.encode()
    if c.be32() != FILE_MAGIC or c.be32() != FILE_VERSION:
        raise c.fail('does not start with a QEMU version 3 header')
    if c.peek_byte() == CONFIGURATION:
        c.u8()
        _config(c)
    ram = None
    while True:
        kind = c.u8()
        if kind in (START, FULL):
            section_id = c.be32()
            idstr = c.copy(c.u8())
            c.be32()
            c.be32()                               # instance, version
            if kind == FULL:
                if ram is not None and ram != 'done':
                    raise c.fail('has a device section inside the RAM '
                                 'sections')
                break
            if idstr != b'ram' or ram is not None:
                raise c.fail('has an iterable section %r besides RAM'
                             % idstr.decode('ascii', 'replace'))
            ram = section_id
        elif kind in (PART, END):
            section_id = c.be32()
            if section_id != ram:
                raise c.fail('has a section %d this engine does not read'
                             % section_id)
        elif kind == EOF:
            break
        elif kind == COMMAND:
            command = struct.unpack('>HH', c.copy(4))
            if command != (SWITCHOVER_START, 0):
                raise c.fail('has a command %d (%d bytes) this engine does '
                             'not read' % command)
            continue
        else:
            raise c.fail('has a section of type 0x%02x before its device '
                         'state' % kind)
        _ram_records(c, old, new)
        _footer(c, section_id)
        if kind == END:
            ram = 'done'
    c.rest()
