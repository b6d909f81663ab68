"""The small JSON records a host keeps about its own state.

Clone records, the capture journal and lazy templates' records are a few
hundred bytes each, written by this host and read back by it, often after
a crash or a restart, to decide what to resume, reuse or delete. They sit
beside files QEMU can reach (a clone's directory holds its disk), so a
record read back is untrusted input like a live image's manifest: it is
opened without following a symbolic link, read up to a bound, parsed
strictly (:func:`strict_json`) and must be a JSON object; any failure is
one :class:`~nova_live_snapshot.exception.UnreadableRecord` naming the
file. A record is written whole or not at all, and durably, because the
recovery that reads it trusts it: a temporary file, fsync'ed, renamed over
the old one.
"""

import errno
import json
import os
import stat

from nova_live_snapshot import exception

__all__ = ['MAX_BYTES', 'read', 'strict_json', 'write']

# The largest record this project writes is a clone's, with its
# re-identification report: a few KiB.
MAX_BYTES = 1 << 20


def _reject_constant(name):
    raise ValueError('%s is not a JSON number' % name)


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            # Two parsers could read two different records from one file.
            raise ValueError('key %r appears twice' % key)
        seen[key] = value
    return seen


def strict_json(text, what):
    """Parse untrusted JSON ``text`` (str or bytes): no NaN or Infinity, no
    duplicate keys, no nesting deep enough to exhaust the parser.

    :raises ValueError: naming ``what`` and the problem.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode('utf-8')
        return json.loads(text, parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise ValueError('%s is not UTF-8: %s' % (what, e)) from None
    except RecursionError:
        raise ValueError('%s is nested too deeply' % what) from None
    except ValueError as e:
        raise ValueError('%s is not JSON: %s' % (what, e)) from None


def read(path):
    """The JSON object recorded in ``path``.

    :raises FileNotFoundError: there is no record.
    :raises UnreadableRecord: it is a symbolic link or not a regular file,
        larger than :data:`MAX_BYTES`, not strict JSON, or not an object.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise exception.UnreadableRecord(
                path=path, reason='it is a symbolic link') from None
        raise
    with os.fdopen(fd, 'rb') as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise exception.UnreadableRecord(path=path,
                                             reason='not a regular file')
        text = f.read(MAX_BYTES + 1)
    if len(text) > MAX_BYTES:
        raise exception.UnreadableRecord(
            path=path, reason='larger than %d bytes' % MAX_BYTES)
    try:
        data = strict_json(text, os.path.basename(path))
    except ValueError as e:
        raise exception.UnreadableRecord(path=path, reason=str(e)) from None
    if not isinstance(data, dict):
        raise exception.UnreadableRecord(path=path,
                                         reason='not a JSON object')
    return data


def write(path, data, indent=None):
    """Record ``data`` (a JSON object) in ``path``, mode 0600: whole or not
    at all, fsync'ed before it replaces the old record."""
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(data, f, indent=indent, sort_keys=indent is not None)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
