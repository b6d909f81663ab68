"""Restoring a clone: the one seam the engine and the Nova driver share.

Whoever asks for a clone (the standalone engine, :mod:`nova_live_snapshot.
clone`; the Nova driver, :mod:`nova_live_snapshot.virt.restoring`) decides
what the clone is and describes it in a :class:`RestoreRequest`: the live
image and its domain facts, the domain XML to resume (the clone's name,
UUID, MAC and generation ID, links down), the XML to define (what its next
start boots), the memory stream, the mode (eager or lazy) and the hostname
it is re-identified as. :class:`Restorer` then does the same for every
caller:

#. compares the clone's XML with the image's domain facts
   (:func:`check_against_image`);
#. defines the clone, so that its next start is a boot (Nova builds the
   config drive from the definition: ``after_define``);
#. chooses the memory source: the image's lazy template when the mode is
   lazy, or the eager stream when the template cannot be had and falling
   back is allowed (:func:`choose_template`);
#. restores: eagerly, a FIFO carrying a header of the clone's own followed
   by the image's unchanged QEMU stream (:func:`restore_stream`); lazily,
   the template's device state loaded over a private mapping of its RAM;
#. re-identifies the running clone through its guest agent
   (:meth:`Restorer.reidentify`, :mod:`nova_live_snapshot.identity`).

Nova restores inside its own ``spawn`` (the clone waits paused until
Neutron has wired its ports) and re-identifies after it: it calls
:meth:`Restorer.restore` and :meth:`Restorer.reidentify` in turn, and Nova
destroys what it built when either fails. The engine calls
:meth:`Restorer.spawn_clone`, which does both and removes the domain when one
fails; the engine's own files (directory, DHCP entry) are its to remove.
"""

import contextlib
import dataclasses
import errno
import fcntl
import functools
import logging
import os
import threading
import time

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import identity
from nova_live_snapshot import saveimage

LOG = logging.getLogger(__name__)

__all__ = ['EAGER', 'LAZY', 'MODES', 'Memory', 'RestoreRequest', 'Restored',
           'Restorer', 'check_against_image', 'choose_template',
           'header_reads', 'restore_stream', 'version_tuple']

EAGER = 'eager'
LAZY = 'lazy'
MODES = (EAGER, LAZY)


def version_tuple(text):
    """'7.2.22' as (7, 2, 22), for comparing versions."""
    return tuple(int(p) for p in text.split('.'))


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


@dataclasses.dataclass(frozen=True)
class Memory:
    """A live image's memory stream on this host: the save image at
    ``path``, parsed (:class:`nova_live_snapshot.saveimage.SaveImage`)."""

    path: str
    save: object


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    """What to restore: everything a caller decides about one clone.

    :param image: the live image, as messages name it.
    :param image_facts: its embedded domain's
        :class:`nova_live_snapshot.domainxml.DomainFacts`.
    :param domain_xml: the domain the clone resumes as: its own name, UUID,
        MAC and generation ID; NICs whose link it sets down are down when
        the clone runs.
    :param persistent_xml: the clone's definition (same name and UUID):
        its next start is a boot, not a resume.
    :param memory: the image's :class:`Memory` (the eager stream, and the
        fallback of a lazy restore).
    :param mode: :data:`EAGER` or :data:`LAZY`.
    :param template: lazy mode: returns the image's template on this host
        (building it if need be), or raises ``TemplateError``.
    :param lazy_fallback: restore eagerly when the template cannot be had
        (``[live_snapshot] lazy_fallback_to_eager``).
    :param hostname: what the clone is re-identified as; None for an exact
        copy, which keeps every secret of its source and is not
        re-identified.
    :param prepared: :func:`identity.prepare` of ``hostname``, started
        before the restore so that the host's part is ready when the guest
        is.
    :param fifo_dir: a directory of the clone's own for the restore FIFO.
    :param origin: what ``domain_xml`` is, for messages.
    :raises InvalidRestoreRequest: the fields contradict each other.
    """

    image: str
    image_facts: domainxml.DomainFacts
    domain_xml: str
    persistent_xml: str
    memory: Memory
    fifo_dir: str
    mode: str = EAGER
    template: object = None
    lazy_fallback: bool = False
    hostname: str = None
    prepared: object = None
    origin: str = 'clone XML'

    def __post_init__(self):
        def refuse(reason):
            raise exception.InvalidRestoreRequest(image=self.image,
                                                  reason=reason)
        if self.mode not in MODES:
            refuse('mode %r is neither %s' % (self.mode, ' nor '.join(MODES)))
        if self.mode == LAZY and self.template is None:
            refuse('a lazy restore needs a template to map')
        if self.mode == EAGER and self.template is not None:
            refuse('an eager restore maps no template')
        if self.memory is None:
            refuse('it names no memory stream, which every restore needs '
                   '(eagerly, or as the fallback of a lazy one)')
        if self.hostname is None and self.prepared is not None:
            refuse('an exact copy is not re-identified, yet something was '
                   'prepared for its re-identification')
        clone = self.clone_facts
        defined = domainxml.facts(self.persistent_xml, self.origin)
        if (defined.name, defined.uuid) != (clone.name, clone.uuid):
            refuse('the clone would be defined as %s (%s) and restored as '
                   '%s (%s)' % (defined.name, defined.uuid, clone.name,
                                clone.uuid))
        if self.hostname is not None and (clone.nics and not clone.nics[0][1]):
            refuse('its first NIC has no MAC to re-identify the clone with')

    @functools.cached_property
    def clone_facts(self):
        """The :class:`DomainFacts` of :attr:`domain_xml` (read once: the
        request is frozen)."""
        return domainxml.facts(self.domain_xml, self.origin)

    @property
    def name(self):
        return self.clone_facts.name


