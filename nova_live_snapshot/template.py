"""Per-host templates for lazy clones (``[live_snapshot] restore_mode = lazy``).

A template is a live image restored once on this host, kept as two files on
tmpfs: the guest RAM (``memory.ram``), and the device state QEMU saved
without that RAM (``state.mig``, under a megabyte). A lazy clone maps the RAM
file privately (copy-on-write) and loads only the device state, so its spawn
does not depend on its RAM size and the memory it never writes is shared by
every clone of the image. See ``doc/source/lazy.rst``.

Building one (:meth:`TemplateStore.acquire`, once per image and host, after
the image's checksums were verified):

#. a paused domain whose RAM is a shared file in a ``.partial-*`` directory
   of ``template_dir`` (``memory-backend-file``, ``share=on``) waits for its
   state (``-incoming defer``);
#. the image's QEMU stream is fed to it through a pipe, with its RAM block
   renamed for our backend (:mod:`migstream`): QEMU writes the guest's
   memory into the file;
#. it saves its device state with ``x-ignore-shared``, which leaves the
   shared RAM out, and is destroyed, never having run;
#. all-zero pages are punched out of the file (tmpfs then holds only the
   memory the guest had used), the files are hashed and the directory is
   renamed into place.

A build that fails leaves nothing: the domain is destroyed and the partial
directory removed; one whose process died is removed by
:meth:`TemplateStore.collect`. A template is never written after it is
published, and no QEMU may write it: once built its files are root's. On
QEMU 8.2 and later the RAM file is mode 0440 and clones open it read-only
and map it privately (``readonly=on,rom=off``). QEMU before 8.2 maps a
read-only file read-only, so its clones would need the file writable by
the QEMU group: lazy mode is refused there unless the operator accepted
that risk (``[live_snapshot] lazy_writable_templates``). The device state is
opened by the engine and handed to QEMU as a descriptor; QEMU never opens
it by name.

Templates are keyed by what was verified, never by a name an image chooses:
the SHA-256 of the memory image (engine images), or the signed record's
memory image and its hash (Nova), with the clones' device signature.

Reference counting is derived from the host, not kept in memory: a
template's users are the running domains whose live XML maps its RAM file
(:meth:`TemplateStore.users`). :meth:`TemplateStore.collect` removes the
templates whose image is gone and that nothing maps.
"""

import contextlib
import ctypes
import dataclasses
import datetime
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid as uuidlib

from nova_live_snapshot import clone
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import migstream
from nova_live_snapshot import ownership
from nova_live_snapshot import records
from nova_live_snapshot import restore as restore_mod

LOG = logging.getLogger(__name__)

__all__ = ['Source', 'Template', 'TemplateStore', 'template_genid', 'RAM',
           'STATE', 'RECORD', 'held_mib', 'sparsify_and_hash']

RAM = 'memory.ram'
STATE = 'state.mig'
RECORD = 'template.json'
PARTIAL_PREFIX = records.PARTIAL_PREFIX
# The partial build's file naming the process that builds it.
BUILDER = 'builder.pid'
# Room a template needs beyond the guest's RAM: its device state (under a
# megabyte for the test guests) and the build's own small files.
STATE_HEADROOM_MIB = 16
_PAGE = migstream.PAGE_SIZE
_ZERO_PAGE = bytes(_PAGE)
_CHUNK = 1 << 20
_ZERO_CHUNK = bytes(_CHUNK)
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@dataclasses.dataclass(frozen=True)
class Source:
    """What a template is built from: a checked memory stream and how to
    render the domain that loads it.

    The engine builds one from a verified image
    (:meth:`TemplateStore.image_source`); the Nova driver from its cached
    memory stream and Nova's guest config.
    """

    key: str            # the template's directory under template_dir
    image_id: str       # what the host keeps the stream as: collect() keeps
    #                     the templates whose image_id it is given
    name: str           # the live image, for messages and listings
    memory_path: str    # the save image holding the QEMU stream
    save: object        # its parsed container (saveimage.SaveImage)
    memory_mib: int
    backend: str        # the clones' NIC backend (see TemplateStore)
    render: object      # render(partial dir, RAM file): the template
    #                     domain's XML, its disks made in the partial dir


