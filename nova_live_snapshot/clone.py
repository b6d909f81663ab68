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
import dataclasses
import logging
import os
import shutil
import time
import uuid as uuidlib

from nova_live_snapshot import dhcphost
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import identity
from nova_live_snapshot import qemuimg
from nova_live_snapshot import records
from nova_live_snapshot import restore as restore_mod

LOG = logging.getLogger(__name__)

__all__ = ['Clone', 'CloneManager', 'check_host', 'host_reasons',
           'prepare_domain']

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
    if restore_mod.version_tuple(here) < restore_mod.version_tuple(qemu_version):
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
    restore_mod.check_against_image(verified.image.name, verified.domain, xml,
                                    origin)
    qemuimg.create_overlay(verified.image.disk_path, spec.disk_path)
    return xml


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
        self.restorer = restore_mod.Restorer(
            host, templates=lambda: templates, timeout=restore_timeout,
            require_agent=require_agent, agent_timeout=agent_timeout)
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
        """The image's template in lazy mode (built once per host, before
        the batch's clones), None in eager mode or when falling back to it
        is allowed."""
        if self.templates is None:
            return None
        return restore_mod.choose_template(
            lambda: self.templates.acquire(verified), self.lazy_fallback)

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

    def _request(self, verified, spec, exact_copy, template):
        """The :class:`restore.RestoreRequest` of a clone rendered from
        ``spec``; its overlay is made here, after the checks."""
        hostname = None if exact_copy else identity.hostname_for(spec.name)
        return restore_mod.RestoreRequest(
            image=verified.image.name, image_facts=verified.domain,
            domain_xml=prepare_domain(verified, spec, 'clone XML'),
            # The persistent definition of a clone has the link up: its
            # next start is a boot, not a resume. An exact copy stays off
            # the network: it would answer with its source's addresses.
            persistent_xml=domainxml.render(spec.with_identity(
                link_up=spec.link_up or not exact_copy)),
            memory=restore_mod.Memory(verified.image.memory_path,
                                      verified.save),
            fifo_dir=os.path.dirname(spec.disk_path),
            mode=restore_mod.EAGER if template is None else restore_mod.LAZY,
            template=None if template is None else (lambda: template),
            hostname=hostname,
            # The host's part (SSH host keys) is made while the clone is
            # restored.
            prepared=None if exact_copy else identity.prepare(hostname))

    def _spawn_one(self, verified, name, exact_copy=False, template=None):
        image = verified.image
        started = time.monotonic()
        spec = self._spec(verified, name, exact_copy)
        path = os.path.dirname(spec.disk_path)
        address = None
        try:
            if self.network:
                # Before the restore: its DHCP request after the
                # re-identification must find the entry.
                address = dhcphost.reserve(self.host, self.network, spec.mac,
                                           name)
            request = self._request(verified, spec, exact_copy, template)
            restored, report = self.restorer.spawn_clone(request)
            clone = Clone(name=name, uuid=spec.uuid, mac=spec.mac,
                          genid=restored.guest.genid(), image=image.name,
                          path=path,
                          spawn_s=round(time.monotonic() - started, 3),
                          restore_s=round(restored.restored_at - started, 3),
                          identity=report and report.to_dict(),
                          restore_mode=restored.mode, address=address)
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
        self.restorer.remove(name)
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
