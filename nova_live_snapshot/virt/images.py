"""Live images in Glance, and the compute host's cache of memory streams.

A live image is two Glance images:

* the **disk image**: the frozen disk (qcow2), a regular image that users
  see, list and boot from. Its ``live_snapshot_*`` properties are the
  live-image record (:class:`Record`), signed by the capturing compute host
  (:mod:`nova_live_snapshot.signing`); it requires the
  ``CUSTOM_LIVE_SNAPSHOT`` trait so that the scheduler only picks hosts
  that can restore it, and its ``min_ram`` is the source's RAM.
* the **memory image**: the memory stream (a libvirt save image), hidden
  (``os_hidden``) so that it does not clutter image lists, and pointed to by
  the disk image's record.

Everything read back from Glance is untrusted until the signature over the
record has been checked, and the memory stream until its SHA-256 matches the
signed one.
"""

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import time

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import protocol
from nova_live_snapshot import records
from nova_live_snapshot import signing

LOG = logging.getLogger(__name__)

__all__ = ['Record', 'glance_hash',
           'is_live_image', 'MemoryCache']


# Anchored with \Z: "$" also matches before a final newline.
_UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                   r'[0-9a-f]{12}\Z')
_HEX64 = re.compile(r'^[0-9a-f]{64}\Z')
_HASH = re.compile(r'^[a-z0-9]{1,16}:[0-9a-f]{32,128}\Z')
_TOKEN = re.compile(r'^[A-Za-z0-9._:+-]{1,64}\Z')
_INT = re.compile(r'^[1-9][0-9]{0,12}\Z')


# What each record field must look like: the record is parsed before its
# signature is checked, so nothing unbounded or odd gets that far.
_RULES = {
    'format': (re.compile(r'^%s\Z' % protocol.FORMAT),
               'format %s' % protocol.FORMAT),
    'disk_image': (_UUID, 'a UUID'),
    'project_id': (re.compile(r'^[0-9a-zA-Z_-]{1,64}\Z'), 'a project id'),
    'memory_image': (_UUID, 'a UUID'),
    'memory_sha256': (_HEX64, 'a SHA-256'),
    'memory_size': (_INT, 'a size'),
    'disk_hash': (_HASH, 'an algorithm:hash pair'),
    'memory_mib': (re.compile(r'^[1-9][0-9]{0,6}\Z'), 'a size in MiB'),
    'vcpus': (re.compile(r'^[1-9][0-9]{0,3}\Z'), 'a vCPU count'),
    'machine': (_TOKEN, 'a machine type'),
    'cpu_model': (re.compile(r'^[A-Za-z0-9._:+-]{0,64}\Z'), 'a CPU model'),
    'qemu_version': (re.compile(r'^[0-9]{1,4}(\.[0-9]{1,4}){2}\Z'),
                     'a version'),
    'source_instance': (_UUID, 'a UUID'),
    'created_at': (re.compile(r'^[0-9T:.+-]{10,40}Z?\Z'), 'a timestamp'),
}


@dataclasses.dataclass(frozen=True)
class Record:
    """The signed description of a live image, as stored in the disk
    image's properties (without the ``live_snapshot_`` prefix).

    ``disk_image`` is the disk image's own Glance id: the signature binds
    the record to that image, whose data Glance never lets anyone change
    once it is active, and ``disk_hash`` is Glance's own hash of that data.
    """

    format: str
    disk_image: str
    project_id: str
    memory_image: str
    memory_sha256: str
    memory_size: str
    disk_hash: str
    memory_mib: str
    vcpus: str
    machine: str
    cpu_model: str
    qemu_version: str
    source_instance: str
    created_at: str

    def signed_fields(self):
        return dataclasses.asdict(self)

    def properties(self, key):
        """The Glance properties that store this record, signature included.

        ``disk_image`` is the image they are set on: not stored twice.
        """
        fields = self.signed_fields()
        props = {protocol.PREFIX + k: v for k, v in fields.items()
                 if k != 'disk_image'}
        props[protocol.SIGNATURE_PROPERTY] = signing.sign(key, fields)
        return props

    @classmethod
    def from_image(cls, image, key):
        """The record of Glance image ``image`` (a dict as Nova's image API
        returns it), after its signature has been checked.

        :raises UntrustedImage: not a live image this cloud signed.
        :raises NotConfigured: this host has no signing key.
        """
        props = image.get('properties') or {}
        image_id = image.get('id')
        if not isinstance(props, dict):
            raise exception.UntrustedImage(
                image=image_id, reason='its properties are not a mapping')
        values = {}
        for name, (pattern, what) in _RULES.items():
            value = (image_id if name == 'disk_image'
                     else props.get(protocol.PREFIX + name))
            if not isinstance(value, str) or not pattern.match(value):
                raise exception.UntrustedImage(
                    image=image_id, reason='its property %s%s is missing or '
                    'not %s' % (protocol.PREFIX, name, what))
            values[name] = value
        record = cls(**values)
        signing.verify(key, record.signed_fields(),
                       props.get(protocol.SIGNATURE_PROPERTY), image_id)
        return record

    @property
    def ram_mib(self):
        return int(self.memory_mib)

    @property
    def cpus(self):
        return int(self.vcpus)