def template_genid(facts):
    """The generation ID a template domain gets: the image's own, so that
    QEMU writing it into guest RAM when the state loads leaves the
    template's RAM as the image's (each clone's own is written into its
    private copy)."""
    return facts.genid or str(uuidlib.uuid4())


@dataclasses.dataclass(frozen=True)
class Template:
    """A published template: its directory and its record."""

    path: str
    record: dict

    @property
    def memory_path(self):
        return os.path.join(self.path, RAM)

    @property
    def state_path(self):
        return os.path.join(self.path, STATE)

    @property
    def image(self):
        return self.record['image']

    @property
    def image_id(self):
        return self.record['image_id']

    @property
    def ram_readonly(self):
        """Whether clones open the RAM file read-only (QEMU 8.2+)."""
        return bool(self.record.get('ram_readonly'))

    def tmpfs_bytes(self):
        """Memory the template holds on tmpfs now (allocated blocks of its
        files, not their apparent size)."""
        total = 0
        for entry in os.scandir(self.path):
            total += entry.stat(follow_symlinks=False).st_blocks * 512
        return total


def held_mib(root):
    """MiB the templates under ``root``, and builds in progress, hold on
    tmpfs (allocated blocks, rounded up): guest memory that no instance's
    allocation accounts for."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return -(-total // (1024 * 1024))


def _fstype(path):
    """The type of the filesystem ``path`` is on, from mountinfo (the
    longest mount point that contains it)."""
    path = os.path.realpath(path)
    best, fstype = '', None
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            mount = fields[4].replace('\\040', ' ')
            sep = fields.index('-')
            inside = path == mount or path.startswith(mount.rstrip('/') + '/')
            if inside and len(mount) >= len(best):
                best, fstype = mount, fields[sep + 1]
    return fstype


_libc = None


def _punch_hole(fd, offset, length):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int,
                                    ctypes.c_long, ctypes.c_long]
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                       offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, 'punching a hole: %s' % os.strerror(err))


def _zero_runs(chunk):
    """(start, length) of the runs of all-zero pages in ``chunk``."""
    if chunk == _ZERO_CHUNK:
        yield 0, len(chunk)
        return
    view, run = memoryview(chunk), None
    for start in range(0, len(chunk), _PAGE):
        if view[start:start + _PAGE] == _ZERO_PAGE:
            run = start if run is None else run
        elif run is not None:
            yield run, start - run
            run = None
    if run is not None:
        yield run, len(chunk) - run


def sparsify_and_hash(path):
    """Punch the all-zero pages out of ``path`` (tmpfs keeps only the pages
    that hold data) and return its SHA-256, in one read.

    QEMU faults in every page of a shared mapping it checks for zeros while
    loading, so without this a template costs its whole RAM size.
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDWR)
    try:
        offset = 0
        while True:
            chunk = os.pread(fd, _CHUNK, offset)
            if not chunk:
                break
            digest.update(chunk)
            for start, length in _zero_runs(chunk):
                _punch_hole(fd, offset + start, length)
            offset += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


class _StreamFeeder(threading.Thread):
    """Writes a source's QEMU stream, its RAM block renamed, into a pipe."""

    def __init__(self, fd, source):
        super().__init__(name='template-feed-%s' % source.name, daemon=True)
        self.fd = fd
        self.source = source
        self.error = None

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def run(self):
        try:
            with open(self.source.memory_path, 'rb') as src:
                src.seek(self.source.save.stream_offset)
                migstream.rename_ram_block(
                    src, self.source.save.stream_size, self._write,
                    domainxml.LAZY_RAM_ID, origin=self.source.name)
        except (OSError, exception.LiveSnapshotError) as e:
            self.error = e
        finally:
            os.close(self.fd)


