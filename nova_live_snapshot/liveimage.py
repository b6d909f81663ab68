"""The live image: a frozen value object, its manifest, and the store on disk.

On-disk layout (format version 1), one directory per image::

    <image_dir>/<name>/          mode 0700
        manifest.json            mode 0600, written last
        manifest.sig             mode 0600, HMAC of manifest.json under the
                                 host key (nova_live_snapshot.hostkey)
        memory.save              the libvirt save image (domain XML + QEMU stream)
        disk.qcow2               the frozen disk, flattened, no backing file

An image is created in ``<image_dir>/.partial-<name>-<random>/`` and renamed
into place only after every file and the manifest are fsync'ed, so a crash or
a full disk leaves at most a ``.partial-*`` directory, which is never listed as
an image and is removed by :meth:`ImageStore.remove_stale_partials`.

Everything read back from an image is untrusted: :meth:`ImageStore.get`
checks the manifest's signature (this host's key) before parsing it against
a strict schema; :meth:`ImageStore.verify` then checks the files' sizes and
every SHA-256 before any other byte of the image is parsed (the save-image
container, the embedded domain facts against the manifest, and, with
``qemu-img`` under resource limits, that the disk has no backing or external
data file), before a clone may use the image.
"""

import contextlib
import dataclasses
import datetime
import functools
import grp
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import uuid as uuidlib

import jsonschema

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import hostkey
from nova_live_snapshot import ownership
from nova_live_snapshot import qemuimg
from nova_live_snapshot import records
from nova_live_snapshot import saveimage

__all__ = ['FORMAT_VERSION', 'Manifest', 'LiveImage', 'ImageStore',
           'ImageWriter', 'VerifiedImage', 'file_digest', 'read_memory',
           'sha256_file', 'NAME_PATTERN']

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
SIGNATURE = 'manifest.sig'
MEMORY = 'memory.save'
DISK = 'disk.qcow2'
PARTIAL_PREFIX = records.PARTIAL_PREFIX
# A partial image's file naming the process that writes it.
WRITER = 'writer.pid'
# What a published image directory holds, and nothing else.
IMAGE_FILES = frozenset({MANIFEST, SIGNATURE, MEMORY, DISK})
# \Z, not $: "$" also matches before a final newline.
NAME_PATTERN = r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z'
_CHUNK = 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
# Bounds a record may claim: beyond them it is refused, not believed.
MAX_MEMORY_MIB = 4 * 1024 * 1024          # 4 TiB
MAX_FILE_BYTES = 1 << 50

_HEX64 = {'type': 'string', 'pattern': '^[0-9a-f]{64}\\Z'}
_FILE = {
    'type': 'object',
    'properties': {
        'name': {'type': 'string'},
        'size': {'type': 'integer', 'minimum': 1, 'maximum': MAX_FILE_BYTES},
        'sha256': _HEX64,
    },
    'required': ['name', 'size', 'sha256'],
    'additionalProperties': False,
}
_NUM = {'type': 'number', 'minimum': 0, 'maximum': 1e9}
MANIFEST_SCHEMA = {
    'type': 'object',
    'properties': {
        'format_version': {'const': FORMAT_VERSION},
        'id': {'type': 'string', 'format': 'uuid', 'maxLength': 36},
        'name': {'type': 'string', 'pattern': NAME_PATTERN},
        'created_at': {'type': 'string', 'maxLength': 40},
        'source': {
            'type': 'object',
            'properties': {
                'name': {'type': 'string', 'maxLength': 255},
                'uuid': {'type': 'string', 'maxLength': 36},
                'vcpus': {'type': 'integer', 'minimum': 1, 'maximum': 1024},
                'memory_mib': {'type': 'integer', 'minimum': 1,
                               'maximum': MAX_MEMORY_MIB},
                'machine': {'type': 'string', 'maxLength': 64},
                'arch': {'type': 'string', 'maxLength': 32},
                'cpu_model': {'type': ['string', 'null'], 'maxLength': 64},
            },
            'required': ['name', 'uuid', 'vcpus', 'memory_mib', 'machine',
                         'arch', 'cpu_model'],
            'additionalProperties': False,
        },
        'host': {
            'type': 'object',
            'properties': {
                'hostname': {'type': 'string', 'maxLength': 255},
                'libvirt_version': {'type': 'string', 'pattern':
                                    r'^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}\Z'},
                'qemu_version': {'type': 'string', 'pattern':
                                 r'^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}\Z'},
            },
            'required': ['hostname', 'libvirt_version', 'qemu_version'],
            'additionalProperties': False,
        },
        'capture': {
            'type': 'object',
            'properties': {
                'mode': {'enum': ['live', 'save']},
                'pause_ms': {'type': ['number', 'null'], 'minimum': 0,
                             'maximum': 1e9},
                'memory_staged': {'type': 'boolean'},
                'duration_s': _NUM,
            },
            'required': ['mode', 'pause_ms', 'memory_staged', 'duration_s'],
            'additionalProperties': False,
        },
        'files': {
            'type': 'object',
            'properties': {
                'memory': dict(_FILE, properties=dict(
                    _FILE['properties'], name={'const': MEMORY})),
                'disk': dict(_FILE, properties=dict(
                    _FILE['properties'], name={'const': DISK},
                    format={'const': 'qcow2'},
                    virtual_size={'type': 'integer', 'minimum': 1,
                                  'maximum': MAX_FILE_BYTES}),
                    required=_FILE['required'] + ['format', 'virtual_size']),
            },
            'required': ['memory', 'disk'],
            'additionalProperties': False,
        },
    },
    'required': ['format_version', 'id', 'name', 'created_at', 'source',
                 'host', 'capture', 'files'],
    'additionalProperties': False,
}