@dataclasses.dataclass(frozen=True)
class Restored:
    """A clone restored: its domain, how it was restored, and when QEMU
    had its state (``time.monotonic()``)."""

    guest: object
    mode: str
    restored_at: float


def check_against_image(image, image_facts, xml, origin):
    """Refuse domain ``xml`` that cannot resume live image ``image`` (its
    embedded domain's ``image_facts``).

    :raises IncompatibleImage: naming every difference.
    """
    reasons = domainxml.compare(image_facts, domainxml.facts(xml, origin))
    if reasons:
        raise exception.IncompatibleImage(image=image,
                                          reasons='; '.join(reasons))


def choose_template(acquire, fallback):
    """The template ``acquire()`` returns, or None (restore eagerly) when it
    raises ``TemplateError`` and ``fallback`` allows it, with a warning.

    :raises TemplateError: without ``fallback``.
    """
    try:
        return acquire()
    except exception.TemplateError as e:
        if not fallback:
            raise
        LOG.warning('%s Restoring eagerly instead '
                    '([live_snapshot] lazy_fallback_to_eager).', e)
        return None


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


def restore_stream(host, image_name, save, xml, memory_path, fifo_dir,
                   timeout, paused=False):
    """Restore a clone of live image ``image_name`` with domain XML ``xml``
    eagerly, from the image's memory stream.

    :param save: the image's parsed memory file
        (:class:`nova_live_snapshot.saveimage.SaveImage`).

    A header of the clone's own (``xml`` and the image's cookie) followed by
    the image's unchanged QEMU stream, spliced from ``memory_path``, is fed
    to libvirt through a FIFO in ``fifo_dir``. The caller has checked
    ``xml`` against the image (:func:`check_against_image`).

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


class Restorer:
    """Restores, re-identifies and removes clones on one libvirt host,
    whoever asked for them.

    :param host: a :class:`nova_live_snapshot.host.Host`.
    :param templates: returns this host's
        :class:`nova_live_snapshot.template.TemplateStore` (called only for
        a lazy restore: a host that never restores lazily makes none).
    :param timeout: seconds a restore's stream or state may take.
    :param require_agent: a clone whose guest agent never answers fails
        (``[live_snapshot] require_guest_agent``); otherwise it runs with
        its source's identity, with a warning.
    :param agent_timeout: seconds to wait for the clone's guest agent.
    """

    def __init__(self, host, templates=None, timeout=120, require_agent=True,
                 agent_timeout=30):
        self.host = host
        self._templates = templates
        self.timeout = timeout
        self.require_agent = require_agent
        self.agent_timeout = agent_timeout

    def restore(self, request, paused=False, after_define=None):
        """Define the clone of ``request``, then restore it over the
        definition, from its template or its memory stream.

        :param paused: leave the clone paused (Nova resumes it once
            Neutron has wired its ports).
        :param after_define: runs once the clone is defined, before it is
            restored (Nova builds the config drive from the definition).
        :returns: :class:`Restored`.
        :raises IncompatibleImage: the clone's XML cannot resume the image.
        :raises TemplateError: lazy, without fallback, and no template.
        :raises CloneSpawnFailed:, HypervisorError: the restore failed; the
            domain is left for the caller to remove.
        """
        check_against_image(request.image, request.image_facts,
                            request.domain_xml, request.origin)
        self.host.define(request.persistent_xml)
        if after_define is not None:
            after_define()
        template = None
        if request.mode == LAZY:
            template = choose_template(request.template,
                                       request.lazy_fallback)
        if template is None:
            restore_stream(self.host, request.image, request.memory.save,
                           request.domain_xml, request.memory.path,
                           fifo_dir=request.fifo_dir, timeout=self.timeout,
                           paused=paused)
            guest = self.host.lookup(request.name)
        else:
            # Over the definition: live with the RAM passthrough,
            # persistent without, so that the next start boots.
            guest = self._templates().restore(
                template, domainxml.with_lazy_ram(
                    request.domain_xml, template.memory_path, False,
                    request.image_facts.memory_kib // 1024,
                    template.ram_readonly))
            if not paused:
                guest.resume()
        return Restored(guest=guest, mode=EAGER if template is None else LAZY,
                        restored_at=time.monotonic())

    def reidentify(self, request, guest):
        """Give the running clone of ``request`` its own identity
        (:func:`identity.reset`): its MAC and UUID from its domain XML,
        ``request.hostname``.

        :returns: the :class:`identity.IdentityReport`; None for an exact
            copy.
        :raises CloneSpawnFailed: the agent did not answer and
            ``require_agent`` is set, or a step failed.
        """
        if request.hostname is None:
            return None
        clone = request.clone_facts
        image_nics = request.image_facts.nics
        new = identity.NewIdentity(
            name=clone.name, uuid=clone.uuid,
            mac=clone.nics[0][1] if clone.nics else None,
            old_mac=image_nics[0][1] if image_nics else None,
            hostname=identity.hostname_for(request.hostname))

        def set_link_up():
            if new.mac:
                guest.set_link_up(new.mac)

        report = identity.reset(guest, new, set_link_up,
                                agent_timeout=self.agent_timeout,
                                prepared=request.prepared)
        if not report.agent:
            if self.require_agent:
                raise exception.CloneSpawnFailed(
                    name=new.name, image=request.image,
                    reason='%s, so its identity (MAC, entropy, hostname, host '
                    'keys) could not be reset; set [live_snapshot] '
                    'require_guest_agent = false to spawn such clones anyway'
                    % report.steps[0].detail)
            LOG.warning('Clone %s runs with the identity of its source: %s',
                        new.name, report.steps[0].detail)
            set_link_up()
        elif not report.reset:
            # A clone that is half re-identified may still share what
            # matters with its source: it does not survive.
            failed = ['%s (%s)' % (s.step, s.detail) for s in report.steps
                      if s.status == identity.Status.FAILED]
            raise exception.CloneSpawnFailed(
                name=new.name, image=request.image,
                reason='re-identification failed: %s' % '; '.join(failed))
        return report

    def spawn_clone(self, request):
        """Restore the clone of ``request``, let it run and re-identify it;
        when either fails, the domain goes (destroyed and undefined).

        :returns: (:class:`Restored`, the identity report or None).
        :raises: what :meth:`restore` and :meth:`reidentify` raise.
        """
        try:
            restored = self.restore(request)
            return restored, self.reidentify(request, restored.guest)
        except BaseException:
            # A bug or an interrupt too: no domain of a failed clone stays.
            self.remove(request.name)
            raise

    def remove(self, name):
        """Destroy and undefine domain ``name``, if there is one."""
        guest = self.host.find(name)
        if guest is not None:
            guest.remove()