class TemplateStore:
    """The templates of this host, one directory each under ``root``."""

    def __init__(self, root, host, images, timeout=120, network=None,
                 allow_writable=False):
        """:param images: the host's
            :class:`nova_live_snapshot.liveimage.ImageStore` (for the QEMU
            group that must reach the RAM files).
        :param network: the libvirt network clones attach to (None: QEMU's
            user-mode network). The template's NIC must have the same kind
            of backend as its clones': virtio-net saves whether its backend
            offers vnet headers (a tap does, user-mode does not) and QEMU
            refuses the state on a backend that differs.
        :param allow_writable: on QEMU before 8.2, build and use templates
            although clones must open the RAM file read-write
            (``[live_snapshot] lazy_writable_templates``).
        """
        self.root = root
        self.host = host
        self.images = images
        self.timeout = timeout
        self.network = network
        self.allow_writable = allow_writable

    def ram_readonly(self):
        """Whether this host's QEMU maps a read-only file privately and
        writable (``rom=off``, QEMU 8.2)."""
        return restore_mod.version_tuple(self.host.qemu_version()) >= (8, 2, 0)

    def _check_safe(self, source):
        if not self.allow_writable and not self.ram_readonly():
            raise exception.TemplateUnsafe(image=source.name,
                                           qemu=self.host.qemu_version())

    # Directory ---------------------------------------------------------------

    def _prepare_root(self):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fstype = _fstype(self.root)
        if fstype != 'tmpfs':
            raise exception.TemplateDirUnsuitable(path=self.root,
                                                  fstype=fstype)
        # QEMU only traverses to the RAM file whose path it is given.
        self.images.share_with_qemu(self.root, 0o710)

    def _locked(self):
        """One builder or collector at a time on this host, across
        processes: a lock on the directory itself, so that no lock file is
        left in tmpfs."""
        return records.lock(self.root)

    def _path(self, image_id):
        return os.path.join(self.root, image_id)

    def get(self, image_id):
        """The published template of image ``image_id``, or None."""
        try:
            record = records.read(os.path.join(self._path(image_id), RECORD))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Template(path=self._path(image_id), record=record)

    def list(self):
        if not os.path.isdir(self.root):
            return []
        found = []
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith('.'):
                continue
            try:
                template = self.get(entry)
            except (OSError, ValueError):
                continue
            if template is not None:
                found.append(template)
        return found

    def users(self, template):
        """Names of the running domains that map ``template``'s RAM."""
        names = []
        for guest in self.host.active_guests():
            try:
                path = domainxml.lazy_ram_file(guest.xml())
            except (exception.DomainNotFound, exception.UnsafeDomainXML):
                continue
            if path == template.memory_path:
                names.append(guest.name)
        return sorted(names)

    def describe(self, template):
        """What an operator asks of a template: its image, guest RAM,
        memory held on tmpfs, and the clones mapping it."""
        return {'image': template.image, 'image_id': template.image_id,
                'path': template.path,
                'memory_mib': template.record['memory_mib'],
                'tmpfs_bytes': template.tmpfs_bytes(),
                'built_at': template.record['built_at'],
                'clones': self.users(template)}

    # Building ----------------------------------------------------------------

    def acquire(self, verified):
        """The template of a verified image, built now if this host has none.

        :raises TemplateNoRoom:, TemplateDirUnsuitable:, TemplateBuildFailed:
        """
        return self.acquire_source(self.image_source(verified))

    def image_source(self, verified):
        """A :class:`Source` for an engine image: the template domain is
        rendered as the engine renders clones."""
        image = verified.image

        def render(partial, ram):
            spec = domainxml.DomainSpec(
                name='nls-template-%s-%s' % (image.id[:8],
                                             uuidlib.uuid4().hex[:6]),
                disk_path=os.path.join(partial, 'disk.qcow2'),
                backing_path=image.disk_path,
                console_log=os.path.join(partial, 'console.log'),
                memory_mib=image.memory_mib, vcpus=image.vcpus,
                machine=image.machine, genid=template_genid(verified.domain),
                # Never started, so never on the network; link down anyway.
                network=self.network, link_up=False, ram_file=ram,
                ram_shared=True)
            return clone.prepare_domain(verified, spec, 'template XML')
        return Source(key=image.template_key, image_id=image.template_key,
                      name=image.name,
                      memory_path=image.memory_path, save=verified.save,
                      memory_mib=image.memory_mib, backend=self.network,
                      render=render)

    def acquire_source(self, source):
        """The template of ``source``, built now if this host has none.

        :raises TemplateNoRoom:, TemplateDirUnsuitable:, TemplateBuildFailed:
        """
        self._check_safe(source)
        existing = self.get(source.key)
        if existing is None:
            self._prepare_root()
            with self._locked():
                existing = self.get(source.key)  # built while we waited
                if existing is None:
                    return self._build(source)
        if existing.record.get('network') != source.backend:
            raise exception.TemplateBuildFailed(
                image=source.name, reason='its template on this host was '
                'built for clones on %s, these attach to %s, and a virtio-net '
                'state loads only on the same kind of backend; restore its '
                'clones on %s, or delete the image on this host and spawn '
                'again' % (_network_name(existing.record.get('network')),
                           _network_name(source.backend),
                           _network_name(existing.record.get('network'))))
        return existing

    def _check_room(self, source):
        free_mib = records.free_mib(self.root)
        needed_mib = source.memory_mib + STATE_HEADROOM_MIB
        if free_mib < needed_mib:
            raise exception.TemplateNoRoom(image=source.name, path=self.root,
                                           free_mib=free_mib,
                                           needed_mib=needed_mib)

    def _build(self, source):
        self._check_room(source)
        started = time.monotonic()
        partial = records.make_partial(self.root, source.key, BUILDER)
        guest = None
        try:
            self.images.share_with_qemu(partial, 0o710)
            guest = self._load(source, partial)
            state = os.open(os.path.join(partial, STATE),
                            os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                guest.save_state(state, self.timeout)
            finally:
                os.close(state)
            guest.remove()
            guest = None
            return self._publish(source, partial, started)
        except (exception.LiveSnapshotError, OSError) as e:
            self._abandon(guest, partial)
            if isinstance(e, exception.TemplateError):
                raise
            raise exception.TemplateBuildFailed(image=source.name,
                                                reason=str(e)) from e
        except BaseException:
            self._abandon(guest, partial)
            raise

    def _load(self, source, partial):
        """A paused domain with the source's state loaded into a shared RAM
        file in ``partial``; it never runs."""
        ram = os.path.join(partial, RAM)
        os.close(os.open(ram, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.images.share_with_qemu(ram, 0o660)
        guest = self.host.create(source.render(partial, ram), paused=True)
        try:
            read_end, write_end = os.pipe()
            feeder = _StreamFeeder(write_end, source)
            feeder.start()
            refused = None
            try:
                guest.load_state(read_end, ignore_shared=False,
                                 timeout=self.timeout)
            except exception.HypervisorError as e:
                refused = e
            finally:
                os.close(read_end)
                feeder.join(self.timeout)
            # A stream the feeder could not read is why QEMU failed, if it
            # did; QEMU going away first only breaks the feeder's pipe.
            if feeder.error is not None and not (
                    isinstance(feeder.error, OSError)
                    and feeder.error.errno == errno.EPIPE):
                raise feeder.error from refused
            if refused is not None:
                raise refused
        except BaseException:
            guest.remove()
            raise
        return guest

    def _publish(self, source, partial, started):
        # Only the template's own files stay: the build's disk overlays,
        # console log and pid file go.
        for entry in os.listdir(partial):
            if entry not in (RAM, STATE):
                os.unlink(os.path.join(partial, entry))
        record = {
            'image': source.name, 'image_id': source.image_id,
            'memory_mib': source.memory_mib,
            'ram_block': domainxml.LAZY_RAM_ID,
            'network': source.backend,
            'memory_sha256': sparsify_and_hash(os.path.join(partial, RAM)),
            'ram_readonly': self._lock_down(partial),
            'state_bytes': os.path.getsize(os.path.join(partial, STATE)),
            'built_at': datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec='milliseconds'),
            'build_s': round(time.monotonic() - started, 3),
        }
        records.write(os.path.join(partial, RECORD), record, indent=2)
        final = self._path(source.key)
        os.rename(partial, final)
        LOG.info('Built the template of %s in %.2f s (%d MiB on tmpfs)',
                 source.name, record['build_s'],
                 Template(final, record).tmpfs_bytes() >> 20)
        return Template(path=final, record=record)

    def _lock_down(self, partial):
        """Take the built files out of QEMU's reach: the service user's
        (:mod:`ownership`; libvirt gave the RAM file to the QEMU user while
        the template ran), the state 0600 (handed over as a descriptor),
        the RAM 0440 with the QEMU group, or 0660 where clones must open it
        read-write (QEMU < 8.2, allowed by the operator). Returns whether
        clones map it read-only."""
        readonly = self.ram_readonly()
        ram = os.path.join(partial, RAM)
        if readonly:
            self.images.share_read_only(ram)
        else:
            self.images.share_with_qemu(ram, 0o660)
        ownership.give_to_service(os.path.join(partial, STATE))
        os.chmod(os.path.join(partial, STATE), 0o600)
        return readonly

    def _abandon(self, guest, partial):
        if guest is not None:
            guest.remove()
        shutil.rmtree(partial, ignore_errors=True)

    # Clones ------------------------------------------------------------------

    def restore(self, template, xml):
        """Start a domain from ``xml`` (rendered with ``ram_file`` =
        ``template.memory_path``, private) and load the template's device
        state into it; the domain is left paused.

        :raises HypervisorError: the caller removes the domain.
        """
        guest = self.host.create(xml, paused=True)
        started = time.monotonic()
        state = os.open(template.state_path, os.O_RDONLY)
        try:
            guest.load_state(state, ignore_shared=True, timeout=self.timeout)
        finally:
            os.close(state)
        LOG.debug('Loaded the state of %s from the template of %s in %.3f s',
                  guest.name, template.image, time.monotonic() - started)
        # The loaded state carries the NIC link of the stream the template
        # came from (up), whatever ``xml`` says (see restore.restore_stream).
        for mac in domainxml.macs_with_link_down(xml):
            guest.force_link_down(mac)
        return guest

    def verify(self, template):
        """True when the RAM file still has the checksum it was built with."""
        digest = hashlib.sha256()
        with open(template.memory_path, 'rb') as f:
            for block in iter(lambda: f.read(_CHUNK), b''):
                digest.update(block)
        return digest.hexdigest() == template.record['memory_sha256']

    # Removal -----------------------------------------------------------------

    def collect(self, image_ids):
        """Remove the templates of images not in ``image_ids`` (the images
        this host still has) that no running domain maps, and the partial
        builds whose builder is gone.

        :returns: the image names whose template was removed.
        """
        if not os.path.isdir(self.root):
            return []
        removed = []
        with self._locked():
            records.sweep_partials(self.root, BUILDER,
                                   before_remove=self._remove_builds)
            for template in self.list():
                if template.image_id in image_ids or self.users(template):
                    continue
                shutil.rmtree(template.path, ignore_errors=True)
                removed.append(template.image)
        return removed

    def _remove_builds(self, dead):
        """Remove the template domains that builders which died left
        running on the partial builds ``dead``."""
        for guest in self.host.active_guests():
            try:
                ram = domainxml.lazy_ram_file(guest.xml())
            except (exception.DomainNotFound, exception.UnsafeDomainXML):
                continue
            if ram and any(ram.startswith(p) for p in dead):
                LOG.warning('Removing %s, left by a template build that '
                            'died', guest.name)
                guest.remove()


def _network_name(network):
    return 'network %s' % network if network else "QEMU's user-mode network"
