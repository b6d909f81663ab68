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

The stores around those records (live images, lazy templates, the memory
stream cache, clones, the capture journal) share their other habits here
too: work in progress in a partial directory that names its owner, swept
once the owner is gone (:func:`make_partial`, :func:`sweep_partials`), the
free space a write needs checked before it starts (:func:`free_mib`), and
one lock per store entry (:func:`lock`).
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import uuid as uuidlib

from nova_live_snapshot import exception

__all__ = ['MAX_BYTES', 'PARTIAL_PREFIX', 'Lock', 'free_mib', 'lock',
           'make_partial', 'owner_alive', 'read', 'strict_json',
           'sweep_partials', 'write']

PARTIAL_PREFIX = '.partial-'

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


def make_partial(root, name, owner_file, suffix=None, mode=0o700):
    """A new partial directory ``<root>/.partial-<name>-<suffix>`` (eight
    random hex digits unless given) for work
    in progress, never listed as a finished entry, holding this process's
    id in ``owner_file`` so that :func:`sweep_partials` tells a dead owner
    from a live one. Published by renaming it into place.

    :returns: its path.
    """
    path = os.path.join(root, '%s%s-%s' % (
        PARTIAL_PREFIX, name, suffix or uuidlib.uuid4().hex[:8]))
    os.mkdir(path, mode)
    with open(os.path.join(path, owner_file), 'w') as f:
        f.write(str(os.getpid()))
    return path


def owner_alive(partial, owner_file):
    """Whether the process named in ``partial``'s ``owner_file`` runs."""
    try:
        with open(os.path.join(partial, owner_file)) as f:
            os.kill(int(f.read().strip()), 0)
    except (FileNotFoundError, NotADirectoryError, ValueError,
            ProcessLookupError):
        return False
    return True


def sweep_partials(root, owner_file, before_remove=None):
    """Remove the partial directories under ``root`` whose owner is gone.

    :param before_remove: called with the paths about to go (each ending in
        ``/``), to remove what outside the directory still uses them.
    :returns: the names removed.
    """
    if not os.path.isdir(root):
        return []
    dead = [entry for entry in sorted(os.listdir(root))
            if entry.startswith(PARTIAL_PREFIX)
            and not owner_alive(os.path.join(root, entry), owner_file)]
    if dead and before_remove is not None:
        before_remove([os.path.join(root, e) + '/' for e in dead])
    for entry in dead:
        shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return dead


def free_mib(path):
    """MiB an unprivileged writer may still use on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


class Lock:
    """A lock held on a store entry (:func:`lock`)."""

    def __init__(self, fd):
        self._fd = fd

    def share(self):
        """Let readers in beside this holder (from exclusive to shared),
        which a writer done writing does before it reads."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)


@contextlib.contextmanager
def lock(path, shared=False, blocking=True):
    """Hold a lock on ``path`` (a lock file, created if need be, or a
    directory) for the ``with`` block: a :class:`Lock`, or None, holding
    nothing, when another holds it and ``blocking`` is off.

    An ``flock`` on a descriptor of its own: it excludes the other threads
    of this process as well as other processes, shared or exclusive, and
    the kernel wakes a waiter when it is released; it goes when the block
    ends or the process dies. Not a library's: fasteners' inter-process
    locks are POSIX record locks, which belong to the process (two threads
    of one nova-compute would both hold the same one); oslo.concurrency's
    external lock adds a semaphore for threads but has no shared mode,
    which the memory stream cache needs (restores read while eviction and
    downloads wait); and both wait by polling, sleeping between attempts.
    """
    if os.path.isdir(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, flags if blocking else flags | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield Lock(fd)
    finally:
        os.close(fd)