def glance_hash(image):
    """Glance's own hash of an image's data, as a record stores it
    (``algorithm:hex``), from an image dict of Nova's image API."""
    return '%s:%s' % (image.get('os_hash_algo'), image.get('os_hash_value'))


def is_live_image(instance):
    """Whether ``instance`` is being built from a live image, by the image
    properties Nova copied into its system metadata (unknown properties
    only reach the driver there). Only a hint: the record is then read from
    Glance and its signature checked."""
    return bool(instance.system_metadata.get(
        'image_%sformat' % protocol.PREFIX))


def memory_image_meta(name, disk_image_id):
    """Glance metadata of the hidden memory image of live image ``name``."""
    return {
        'name': '%s (memory state)' % name,
        'disk_format': 'raw',
        'container_format': 'bare',
        'visibility': 'private',
        'os_hidden': True,
        'properties': {protocol.ROLE_PROPERTY: protocol.MEMORY_ROLE,
                       protocol.DISK_IMAGE_PROPERTY: disk_image_id},
    }


def check_key(key):
    """Refuse to go on without a usable signing key."""
    signing.sign(key, {})


# A partial download's or copy's file naming the process that makes it.
OWNER = 'owner.pid'


class MemoryCache:
    """Memory streams of live images on this compute host, one file each,
    named by the memory image's Glance id.

    A stream enters verified (its SHA-256 matched the signed record) and the
    directory is root's alone (0700). Next to each stream, ``<key>.sha256``
    says which SHA-256 it was verified against: a record is served a cached
    stream only when that is its own signed hash (and the size its own),
    otherwise the stream is fetched and verified again. Each
    entry has a lock file: a restore holds it shared while it reads the
    stream, a download holds it exclusively, and eviction only takes entries
    whose lock it gets without waiting.
    """

    def __init__(self, root, max_mib):
        self.root = root
        self.max_bytes = max_mib * 1024 * 1024

    def _ensure_root(self):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)

    def _path(self, key):
        if not _UUID.match(key or ''):
            raise exception.InvalidLiveImage(
                image=key, reason='a memory image id must be a UUID')
        return os.path.join(self.root, key)

    def _lock(self, key, shared=False, blocking=True):
        return records.lock(self._path(key) + '.lock', shared=shared,
                            blocking=blocking)

    def _write_hash(self, key, sha256):
        path = self._path(key) + '.sha256'
        with os.fdopen(os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT
                               | os.O_TRUNC, 0o600), 'w') as f:
            f.write(sha256)
        os.rename(path + '.tmp', path)

    def _verified_as(self, key, sha256, size):
        """Whether cached ``key`` was verified against ``sha256`` and still
        has ``size`` bytes."""
        try:
            with open(self._path(key) + '.sha256') as f:
                recorded = f.read(65)
            actual_size = os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return False
        return recorded == sha256 and actual_size == int(size)

    def add(self, key, source, sha256):
        """Move file ``source`` (a memory stream just captured here, of
        SHA-256 ``sha256``) into the cache as ``key``."""
        self._ensure_root()
        self._write_hash(key, sha256)
        dest = self._path(key)
        try:
            os.rename(source, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            partial = records.make_partial(self.root, key, OWNER)
            try:
                copy = os.path.join(partial, 'stream')
                shutil.copyfile(source, copy)
                os.chmod(copy, 0o600)
                os.rename(copy, dest)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            os.unlink(source)
        self.evict(keep=key)

    @contextlib.contextmanager
    def use(self, key, sha256, size, fetch, image):
        """The path of stream ``key``, fetched with ``fetch(path)`` and
        verified against ``sha256`` and ``size`` when it is not cached.

        :param image: the live image's id, for error messages.
        :raises ChecksumMismatch: the downloaded stream is not the signed one
            (nothing of it is kept).
        """
        self._ensure_root()
        path = self._path(key)
        with self._lock(key) as lock:
            if not self._verified_as(key, sha256, size):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                started = time.monotonic()
                self._fetch(path, sha256, size, fetch, image)
                self._write_hash(key, sha256)
                # Operators (and the two-host scenarios) tell a host's
                # first clone of an image, which downloads, from the next.
                LOG.info('Fetched memory stream %s of live image %s into '
                         'this host\'s cache: %d MiB in %.2f s, SHA-256 '
                         'verified', key, image, int(size) >> 20,
                         time.monotonic() - started)
            else:
                LOG.info('Memory stream %s of live image %s served from '
                         'this host\'s cache', key, image)
            os.utime(path)
            lock.share()
            yield path
        self.evict()

    def _fetch(self, path, sha256, size, fetch, image):
        partial = records.make_partial(self.root, os.path.basename(path),
                                       OWNER)
        download = os.path.join(partial, 'stream')
        try:
            fd = os.open(download, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600)
            os.close(fd)
            fetch(download)
            actual, actual_size = liveimage.sha256_file(download)
            if actual_size != int(size):
                raise exception.UntrustedImage(
                    image=image, reason='its memory stream is %d bytes, the '
                    'signed record says %s' % (actual_size, size))
            if actual != sha256:
                raise exception.ChecksumMismatch(
                    image=image, file='the memory stream',
                    actual=actual, expected=sha256)
            os.rename(download, path)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def entries(self):
        """(key, bytes, last used) of every cached stream, oldest first."""
        found = []
        if not os.path.isdir(self.root):
            return found
        for name in os.listdir(self.root):
            if not _UUID.match(name):
                continue
            try:
                st = os.stat(os.path.join(self.root, name))
            except FileNotFoundError:
                continue
            found.append((name, st.st_size, st.st_mtime))
        return sorted(found, key=lambda e: e[2])

    def remove(self, key):
        """Drop ``key`` unless a restore is reading it; True if dropped."""
        with self._lock(key, blocking=False) as lock:
            if lock is None:
                return False
            for suffix in ('', '.sha256'):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(key) + suffix)
            os.unlink(self._path(key) + '.lock')
            return True

    def evict(self, keep=None):
        """Drop the least recently used streams beyond the size limit."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for key, size, _ in entries:
            if total <= self.max_bytes:
                break
            if key != keep and self.remove(key):
                LOG.info('Evicted memory stream %s (%d MiB) from the cache',
                         key, size // (1024 * 1024))
                total -= size

    def prune(self, image_exists):
        """Drop the streams whose memory image is gone from Glance.

        A cached stream is a guest's memory: once its live image is deleted
        it has no reason to stay on the host. ``image_exists(key)`` answers
        True, False, or None when it cannot tell (the entry then stays).
        Lock files left by downloads that failed go too.

        :returns: the keys dropped.
        """
        dropped = []
        for key, size, _ in self.entries():
            if image_exists(key) is False and self.remove(key):
                LOG.info('Removed memory stream %s (%d MiB) from the cache: '
                         'its live image was deleted', key,
                         size // (1024 * 1024))
                dropped.append(key)
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                key = name[:-len('.lock')]
                if (name.endswith('.lock') and _UUID.match(key)
                        and not os.path.exists(self._path(key))):
                    self.remove(key)
        return dropped

    def remove_partials(self):
        """Downloads and copies whose process died (a crash), and the
        partial files of releases that named no owner."""
        if not os.path.isdir(self.root):
            return
        records.sweep_partials(self.root, OWNER)
        for name in os.listdir(self.root):
            if '.partial' in name and not name.startswith(
                    records.PARTIAL_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, name))
