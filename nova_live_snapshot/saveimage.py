"""The libvirt QEMU save-image container: read it strictly, write it for clones.

A live image's memory file is what libvirt writes for ``virDomainSave`` and for
external memory snapshots (``src/qemu/qemu_saveimage.h`` in libvirt)::

    offset 0   magic      16 bytes  b'LibvirtQemudSave' (b'LibvirtQemudPart'
                                    while libvirt is still writing it)
    offset 16  version    u32       2 (version 1 had no cookie)
               data_len   u32       bytes of domain XML, cookie and padding
               was_running u32      resume the domain after restore
               compressed u32       0 raw, 1 gzip, 2 bzip2, 3 xz, 4 lzop
               cookieOffset u32     cookie offset inside the data, 0 if none
               unused     14 x u32
    offset 92  domain XML, NUL, migration cookie, NUL, zero padding
    offset 92 + data_len            the QEMU migration stream

The integers are in the host's byte order; libvirt on x86_64 writes them
little-endian and reads a byte-swapped header by noticing version > 2. We
accept only the little-endian version 2 form that this host's libvirt writes.

Everything here treats the file as untrusted input: lengths are checked
against the file's size before anything is read, the text parts must be
NUL-terminated UTF-8, and nothing is parsed beyond the container. The domain
XML and the cookie are handed back as strings for :mod:`domainxml` to judge.
"""

import dataclasses
import enum
import struct

from nova_live_snapshot import exception

__all__ = ['Compression', 'SaveImageHeader', 'SaveImage', 'read', 'encode',
           'HEADER_SIZE']

MAGIC = b'LibvirtQemudSave'
PARTIAL_MAGIC = b'LibvirtQemudPart'
VERSION = 2
_STRUCT = struct.Struct('<16s5I14I')
HEADER_SIZE = _STRUCT.size  # 92
assert HEADER_SIZE == 92

# An XML with its cookie of a few MiB is already absurd; refusing larger ones
# bounds what a crafted header can make us read into memory.
MAX_DATA_LEN = 16 * 1024 * 1024


class Compression(enum.IntEnum):
    """How libvirt compressed the QEMU stream (``compressed`` field)."""

    RAW = 0
    GZIP = 1
    BZIP2 = 2
    XZ = 3
    LZOP = 4


@dataclasses.dataclass(frozen=True)
class SaveImageHeader:
    """The fixed 92-byte header."""

    data_len: int
    was_running: bool
    compression: Compression
    cookie_offset: int
    version: int = VERSION

    @property
    def stream_offset(self):
        """Where the QEMU migration stream starts in the file."""
        return HEADER_SIZE + self.data_len

    def pack(self):
        return _STRUCT.pack(MAGIC, self.version, self.data_len,
                            int(self.was_running), int(self.compression),
                            self.cookie_offset, *([0] * 14))


@dataclasses.dataclass(frozen=True)
class SaveImage:
    """A parsed save image: header, the embedded texts and the stream extent."""

    header: SaveImageHeader
    domain_xml: str
    cookie: str
    file_size: int

    @property
    def stream_offset(self):
        return self.header.stream_offset

    @property
    def stream_size(self):
        return self.file_size - self.header.stream_offset


def _invalid(origin, reason):
    return exception.InvalidLiveImage(image=origin, reason=reason)


def _cstring(data, start, what, origin):
    end = data.find(b'\0', start)
    if end < 0:
        raise _invalid(origin, '%s in the save-image header is not '
                               'NUL-terminated' % what)
    try:
        return data[start:end].decode('utf-8'), end
    except UnicodeDecodeError:
        raise _invalid(origin, '%s in the save-image header is not UTF-8'
                       % what) from None


def read(fileobj, file_size, origin='memory image'):
    """Parse the container at the start of ``fileobj``.

    :param fileobj: a binary file positioned at offset 0.
    :param file_size: the file's size in bytes (from ``fstat``), used to
        check ``data_len`` before reading it.
    :param origin: names the file in error messages.
    :returns: a :class:`SaveImage`.
    :raises InvalidLiveImage: the header is unfinished, foreign, or its
        lengths or texts are inconsistent with the file.
    """
    raw = fileobj.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise _invalid(origin, 'the file is %d bytes, shorter than the %d-byte '
                               'save-image header' % (len(raw), HEADER_SIZE))
    (magic, version, data_len, was_running, compressed, cookie_offset,
     *_unused) = _STRUCT.unpack(raw)
    if magic == PARTIAL_MAGIC:
        raise _invalid(origin, 'the save image is unfinished (libvirt was '
                               'still writing it when it was copied)')
    if magic != MAGIC:
        raise _invalid(origin, 'not a libvirt QEMU save image (magic %r, '
                               'expected %r)' % (magic, MAGIC))
    if version != VERSION:
        raise _invalid(origin, 'save-image version %d is not supported (only '
                               'version %d, little-endian)' % (version, VERSION))
    if HEADER_SIZE + data_len >= file_size:
        raise _invalid(origin, 'header data_len %d points past the end of the '
                               'file (%d bytes), leaving no QEMU stream'
                       % (data_len, file_size))
    if data_len > MAX_DATA_LEN:
        raise _invalid(origin, 'header data_len %d exceeds the %d-byte limit'
                       % (data_len, MAX_DATA_LEN))
    if was_running not in (0, 1):
        raise _invalid(origin, 'header was_running is %d, not 0 or 1'
                       % was_running)
    try:
        compression = Compression(compressed)
    except ValueError:
        raise _invalid(origin, 'unknown compression %d in the save-image '
                               'header' % compressed) from None
    data = fileobj.read(data_len)
    if len(data) != data_len:
        raise _invalid(origin, 'the file ends inside the save-image header')
    domain_xml, xml_end = _cstring(data, 0, 'the domain XML', origin)
    cookie = ''
    if cookie_offset:
        if cookie_offset != xml_end + 1 or cookie_offset >= data_len:
            raise _invalid(origin, 'header cookieOffset %d does not follow '
                                   'the domain XML' % cookie_offset)
        cookie, _ = _cstring(data, cookie_offset, 'the migration cookie',
                             origin)
    header = SaveImageHeader(data_len=data_len, was_running=bool(was_running),
                             compression=compression,
                             cookie_offset=cookie_offset, version=version)
    return SaveImage(header=header, domain_xml=domain_xml, cookie=cookie,
                     file_size=file_size)


def encode(domain_xml, cookie, *, was_running, compression, align=4096):
    """Build the header and data that precede a QEMU stream.

    The result is padded with zeros to a multiple of ``align`` bytes, as
    libvirt pads its own, so that the stream starts on a block boundary.

    :returns: bytes of length ``SaveImageHeader.stream_offset``.
    """
    xml = domain_xml.encode('utf-8') + b'\0'
    data = xml
    cookie_offset = 0
    if cookie:
        cookie_offset = len(xml)
        data += cookie.encode('utf-8') + b'\0'
    total = HEADER_SIZE + len(data)
    padded = -(-total // align) * align
    data += b'\0' * (padded - total)
    header = SaveImageHeader(data_len=len(data), was_running=was_running,
                             compression=Compression(compression),
                             cookie_offset=cookie_offset)
    return header.pack() + data
