"""Spawn clones from a live image, and destroy them.

libvirt refuses to restore a save image under another name or UUID, so each
clone gets a save-image header of its own: the engine renders the clone's
domain XML (new name, UUID, generation ID, MAC, its own overlay and console
log), checks it against the image's embedded domain facts, and feeds libvirt
a FIFO that carries that header followed by the image's unchanged QEMU
stream, spliced from the one memory file. The stream is never copied per
clone: N clones read the same file concurrently.

libvirt reads the header from the FIFO, then hands the same descriptor to
QEMU for the incoming migration; the FIFO is gone once the clone runs.
libvirt 11.2 and later open the image twice, reading the header in an open
of its own first (:data:`HEADER_READ_TWICE_SINCE`): the FIFO then carries
the header twice. Each clone is then defined, so ``virsh`` and the engine
see a normal persistent domain.

In lazy mode (:mod:`nova_live_snapshot.template`) only the restore differs:
the clone maps the image's per-host template copy-on-write and loads just
its device state; the checks before and the re-identification after are
the same.
"""

import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import threading
import time
import uuid as uuidlib

from nova_live_snapshot import dhcphost
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import identity
from nova_live_snapshot import qemuimg
from nova_live_snapshot import records
from nova_live_snapshot import saveimage

LOG = logging.getLogger(__name__)

__all__ = ['Clone', 'CloneManager', 'check_host', 'host_reasons', 'reidentify',
           'restore', 'version_tuple', 'prepare_domain']

CLONE_RECORD = 'clone.json'


@dataclasses.dataclass(frozen=True)
class Clone:
    """A clone domain and its files."""

    name: str
    uuid: str
    mac: str
    genid: str
    image: str
    path: str
    spawn_s: float = None       # restore and re-identification
    restore_s: float = None     # restore alone: the clone runs from here
    identity: dict = None
    restore_mode: str = 'eager'     # or 'lazy': mapped from a template
    address: str = None     # its static DHCP address on the clone network

    @property
    def overlay(self):
        return os.path.join(self.path, 'disk.qcow2')

    @property
    def console_log(self):
        return os.path.join(self.path, 'console.log')

    def to_dict(self):
        return dataclasses.asdict(self)


def version_tuple(text):
    """'7.2.22' as (7, 2, 22), for comparing versions."""
    return tuple(int(p) for p in text.split('.'))


def host_reasons(host, arch, machine, qemu_version):
    """Why this host's QEMU cannot resume an image captured on ``arch``,
    ``machine`` and ``qemu_version``; empty when it can."""
    reasons = []
    if arch != 'x86_64':
        reasons.append('it is a %s guest; this host runs x86_64 guests' % arch)
    if machine not in host.machine_types():
        reasons.append("this host's QEMU has no machine type %s" % machine)
    here = host.qemu_version()
    # QEMU loads migration streams from older versions, not from newer ones.
    if version_tuple(here) < version_tuple(qemu_version):
        reasons.append('it was captured with QEMU %s, this host has the older '
                       'QEMU %s' % (qemu_version, here))
    return reasons


def check_host(host, verified):
    """Refuse an image this host's QEMU cannot resume.

    :raises IncompatibleImage: naming every reason.
    """
    manifest = verified.image.manifest
    reasons = host_reasons(host, manifest.source['arch'],
                           manifest.source['machine'],
                           manifest.host['qemu_version'])
    if reasons:
        raise exception.IncompatibleImage(image=verified.image.name,
                                          reasons='; '.join(reasons))