def sha256_file(path, dest=None):
    """SHA-256 of ``path``; with ``dest``, copy it there on the way (one read).

    The copy is fsync'ed. Returns ``(hex digest, size)``.
    """
    return file_digest(path, 'sha256', dest)


def file_digest(path, algorithm, dest=None):
    """:func:`sha256_file` with any ``hashlib`` algorithm."""
    digest = hashlib.new(algorithm)
    size = 0
    with open(path, 'rb') as src:
        out = None
        if dest is not None:
            out = os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                    0o600), 'wb')
        try:
            while True:
                block = src.read(_CHUNK)
                if not block:
                    break
                digest.update(block)
                size += len(block)
                if out is not None:
                    out.write(block)
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
        finally:
            if out is not None:
                out.close()
    return digest.hexdigest(), size


# JSON integers only: jsonschema's "integer" also takes 2.0.
_STRICT_TYPES = jsonschema.Draft7Validator.TYPE_CHECKER.redefine(
    'integer', lambda _checker, value: type(value) is int)
_Validator = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                          type_checker=_STRICT_TYPES)


def _key(name):
    return property(lambda self: self.data[name],
                    doc='``%s`` of the manifest' % name)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed, schema-checked ``manifest.json``."""

    data: dict

    @classmethod
    def from_json(cls, text, origin):
        try:
            data = records.strict_json(text, 'manifest.json')
        except ValueError as e:
            raise exception.InvalidLiveImage(image=origin, reason=str(e))
        validator = _Validator(MANIFEST_SCHEMA,
                               format_checker=jsonschema.FormatChecker())
        errors = sorted(validator.iter_errors(data),
                        key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            where = '/'.join(str(p) for p in errors[0].absolute_path)
            raise exception.InvalidLiveImage(
                image=origin, reason='manifest.json %s: %s'
                % (where or 'top level', errors[0].message))
        return cls(data)

    def to_json(self):
        return json.dumps(self.data, indent=2, sort_keys=True) + '\n'

    id = _key('id')
    name = _key('name')
    source = _key('source')
    host = _key('host')
    capture = _key('capture')
    files = _key('files')


class _ImageFiles:
    """Where an image's files are, for anything with a ``path``."""

    @property
    def memory_path(self):
        return os.path.join(self.path, MEMORY)

    @property
    def disk_path(self):
        return os.path.join(self.path, DISK)


@dataclasses.dataclass(frozen=True)
class LiveImage(_ImageFiles):
    """A published live image: where it is and what its manifest says."""

    path: str
    manifest: Manifest

    @property
    def name(self):
        return self.manifest.name

    @property
    def id(self):
        return self.manifest.id

    @property
    def memory_mib(self):
        return self.manifest.source['memory_mib']

    @property
    def template_key(self):
        """What this host's lazy template of the image is found by: the
        SHA-256 of its memory image, which :meth:`ImageStore.verify`
        checked, never the id or name an image claims for itself (two images
        claiming one id would share a template: a clone of one would resume
        the other's memory)."""
        return self.manifest.files['memory']['sha256']

    @property
    def vcpus(self):
        return self.manifest.source['vcpus']

    @property
    def machine(self):
        return self.manifest.source['machine']