def prepare_domain(verified, spec, origin):
    """Render the XML of a domain that resumes ``verified`` (a clone, or a
    lazy template being built), check it against the image's domain facts
    and create its overlay on the image's frozen disk; the XML.

    :raises IncompatibleImage: naming every difference.
    """
    if spec.backing_path != verified.image.disk_path:
        # Without it libvirt relabels the frozen disk for the QEMU user.
        raise ValueError('a clone spec must name the frozen disk as its '
                         'backing file')
    xml = domainxml.render(spec)
    reasons = domainxml.compare(verified.domain, domainxml.facts(xml, origin))
    if reasons:
        raise exception.IncompatibleImage(image=verified.image.name,
                                          reasons='; '.join(reasons))
    qemuimg.create_overlay(verified.image.disk_path, spec.disk_path)
    return xml


# From libvirt 11.2 (the version that brought the ``sparse`` save format) a
# restore reads the image's header and XML in an open of its own
# (qemuSaveImageGetMetadata), closes it, and opens the image again for the
# restore, reading the header again before it hands the descriptor to QEMU.
# Through a FIFO the second open would find the stream where the header
# should be ("image magic is incorrect", seen on bookworm-backports' 11.3):
# the feeder writes the header once per open. The first open reads exactly
# the header and its data; the rest waits in the pipe for the second.
HEADER_READ_TWICE_SINCE = (11, 2, 0)


def header_reads(libvirt_version):
    """How many times a restore by libvirt ``libvirt_version`` reads the
    save image's header, each in an open of its own."""
    return 2 if version_tuple(libvirt_version) >= HEADER_READ_TWICE_SINCE \
        else 1


def _pipe_max_size():
    try:
        with open('/proc/sys/fs/pipe-max-size') as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024


class _Feeder(threading.Thread):
    """Writes a clone's header, then splices the shared stream into a FIFO.

    Both ends of the FIFO are opened here, before the thread starts: a
    reader of the feeder's own (``_holder``), which never reads, and then
    the write end, which a reader lets open at once. So the thread never
    waits in open() for libvirt, whether libvirt comes, comes late or never
    (a restore refused before it opens the FIFO); and :meth:`release`,
    closing the only other reader once libvirt's restore has returned,
    ends a write that nobody will read with EPIPE. Bytes written before
    libvirt opens its end wait in the pipe for it.
    """

    def __init__(self, fifo, header, memory_path, offset, length):
        super().__init__(name='feed-%s' % os.path.basename(os.path.dirname(
            fifo)), daemon=True)
        self.header = header
        self.memory_path = memory_path
        self.offset = offset
        self.length = length
        self.error = None
        self._holder = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK
                               | os.O_CLOEXEC)
        try:
            self._fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._holder)
            raise

    def run(self):
        fd = self._fd
        try:
            # QEMU reads the stream from this pipe: a 64 KiB pipe means a
            # context switch every 64 KiB. Ask for the largest an
            # unprivileged pipe may have (fs.pipe-max-size, 1 MiB default).
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _pipe_max_size())
            view = memoryview(self.header)
            while view:
                view = view[os.write(fd, view):]
            with open(self.memory_path, 'rb') as src:
                offset, remaining = self.offset, self.length
                while remaining:
                    n = os.splice(src.fileno(), fd, min(remaining, 1 << 20),
                                  offset_src=offset)
                    if n == 0:
                        raise EOFError('memory image ended %d bytes early'
                                       % remaining)
                    offset += n
                    remaining -= n
        except (OSError, EOFError) as e:
            self.error = e
        finally:
            os.close(fd)

    def release(self):
        """Close the feeder's own reader: once libvirt's restore has
        returned (done or refused), nobody else reads, and a feeder still
        writing ends with EPIPE instead of waiting for ever."""
        if self._holder is not None:
            os.close(self._holder)
            self._holder = None


def restore(host, image_name, save, xml, memory_path, fifo_dir, timeout,
            paused=False):
    """Restore a clone of live image ``image_name`` with domain XML ``xml``.

    :param save: the image's parsed memory file
        (:class:`nova_live_snapshot.saveimage.SaveImage`).

    A header of the clone's own (``xml`` and the image's cookie) followed by
    the image's unchanged QEMU stream, spliced from ``memory_path``, is fed
    to libvirt through a FIFO in ``fifo_dir``. The caller has checked
    ``xml`` against the image (:func:`domainxml.compare`).

    The NICs whose link ``xml`` sets down are down when the clone starts
    running (or stays paused, with ``paused``).

    :raises CloneSpawnFailed: the stream could not be fed in time.
    :raises HypervisorError: libvirt or QEMU refused the restore.
    """
    name = domainxml.facts(xml, 'clone XML').name
    links_down = domainxml.macs_with_link_down(xml)
    header = saveimage.encode(xml, save.cookie, was_running=True,
                              compression=save.header.compression)
    header *= header_reads(host.libvirt_version())
    fifo = os.path.join(fifo_dir, 'restore.fifo')
    os.mkfifo(fifo, 0o600)
    try:
        feeder = _Feeder(fifo, header, memory_path, save.stream_offset,
                         save.stream_size)
        feeder.start()
        try:
            host.restore(fifo, paused=paused or bool(links_down))
        finally:
            feeder.release()
            feeder.join(timeout)
    finally:
        os.unlink(fifo)
    if feeder.is_alive():
        raise exception.CloneSpawnFailed(
            name=name, image=image_name,
            reason='feeding the memory stream did not finish within %d s'
            % timeout)
    if feeder.error is not None and not (
            isinstance(feeder.error, OSError)
            and feeder.error.errno == errno.EPIPE):
        raise exception.CloneSpawnFailed(
            name=name, image=image_name,
            reason='feeding the memory stream: %s' % feeder.error)
    if links_down:
        # QEMU's virtio-net takes a restored NIC's link state from the
        # migration stream (the source's: up), whatever the XML says:
        # without this, a clone would talk on the network as its source
        # until re-identified.
        guest = host.lookup(name)
        for mac in links_down:
            guest.force_link_down(mac)
        if not paused:
            guest.resume()


def reidentify(guest, new, image_name, set_link_up, require_agent=True,
               agent_timeout=30, prepared=None):
    """Give a restored clone identity ``new`` (:func:`identity.reset`).

    :param set_link_up: brings the clone's NIC link up once the guest has
        its new MAC and has forgotten the source's addresses.
    :param prepared: :func:`identity.prepare` of ``new``, started before
        the restore so that the host's part is ready when the guest is.
    :returns: the :class:`identity.IdentityReport`.
    :raises CloneSpawnFailed: the agent did not answer and
        ``require_agent`` is set, or a step failed.
    """
    report = identity.reset(guest, new, set_link_up,
                            agent_timeout=agent_timeout, prepared=prepared)
    if not report.agent:
        if require_agent:
            raise exception.CloneSpawnFailed(
                name=new.name, image=image_name,
                reason='%s, so its identity (MAC, entropy, hostname, host '
                'keys) could not be reset; set [live_snapshot] '
                'require_guest_agent = false to spawn such clones anyway'
                % report.steps[0].detail)
        LOG.warning('Clone %s runs with the identity of its source: %s',
                    new.name, report.steps[0].detail)
        set_link_up()
    elif not report.reset:
        # A clone that is half re-identified may still share what matters
        # with its source: it does not survive.
        failed = ['%s (%s)' % (s.step, s.detail) for s in report.steps
                  if s.status == identity.Status.FAILED]
        raise exception.CloneSpawnFailed(
            name=new.name, image=image_name,
            reason='re-identification failed: %s' % '; '.join(failed))
    return report