@dataclasses.dataclass(frozen=True)
class VerifiedImage:
    """An image whose files matched its manifest when checked, with the
    parsed save-image container that clones are built from."""

    image: LiveImage
    save: saveimage.SaveImage
    domain: domainxml.DomainFacts


def build_manifest(*, image_id, name, source, host_info, capture, memory,
                   disk):
    """Assemble a manifest dict and check it against the schema."""
    data = {
        'format_version': FORMAT_VERSION,
        'id': image_id,
        'name': name,
        'created_at': datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec='milliseconds'),
        'source': source,
        'host': dict(host_info, hostname=socket.gethostname()),
        'capture': capture,
        'files': {'memory': memory, 'disk': disk},
    }
    return Manifest.from_json(json.dumps(data), name)


def _read_small(path, limit, invalid):
    """The bytes of regular file ``path`` (not a link), at most ``limit``.

    :raises: ``invalid(reason)``
    """
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise invalid('%s cannot be opened: %s' % (name, e.strerror)) \
            from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise invalid('%s is not a regular file of at most %d bytes'
                          % (name, limit))
        data = os.read(fd, limit + 1)
    except OSError as e:
        raise invalid('%s cannot be read: %s' % (name, e.strerror)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise invalid('%s is over %d bytes' % (name, limit))
    return data


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_memory(path, image, memory_mib, vcpus, machine):
    """Parse and check the memory file of live image ``image`` against what
    its record says the source was.

    The save-image header, the embedded domain XML and the cookie are read as
    untrusted input, strictly (:mod:`saveimage`, :mod:`domainxml`).

    :returns: (:class:`saveimage.SaveImage`, :class:`domainxml.DomainFacts`)
    :raises InvalidLiveImage: naming what is wrong.
    """
    origin = '%s/%s' % (image, MEMORY)
    with open(path, 'rb') as f:
        save = saveimage.read(f, os.fstat(f.fileno()).st_size, origin=origin)
    if save.header.compression != saveimage.Compression.RAW:
        raise exception.InvalidLiveImage(
            image=image, reason='the memory image is %s-compressed; format %d '
            'images hold a raw stream' % (save.header.compression.name.lower(),
                                          FORMAT_VERSION))
    facts = domainxml.facts(save.domain_xml, origin)
    domainxml.check_cookie(save.cookie, origin + ' cookie')
    mismatches = []
    if facts.memory_kib != memory_mib * 1024:
        mismatches.append('memory: record %d MiB, memory image %d MiB'
                          % (memory_mib, facts.memory_kib // 1024))
    if facts.vcpus != vcpus:
        mismatches.append('vCPUs: record %d, memory image %d'
                          % (vcpus, facts.vcpus))
    if facts.machine != machine:
        mismatches.append('machine: record %s, memory image %s'
                          % (machine, facts.machine))
    if mismatches:
        raise exception.InvalidLiveImage(
            image=image, reason='its record does not describe its memory '
            'image (%s)' % '; '.join(mismatches))
    return save, facts


class ImageWriter(_ImageFiles):
    """A live image being written: files go into a ``.partial-*`` directory
    that becomes the image only in :meth:`commit`."""

    def __init__(self, store, name):
        self.store = store
        self.name = name
        self.id = str(uuidlib.uuid4())
        # Named after the image's id: the capture's staging directory is
        # matched to its writer by it.
        self.path = records.make_partial(store.root, name, WRITER,
                                         suffix=self.id[:8])
        self.committed = False

    def commit(self, manifest):
        """Publish: fsync the files, write the manifest, rename into place."""
        for fname in (MEMORY, DISK):
            fpath = os.path.join(self.path, fname)
            os.chmod(fpath, 0o600)
            if fname == DISK:
                # Read-only to everyone, QEMU included; clones name it in
                # their XML so that libvirt never relabels it
                # (domainxml.add_backing_store).
                self.store.share_read_only(fpath)
            fd = os.open(fpath, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.unlink(os.path.join(self.path, WRITER))
        self.store.write_manifest(self.path, manifest.to_json().encode())
        self.store.share_with_qemu(self.path, 0o750)
        _fsync_dir(self.path)
        final = self.store.image_path(self.name)
        # rename() onto an existing empty directory would succeed: make sure
        # the name is still free (the store is per host, writers are few).
        if os.path.lexists(final):
            raise exception.ImageExists(image=self.name, store=self.store.root)
        os.rename(self.path, final)
        _fsync_dir(self.store.root)
        self.committed = True
        return LiveImage(path=final, manifest=manifest)

    def abort(self):
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


class ImageStore:
    """The live images of this host, in one directory."""

    def __init__(self, root, qemu_group=None, key_file=None):
        """:param qemu_group: the group libvirt runs QEMU in; it is given
            read access to frozen disks (clones open them as backing files)
            and to nothing else. None when QEMU runs as root.
        :param key_file: the host key (:mod:`hostkey`); by default
            ``host.key`` next to ``root``, outside the store.
        """
        self.root = root
        self.qemu_group = qemu_group
        self.key_file = key_file or os.path.join(
            os.path.dirname(os.path.abspath(root)), 'host.key')
        os.makedirs(root, mode=0o700, exist_ok=True)
        # QEMU must traverse into an image directory to open a frozen disk;
        # it cannot list the store.
        os.chmod(root, 0o711)

    @functools.cached_property
    def qemu_gid(self):
        """The QEMU group's id, looked up when first needed; None when there
        is no such group (QEMU runs as root)."""
        if not self.qemu_group:
            return None
        try:
            return grp.getgrnam(self.qemu_group).gr_gid
        except KeyError:
            return None

    def share_with_qemu(self, path, mode):
        """Give the QEMU group ``mode`` on ``path``, which stays the
        service user's (:mod:`ownership`); owner-only when QEMU runs as
        root.

        :raises NotInQemuGroup: the service's user is not in the QEMU group.
        """
        if self.qemu_gid is None:
            ownership.give_to_service(path)
            os.chmod(path, mode & 0o700)
            return
        ownership.give_to_service(path, self.qemu_gid)
        os.chmod(path, mode)

    def write_manifest(self, path, data):
        """Write manifest bytes ``data`` and their signature into image
        directory ``path`` (fsync'ed, mode 0600); the host key is made if
        the host has none."""
        signature = hostkey.sign_manifest(
            hostkey.load_or_create(self.key_file), data)
        for name, content in ((MANIFEST, data),
                              (SIGNATURE, signature.encode('ascii'))):
            fpath = os.path.join(path, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fpath)
            with os.fdopen(os.open(fpath, os.O_WRONLY | os.O_CREAT
                                   | os.O_EXCL, 0o600), 'wb') as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())

    def share_read_only(self, path):
        """Let QEMU read ``path`` and no QEMU write it: owned by the
        service's user (root for the engine, ``nova`` in nova-compute: see
        :mod:`ownership`), mode 0440 with the QEMU group (0400 when QEMU
        runs as root). Nothing QEMU may write is ever shared between
        domains.

        :raises NotInQemuGroup: the service's user is not in the QEMU group.
        """
        ownership.give_to_service(path, self.qemu_gid)
        os.chmod(path, 0o440 if self.qemu_gid is not None else 0o400)

    def image_path(self, name):
        self.check_name(name)
        return os.path.join(self.root, name)

    @staticmethod
    def check_name(name):
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise exception.LiveSnapshotError(
                'Invalid live image name %r: use 1-64 letters, digits, '
                '".", "_" or "-", starting with a letter or digit.' % (name,))

    def begin(self, name):
        """Start writing image ``name``.

        :raises ImageExists: an image of that name is already published.
        """
        if os.path.lexists(self.image_path(name)):
            raise exception.ImageExists(image=name, store=self.root)
        return ImageWriter(self, name)

    def get(self, name):
        """Load an image's manifest (schema-checked, files not yet verified).

        :raises ImageNotFound:, :raises InvalidLiveImage:
        """
        path = self.image_path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise exception.ImageNotFound(image=name, store=self.root) from None

        def invalid(reason):
            return exception.InvalidLiveImage(image=name, reason=reason)

        if stat.S_ISLNK(st.st_mode):
            raise invalid('its directory is a symbolic link')
        if not stat.S_ISDIR(st.st_mode):
            raise invalid('it is not a directory')
        try:
            entries = set(os.listdir(path))
        except OSError as e:
            raise invalid('its directory cannot be read: %s' % e.strerror) \
                from None
        if MANIFEST not in entries:
            raise invalid('it has no manifest.json')
        unexpected = sorted(entries - IMAGE_FILES)
        if unexpected:
            raise invalid('its directory holds unexpected entries %s'
                          % ', '.join(repr(e)[:80] for e in unexpected[:5]))
        data = _read_small(os.path.join(path, MANIFEST), MAX_MANIFEST_BYTES,
                           invalid)
        signature = None
        if SIGNATURE in entries:
            signature = _read_small(os.path.join(path, SIGNATURE), 256,
                                    invalid).decode('ascii', 'replace')
        # Authenticated before a byte of it is parsed.
        hostkey.verify_manifest(hostkey.load(self.key_file), data, signature,
                                name)
        manifest = Manifest.from_json(data, name)
        if manifest.name != name:
            raise exception.InvalidLiveImage(
                image=name, reason='the manifest names the image %r'
                % manifest.name)
        return LiveImage(path=path, manifest=manifest)

    def scan(self):
        """Every entry of the store: ``(images, problems)``, where
        ``problems`` is a list of ``(entry, reason)`` for the entries that
        are not valid images. One bad entry never hides another image."""
        images, problems = [], []
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith('.'):
                continue
            try:
                images.append(self.get(entry))
            except exception.InvalidLiveImage as e:
                problems.append((entry, e.kwargs.get('reason', str(e))))
            except exception.LiveSnapshotError as e:    # not a valid name
                problems.append((entry, str(e)))
        return images, problems

    def list(self):
        """The valid images (see :meth:`scan` for the others)."""
        return self.scan()[0]

    def delete(self, name):
        """Remove image ``name``, however damaged: a symbolic link is
        removed, not followed; a stray file is removed."""
        path = self.image_path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise exception.ImageNotFound(image=name, store=self.root) from None
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            _fsync_dir(self.root)
            return
        # Unpublish first (atomic), then remove the files.
        doomed = os.path.join(self.root, '%s%s-deleting-%s' % (
            PARTIAL_PREFIX, name, uuidlib.uuid4().hex[:8]))
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    def remove_stale_partials(self):
        """Remove ``.partial-*`` directories whose writer process is gone."""
        return records.sweep_partials(self.root, WRITER)

    # Verification --------------------------------------------------------------

    def verify(self, image):
        """Check every file of ``image`` against its manifest.

        Cheap structural checks come first so that the error names the
        actual problem (a truncated file, a wrong header, a missing disk),
        then the SHA-256 of each file.

        :returns: :class:`VerifiedImage`.
        :raises InvalidLiveImage: (:class:`ChecksumMismatch` for a changed byte)
        """
        name = image.name
        files = image.manifest.files

        def invalid(reason):
            return exception.InvalidLiveImage(image=name, reason=reason)

        for key, label in (('memory', 'memory image'), ('disk', 'frozen disk')):
            entry = files[key]
            fpath = os.path.join(image.path, entry['name'])
            try:
                st = os.lstat(fpath)
            except FileNotFoundError:
                raise invalid('the %s %s is missing' % (label, entry['name'])) \
                    from None
            if not stat.S_ISREG(st.st_mode):
                raise invalid('the %s %s is not a regular file'
                              % (label, entry['name']))
            if st.st_size != entry['size']:
                raise invalid('the %s %s is %d bytes, the manifest says %d%s'
                              % (label, entry['name'], st.st_size,
                                 entry['size'],
                                 ' (truncated)' if st.st_size < entry['size']
                                 else ''))

        # The bytes must be the signed ones before any parser sees them.
        for key in ('memory', 'disk'):
            entry = files[key]
            actual, _ = sha256_file(os.path.join(image.path, entry['name']))
            if actual != entry['sha256']:
                raise exception.ChecksumMismatch(
                    image=name, file=entry['name'], actual=actual,
                    expected=entry['sha256'])

        src = image.manifest.source
        save, facts = read_memory(image.memory_path, name, src['memory_mib'],
                                  src['vcpus'], src['machine'])

        try:
            info = qemuimg.info_untrusted(image.disk_path, 'qcow2')
        except exception.LiveSnapshotError as e:
            raise invalid('the frozen disk is unreadable: %s' % e) from None
        if info.get('format') != 'qcow2':
            raise invalid('the frozen disk is %s, not qcow2' % info.get('format'))
        # A backing file or external data file would let the image pick a
        # file on this host for clones to read.
        if info.get('backing-filename') or info.get('full-backing-filename'):
            raise invalid('the frozen disk has a backing file (%s); live '
                          'images carry a self-contained disk'
                          % info.get('backing-filename'))
        if (info.get('format-specific', {}).get('data', {})
                .get('data-file')):
            raise invalid('the frozen disk has an external data file')
        if info.get('virtual-size') != files['disk']['virtual_size']:
            raise invalid('the frozen disk is %s bytes virtual, the manifest '
                          'says %s' % (info.get('virtual-size'),
                                       files['disk']['virtual_size']))
        return VerifiedImage(image=image, save=save, domain=facts)