class CloneManager:
    """The clones of this host, one directory each under ``clone_dir``."""

    def __init__(self, host, clone_dir, restore_timeout=120,
                 require_agent=True, agent_timeout=30, network=None,
                 templates=None, lazy_fallback=False):
        """:param templates: a :class:`nova_live_snapshot.template.TemplateStore`
            to restore clones lazily from; None restores them eagerly.
        :param lazy_fallback: restore eagerly when an image's template
            cannot be had (``[live_snapshot] lazy_fallback_to_eager``).
        """
        self.host = host
        self.templates = templates
        self.lazy_fallback = lazy_fallback
        self.network = network
        self.root = clone_dir
        self.restore_timeout = restore_timeout
        self.require_agent = require_agent
        self.agent_timeout = agent_timeout
        os.makedirs(clone_dir, mode=0o711, exist_ok=True)

    # Records -----------------------------------------------------------------

    def _record_path(self, name):
        return os.path.join(self.root, name, CLONE_RECORD)

    def list(self, image=None):
        clones = []
        for entry in sorted(os.listdir(self.root)):
            try:
                clone = self._read_record(entry)
            except (OSError, ValueError):
                continue
            if image is None or clone.image == image:
                clones.append(clone)
        return clones

    def _read_record(self, name):
        """The clone's record.

        :raises UnreadableRecord: also when it does not hold a clone's
            fields.
        """
        path = self._record_path(name)
        data = records.read(path)
        try:
            return Clone(**data)
        except TypeError as e:
            raise exception.UnreadableRecord(path=path, reason=str(e)) from None

    def get(self, name):
        try:
            return self._read_record(name)
        except FileNotFoundError:
            raise exception.CloneNotFound(name=name,
                                          clone_dir=self.root) from None

    # Spawning ----------------------------------------------------------------

    def _new_name(self, prefix):
        taken = self.host.domain_names() | set(os.listdir(self.root))
        while True:
            name = '%s-%s' % (prefix, uuidlib.uuid4().hex[:6])
            if name not in taken:
                return name

    def spawn(self, verified, count=1, prefix=None, exact_copy=False):
        """Spawn ``count`` clones of a verified image, concurrently, each
        re-identified through its guest agent (:mod:`identity`).

        All or nothing: if one clone fails, the others of the batch are
        destroyed and the first error is raised.

        :param exact_copy: skip re-identification: clones that share every
            secret of the source, kept off the network (link down). For
            debugging, and for proving what re-identification changes.

        :param verified: :class:`nova_live_snapshot.liveimage.VerifiedImage`
        :returns: a list of :class:`Clone`
        :raises IncompatibleImage:, CloneSpawnFailed:
        """
        check_host(self.host, verified)
        image = verified.image
        template = self._template(verified)
        prefix = prefix or '%s-clone' % image.name
        names = []
        for _ in range(count):
            names.append(self._new_name(prefix))
            # Reserve the name before the next is drawn.
            os.mkdir(os.path.join(self.root, names[-1]), 0o711)
        clones, errors = [], []
        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(self._spawn_one, verified, name,
                                   exact_copy, template)
                       for name in names]
            for future in futures:
                try:
                    clones.append(future.result())
                except Exception as e:      # destroy the batch, then raise
                    errors.append(e)
        if errors:
            for clone in clones:
                self.destroy(clone.name)
            raise errors[0]
        return clones

    def _template(self, verified):
        """The image's template in lazy mode (built once per host), None
        in eager mode or when falling back to it is allowed."""
        if self.templates is None:
            return None
        try:
            return self.templates.acquire(verified)
        except exception.TemplateError as e:
            if not self.lazy_fallback:
                raise
            LOG.warning('%s Restoring eagerly instead '
                        '([live_snapshot] lazy_fallback_to_eager).', e)
            return None

    def _spec(self, verified, name, exact_copy):
        image = verified.image
        path = os.path.join(self.root, name)
        return domainxml.DomainSpec(
            name=name,
            disk_path=os.path.join(path, 'disk.qcow2'),
            backing_path=image.disk_path,
            console_log=os.path.join(path, 'console.log'),
            memory_mib=image.memory_mib,
            vcpus=image.vcpus,
            machine=image.machine,
            network=self.network,
            # Clones start with the link down until re-identified. An exact
            # copy keeps its link as captured only on QEMU's private
            # user-mode network, where its source's addresses clash with
            # nobody; on a shared network it stays off it.
            link_up=exact_copy and self.network is None)

    @staticmethod
    def _new_identity(verified, spec):
        old_mac = verified.domain.nics[0][1] if verified.domain.nics else None
        return identity.NewIdentity(
            name=spec.name, uuid=spec.uuid, mac=spec.mac, old_mac=old_mac,
            hostname=identity.hostname_for(spec.name))

    def _reidentify(self, verified, new, guest, prepared):
        return reidentify(guest, new, verified.image.name,
                          lambda: guest.set_link_up(new.mac),
                          require_agent=self.require_agent,
                          agent_timeout=self.agent_timeout,
                          prepared=prepared)

    def _spawn_one(self, verified, name, exact_copy=False, template=None):
        image = verified.image
        started = time.monotonic()
        spec = self._spec(verified, name, exact_copy)
        path = os.path.dirname(spec.disk_path)
        guest = None
        address = None
        try:
            new = prepared = None
            if not exact_copy:
                # The host's part (SSH host keys) is made while the clone
                # is restored.
                new = self._new_identity(verified, spec)
                prepared = identity.prepare(new.hostname)
            if self.network:
                # Before the restore: its DHCP request after the
                # re-identification must find the entry.
                address = dhcphost.reserve(self.host, self.network, spec.mac,
                                           name)
            xml = prepare_domain(verified, spec, 'clone XML')
            if template is None:
                restore(self.host, image.name, verified.save, xml,
                        image.memory_path, fifo_dir=path,
                        timeout=self.restore_timeout)
                guest = self.host.lookup(name)
            else:
                guest = self.templates.restore(template, domainxml.render(
                    spec.with_identity(ram_file=template.memory_path,
                                       ram_readonly=template.ram_readonly)))
                guest.resume()
            # The persistent definition of a clone has the link up: its next
            # start is a boot, not a resume. An exact copy stays off the
            # network: it would answer with its source's addresses.
            self.host.define(domainxml.render(spec.with_identity(
                link_up=spec.link_up or not exact_copy)))
            restore_s = round(time.monotonic() - started, 3)
            report = None
            if not exact_copy:
                report = self._reidentify(verified, new, guest,
                                          prepared).to_dict()
            clone = Clone(name=name, uuid=spec.uuid, mac=spec.mac,
                          genid=guest.genid(), image=image.name, path=path,
                          spawn_s=round(time.monotonic() - started, 3),
                          restore_s=restore_s, identity=report,
                          restore_mode='eager' if template is None else 'lazy',
                          address=address)
            records.write(self._record_path(name), clone.to_dict())
            LOG.info('Spawned clone %s of %s in %.2f s', name, image.name,
                     clone.spawn_s)
            return clone
        except (exception.LiveSnapshotError, OSError) as e:
            self._remove(name)
            if isinstance(e, (exception.CloneSpawnFailed,
                              exception.IncompatibleImage)):
                raise
            raise exception.CloneSpawnFailed(name=name, image=image.name,
                                             reason=str(e)) from e
        except BaseException:
            # A bug or an interrupt: still leave nothing of the clone behind.
            self._remove(name)
            raise

    # Destroying --------------------------------------------------------------

    def _remove(self, name):
        guest = self.host.find(name)
        if guest is not None:
            guest.remove()
        if self.network:
            try:
                dhcphost.release(self.host, self.network, name)
            except exception.HypervisorError as e:
                # The network itself is gone or refuses: the clone still
                # goes; the entry (if any) names it for an operator.
                LOG.warning('Could not remove the DHCP host entry of clone '
                            '%s from network %s: %s', name, self.network, e)
        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def destroy(self, name):
        """Stop and undefine clone ``name`` and remove its files.

        :raises CloneNotFound:
        """
        if not os.path.isdir(os.path.join(self.root, name)):
            raise exception.CloneNotFound(name=name, clone_dir=self.root)
        self._remove(name)
