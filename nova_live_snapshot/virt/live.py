"""The driver's live-snapshot operations, on Nova's objects.

:class:`LiveSnapshots` is what :class:`nova_live_snapshot.virt.driver.
LiveSnapshotDriver` calls: capture an instance and publish it to Glance,
prepare and perform the restore of a clone, re-identify it, and recover
after a crash. It works on the engine's pieces (capture, the save-image
stream feeder, re-identification) through the libvirt connection Nova's
driver already has, so that nova-compute keeps one connection and one event
loop.
"""

import contextlib
import dataclasses
import functools
import glob
import hashlib
import logging
import os
import shutil
import uuid as uuidlib

from lxml import etree

from nova_live_snapshot import capture as capture_mod
from nova_live_snapshot import clone as clone_mod
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import identity
from nova_live_snapshot import liveimage
from nova_live_snapshot import protocol
from nova_live_snapshot import qemuimg
from nova_live_snapshot import records
from nova_live_snapshot import restore as restore_mod
from nova_live_snapshot import template as template_mod
from nova_live_snapshot.virt import disks
from nova_live_snapshot.virt import images
from nova_live_snapshot.virt import traits

LOG = logging.getLogger(__name__)

__all__ = ['LiveSnapshots', 'RestorePlan', 'Journal', 'service_context']


@dataclasses.dataclass
class RestorePlan:
    """A clone about to be restored: its checked record, and once the
    memory stream is at hand, its parsed save image."""

    record: images.Record
    memory_path: str = None
    save: object = None
    facts: domainxml.DomainFacts = None
    restored_at: float = None   # time.monotonic() when QEMU ran (paused)
    restore_s: float = None     # define, config drive, restore
    # identity.Prepared: the clone's SSH host keys, made while Nova builds
    # and restores it.
    identity: object = None
    hostname: str = None        # what the clone is re-identified as
    # restore.RestoreRequest, once Nova has rendered the clone's XML.
    request: object = None


def clone_xml(xml, machine, aliases, genid):
    """Nova's guest config ``xml`` for a clone, made restorable.

    * The clone's VM generation ID is ``genid`` (None when its source had
      no generation ID device).

    * Every interface's link is down: a clone stays off the network until
      it has its own MAC and has forgotten its source's addresses
      (:mod:`nova_live_snapshot.identity`).
    * A machine type alias (Nova writes ``pc`` unless the image says
      otherwise) becomes the image's concrete machine type when the alias
      stands for it here: the migration stream only loads into that one.
    """
    root = domainxml.parse(xml, 'Nova guest config')
    for nic in root.findall('devices/interface'):
        for link in nic.findall('link'):
            nic.remove(link)
        etree.SubElement(nic, 'link', state='down')
    ostype = root.find('os/type')
    if ostype is not None and ostype.get('machine') != machine and \
            aliases.get(ostype.get('machine')) == machine:
        ostype.set('machine', machine)
    return domainxml.with_genid(etree.tostring(root, encoding='unicode'),
                                genid)


# What of Nova's guest config is the host's, not the guest's: left out of
# the device signature a template is keyed by, and replaced in the domain
# that builds it.
_HOST_SIDE = ('name', 'uuid', 'genid', 'title', 'description', 'metadata',
              'sysinfo', 'seclabel', 'resource')
_NIC_KEEP = ('mac', 'model', 'driver', 'address', 'mtu', 'rom', 'link',
             'alias')


def device_signature(xml):
    """A digest of the guest-visible devices of Nova's config ``xml`` (host
    paths, names and MACs left out): clones whose configs have the same
    signature can share a template, whose saved device state must match
    their devices."""
    root = domainxml.parse(xml, 'Nova guest config')
    for tag in _HOST_SIDE:
        for el in root.findall(tag):
            root.remove(el)
    for path in ('devices/*/source', 'devices/*/backingStore',
                 'devices/*/log', 'devices/interface/target',
                 'devices/interface/mac', 'devices/graphics'):
        for el in root.findall(path):
            el.getparent().remove(el)
    canonical = etree.tostring(root, method='c14n')
    return hashlib.sha256(canonical).hexdigest()[:16]


def template_xml(xml, image, genid, partial, ram, memory_mib):
    """The domain that builds the lazy template of live image ``image``
    from Nova's guest config ``xml`` of its first clone here: the same
    guest devices, so that the state it saves loads into clones, but none
    of the instance's host resources.

    Disks become overlays in ``partial`` on the instance's disks (it never
    runs, so they stay empty), NICs unattached taps (a virtio-net state
    records that its backend gives vnet headers, as Neutron's taps do),
    serial ports and consoles ptys without logs; read-only media stay.

    :raises TemplateBuildFailed: a device it cannot stand in for.
    """
    root = domainxml.parse(xml, 'Nova guest config')
    root.find('name').text = 'nls-template-%s' % uuidlib.uuid4().hex[:12]
    root.find('uuid').text = str(uuidlib.uuid4())
    # libvirt wants Nova's SMBIOS UUID to be the domain's (firmware tables,
    # not migration state: the guest read its own long ago).
    for entry in root.findall("sysinfo/system/entry[@name='uuid']"):
        entry.text = root.find('uuid').text
    if root.find('genid') is not None:
        root.find('genid').text = genid
    for tag in ('metadata', 'title', 'description'):
        for el in root.findall(tag):
            root.remove(el)

    def refuse(reason):
        return exception.TemplateBuildFailed(image=image, reason=reason)

    for disk in root.findall('devices/disk'):
        if disk.get('device', 'disk') != 'disk':
            continue
        source = disk.find('source')
        if disk.get('type') != 'file' or source is None:
            raise refuse('its disk %s is of type %s; lazy templates stand in '
                         'for file disks only' % (
                             disk.find('target').get('dev'), disk.get('type')))
        overlay = os.path.join(partial, 'disk-%s.qcow2'
                               % disk.find('target').get('dev'))
        qemuimg.create_overlay(source.get('file'), overlay,
                               disk.find('driver').get('type', 'raw'))
        source.attrib.clear()
        source.set('file', overlay)
        disk.find('driver').set('type', 'qcow2')
        for el in disk.findall('backingStore'):
            disk.remove(el)
    for nic in root.findall('devices/interface'):
        if nic.get('type') not in ('bridge', 'ethernet', 'network'):
            raise refuse('its interface of type %s has no tap to stand in '
                         'for' % nic.get('type'))
        nic.set('type', 'ethernet')
        for child in list(nic):
            if child.tag not in _NIC_KEEP:
                nic.remove(child)
    for chardev in (root.findall('devices/serial')
                    + root.findall('devices/console')):
        chardev.set('type', 'pty')
        for child in list(chardev):
            if child.tag != 'target':
                chardev.remove(child)
    for channel in root.findall('devices/channel'):
        for source in channel.findall('source'):
            channel.remove(source)
    for graphics in root.findall('devices/graphics'):
        graphics.getparent().remove(graphics)
    # The overlays' chains (the first clone's disk, the image's base) are
    # never relabelled for the template's QEMU either.
    return domainxml.with_lazy_ram(
        disks.protect(etree.tostring(root, encoding='unicode')),
        ram, True, memory_mib)


class Journal:
    """Captures in progress on this host, one small file each, so that a
    nova-compute that died mid-capture can remove what the capture left:
    the source's extra overlay, staging files and the half-made Glance
    images. It holds ids and paths only, never a token or other secret:
    recovery deletes the Glance images as Nova's service user
    (:func:`service_context`), not as the requester, whose token may be long
    expired by then."""

    def __init__(self, root):
        self.root = root

    def _path(self, image_id):
        return os.path.join(self.root, '%s.capture.json' % image_id)

    def write(self, image_id, **entry):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            data = self.read(image_id) or {}
        except exception.UnreadableRecord as e:
            # What it said is lost either way; what is written now holds.
            LOG.warning('Replacing an unreadable capture journal: %s', e)
            data = {}
        data.update(entry, image_id=image_id)
        records.write(self._path(image_id), data)

    def read(self, image_id):
        """The journal of capture ``image_id``, or None.

        :raises UnreadableRecord: it cannot be trusted.
        """
        try:
            return records.read(self._path(image_id))
        except FileNotFoundError:
            return None

    def remove(self, image_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(image_id))

    def entries(self):
        for path in sorted(glob.glob(os.path.join(self.root,
                                                  '*.capture.json'))):
            try:
                yield records.read(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                LOG.warning('Removing unreadable capture journal %s: %s',
                            path, e)
                os.unlink(path)


class LiveSnapshots:
    """Live snapshot operations on one compute host.

    :param conf: the ``[live_snapshot]`` group.
    :param get_connection: Nova's ``Host.get_connection``.
    :param image_api: Nova's ``nova.image.glance.API``.
    """

    def __init__(self, conf, get_connection, image_api):
        self.conf = conf
        self.host = host_mod.Host(connection=get_connection)
        self.image_api = image_api
        self.cache = images.MemoryCache(conf.memory_cache_dir,
                                        conf.memory_cache_max_mib)
        self.journal = Journal(conf.image_dir)

    @functools.cached_property
    def store(self):
        """The capture staging store; made on first use, so that a host
        that never captures gets no directories."""
        return liveimage.ImageStore(self.conf.image_dir, self.conf.qemu_group,
                                    self.conf.host_key_file)

    @functools.cached_property
    def restorer(self):
        """The restore seam on Nova's connection."""
        return restore_mod.Restorer(
            self.host, templates=lambda: self.templates,
            timeout=self.conf.restore_timeout,
            require_agent=self.conf.require_guest_agent,
            agent_timeout=self.conf.agent_timeout)

    @functools.cached_property
    def templates(self):
        """This host's lazy-mode templates (:mod:`template`), keyed by
        memory image and device signature."""
        return template_mod.TemplateStore(
            self.conf.template_dir, self.host, self.store,
            timeout=self.conf.restore_timeout,
            allow_writable=self.conf.lazy_writable_templates)

    def collect_templates(self):
        """Remove the templates whose memory stream has left this host's
        cache and that no running domain maps."""
        if self.conf.restore_mode != 'lazy' and not os.path.isdir(
                self.conf.template_dir):
            return []
        return self.templates.collect({key for key, _, _ in
                                       self.cache.entries()})

    # Capture -----------------------------------------------------------------

    def capture(self, context, instance, domain_name, image_id,
                update_task_state):
        """Capture ``instance`` into the queued Glance image ``image_id``,
        upload both halves and sign the record. The source keeps running,
        back on its own disk when this returns or raises.

        :raises NotConfigured:, DomainNotRunning:, CaptureFailed:,
            InsufficientSpace: (nothing of the image is left on this host or
            in Glance, except ``image_id`` itself, which the caller owns)
        """
        from nova.compute import task_states

        images.check_key(self.conf.signing_key)
        self.journal.write(image_id, instance=instance.uuid,
                           domain=domain_name, project_id=context.project_id)
        memory_image_id = None
        try:
            # The capture merges its overlay back into the source's disk
            # itself; the journal knows the overlay while it does.
            result = capture_mod.capture(
                self.host, self.store, domain_name, image_id, self.conf,
                before_merge=lambda overlays: self.journal.write(
                    image_id, overlays=overlays, domain=domain_name))
            update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
            update_task_state(
                task_state=task_states.IMAGE_UPLOADING,
                expected_state=task_states.IMAGE_PENDING_UPLOAD)
            image = result.image
            name = self.image_api.get(context, image_id)['name']
            with open(image.memory_path, 'rb') as f:
                memory_image_id = self.image_api.create(
                    context, images.memory_image_meta(name, image_id),
                    data=f)['id']
            self.journal.write(image_id, memory_image=memory_image_id)
            source = image.manifest.source
            record = images.Record(
                format=protocol.FORMAT, disk_image=image_id,
                project_id=instance.project_id,
                memory_image=memory_image_id,
                memory_sha256=image.manifest.files['memory']['sha256'],
                memory_size=str(image.manifest.files['memory']['size']),
                disk_hash='%s:%s' % (protocol.DISK_HASH, liveimage.file_digest(
                    image.disk_path, protocol.DISK_HASH)[0]),
                memory_mib=str(source['memory_mib']),
                vcpus=str(source['vcpus']),
                machine=source['machine'],
                cpu_model=source.get('cpu_model') or '',
                qemu_version=image.manifest.host['qemu_version'],
                source_instance=instance.uuid,
                created_at=image.manifest.data['created_at'])
            properties = record.properties(self.conf.signing_key)
            properties['trait:%s' % protocol.TRAIT] = 'required'
            # Only hosts whose QEMU can resume it (format 1: x86_64).
            for trait in traits.image_traits(
                    'x86_64', record.machine, record.qemu_version,
                    record.cpu_model):
                properties['trait:%s' % trait] = 'required'
            # One upload with the signed record: the image turns active
            # complete, never active and unsigned.
            with open(image.disk_path, 'rb') as f:
                uploaded = self.image_api.update(context, image_id, {
                    'disk_format': 'qcow2',
                    'container_format': 'bare',
                    'min_ram': source['memory_mib'],
                    'properties': properties,
                }, data=f, purge_props=False)
            # Glance hashes what it stored; a clone checks that hash against
            # the signed one, so they must agree now.
            stored = images.glance_hash(uploaded)
            if stored != record.disk_hash:
                raise exception.CaptureFailed(
                    domain=domain_name, reason='Glance stored the disk with '
                    'hash %s, the upload had %s (Glance must hash with %s, '
                    'its default)' % (stored[:24], record.disk_hash[:24],
                                      protocol.DISK_HASH))
            self.cache.add(memory_image_id, image.memory_path,
                           record.memory_sha256)
            LOG.info('Live image %s of %s: source paused %.0f ms, memory '
                     '%d MiB', image_id, instance.uuid, result.pause_ms or -1,
                     record_size_mib(record))
            return record
        except BaseException:
            if memory_image_id is not None:
                self._delete_image(context, memory_image_id)
            raise
        finally:
            with contextlib.suppress(exception.ImageNotFound):
                self.store.delete(image_id)
            self.journal.remove(image_id)

    def _overlays_left(self, entry):
        """The overlays an interrupted capture left its source on: those
        the journal recorded, and those the domain runs on (a crash between
        libvirt's snapshot and the journal's update leaves them unrecorded).
        """
        overlays = dict(entry.get('overlays') or {})
        if not entry.get('domain'):
            return overlays
        try:
            guest = self.host.lookup(entry['domain'])
            guest.end_job()
        except exception.DomainNotFound:
            return overlays
        overlays.update(capture_mod.capture_overlays(guest))
        return overlays

    def _delete_image(self, context, image_id):
        """Delete a Glance image; False (logged) when Glance refused."""
        from nova import exception as nova_exception
        try:
            self.image_api.delete(context, image_id)
        except nova_exception.ImageNotFound:
            pass
        except Exception:   # noqa: cleanup must not hide the first error
            LOG.exception('Could not delete Glance image %s', image_id)
            return False
        return True

    # Restore -----------------------------------------------------------------

    def prepare_restore(self, context, instance):
        """Check that ``instance`` may be a clone of its live image, before
        anything is created for it.

        :returns: :class:`RestorePlan`
        :raises UntrustedImage:, WrongProject:, FlavorMismatch:,
            IncompatibleImage:, NotConfigured:
        """
        image = self.image_api.get(context, instance.image_ref)
        record = images.Record.from_image(image, self.conf.signing_key)
        if images.glance_hash(image) != record.disk_hash:
            raise exception.UntrustedImage(
                image=record.disk_image, reason='Glance holds other disk data '
                'than the image was signed with')
        if record.project_id != instance.project_id:
            raise exception.WrongProject(image=record.disk_image,
                                         owner=record.project_id,
                                         project=instance.project_id)
        flavor = instance.flavor
        if (flavor.memory_mb, flavor.vcpus) != (record.ram_mib, record.cpus):
            raise exception.FlavorMismatch(
                image=record.disk_image, image_ram=record.ram_mib,
                image_vcpus=record.cpus, flavor=flavor.name,
                ram=flavor.memory_mb, vcpus=flavor.vcpus)
        # Format 1 images are x86_64 (the record has no arch to lie about).
        reasons = clone_mod.host_reasons(self.host, 'x86_64', record.machine,
                                         record.qemu_version)
        if reasons:
            raise exception.IncompatibleImage(image=record.disk_image,
                                              reasons='; '.join(reasons))
        return RestorePlan(
            record=record, hostname=instance.hostname or None,
            identity=identity.prepare(identity.hostname_for(
                instance.hostname or instance.uuid)))

    @contextlib.contextmanager
    def memory_stream(self, context, plan):
        """Make the plan's memory stream available (from the cache, or
        downloaded and checked against the signed hash) and parse it."""
        record = plan.record

        def fetch(path):
            from nova import exception as nova_exception
            try:
                self.image_api.download(context, record.memory_image,
                                        dest_path=path)
            except (nova_exception.ImageNotFound,
                    nova_exception.ImageNotAuthorized) as e:
                # Every host would fail the same way: not a reschedule.
                raise exception.InvalidLiveImage(
                    image=record.disk_image, reason='its memory image %s '
                    'cannot be read from Glance (%s); the live image is '
                    'incomplete' % (record.memory_image,
                                    e.format_message())) from e

        with self.cache.use(record.memory_image, record.memory_sha256,
                            record.memory_size, fetch,
                            record.disk_image) as path:
            plan.memory_path = path
            plan.save, plan.facts = liveimage.read_memory(
                path, record.disk_image, record.ram_mib, record.cpus,
                record.machine)
            yield plan

    def restore(self, plan, xml, instance_dir, paused, after_define=None):
        """Restore the clone with Nova's domain XML for it (its name, UUID,
        disk paths and ports), links down, through the restore seam
        (:class:`nova_live_snapshot.restore.Restorer`).

        As Nova does for a boot, the domain is defined first with ``xml``
        as Nova rendered it (its next start is a normal boot), then
        ``after_define`` runs (Nova builds the config drive there, reading
        the defined domain), then the clone is restored over the
        definition.

        :raises IncompatibleImage: Nova's guest config for the instance
            cannot resume the image.
        """
        genid = str(uuidlib.uuid4()) if plan.facts.genid else None
        # Clones of an image share its disk's base: never QEMU's to write.
        xml = disks.protect(domainxml.with_genid(xml, genid,
                                                 'Nova guest config'))
        xml_for_restore = clone_xml(xml, plan.facts.machine,
                                    self.host.machine_aliases(), genid)
        lazy = self.conf.restore_mode == restore_mod.LAZY
        plan.request = restore_mod.RestoreRequest(
            image=plan.record.disk_image, image_facts=plan.facts,
            domain_xml=xml_for_restore, persistent_xml=xml,
            memory=restore_mod.Memory(plan.memory_path, plan.save),
            fifo_dir=instance_dir,
            mode=restore_mod.LAZY if lazy else restore_mod.EAGER,
            # Built after the instance's disks and config drive exist.
            template=functools.partial(self._template, plan, xml_for_restore)
            if lazy else None,
            lazy_fallback=self.conf.lazy_fallback_to_eager,
            # Nova's own hostname for the instance, or its domain name.
            hostname=plan.hostname or domainxml.facts(
                xml, 'Nova guest config').name,
            prepared=plan.identity, origin='Nova guest config')
        self.restorer.restore(plan.request, paused=paused,
                              after_define=after_define)

    def _template(self, plan, xml):
        """The lazy template for clones with Nova's config ``xml``.

        :raises TemplateError:
        """
        record = plan.record

        def render(partial, ram):
            return template_xml(xml, record.disk_image,
                                template_mod.template_genid(plan.facts),
                                partial, ram, record.ram_mib)
        source = template_mod.Source(
            key='%s-%s' % (record.memory_image, device_signature(xml)),
            image_id=record.memory_image, name=record.disk_image,
            memory_path=plan.memory_path, save=plan.save,
            memory_mib=record.ram_mib, backend='nova', render=render)
        return self.templates.acquire_source(source)

    def reidentify(self, plan, domain_name):
        """Give the running clone its own identity (:mod:`identity`).

        :returns: the identity report as a dict.
        :raises CloneSpawnFailed: naming the step that failed.
        """
        return self.restorer.reidentify(
            plan.request, self.host.lookup(domain_name)).to_dict()

    # Recovery ----------------------------------------------------------------

    def _remove_orphaned_staging(self):
        """Memory files staged by captures whose writer is gone (its
        partial image was just removed as stale): machine memory on tmpfs
        that nothing will ever move or delete otherwise."""
        staging = self.conf.staging_dir
        if not os.path.isdir(staging):
            return
        live = set()
        if os.path.isdir(self.conf.image_dir):
            live = {name.rsplit('-', 1)[-1]
                    for name in os.listdir(self.conf.image_dir)
                    if name.startswith(liveimage.PARTIAL_PREFIX)}
        for entry in os.listdir(staging):
            if entry[:8] not in live:
                LOG.warning('Removing orphaned capture staging %s', entry)
                shutil.rmtree(os.path.join(staging, entry),
                              ignore_errors=True)

    def recover(self, get_context):
        """After a crash: put every source back on its own disk, drop
        staging files and partial images, and delete the Glance images of
        captures that never finished.

        :param get_context: returns the request context to delete Glance
            images with: the service's own (:func:`service_context`). A
            capture whose images Glance would not delete keeps its journal
            entry, and the next start tries again.
        """
        if os.path.isdir(self.conf.image_dir):
            self.store.remove_stale_partials()
        self.cache.remove_partials()
        self._remove_orphaned_staging()
        for entry in list(self.journal.entries()):
            image_id = entry['image_id']
            LOG.warning('Cleaning up the live snapshot %s that was in '
                        'progress when nova-compute stopped', image_id)
            overlays = self._overlays_left(entry)
            if overlays:
                try:
                    capture_mod.commit_overlays(self.host, entry['domain'],
                                                overlays)
                except exception.LiveSnapshotError:
                    LOG.exception('Could not commit the capture overlay of '
                                  '%s back', entry['domain'])
            with contextlib.suppress(exception.ImageNotFound):
                self.store.delete(image_id)
            context = get_context()
            deleted = [self._delete_image(context, glance_id)
                       for glance_id in (entry.get('memory_image'), image_id)
                       if glance_id]
            if all(deleted):
                self.journal.remove(image_id)
            else:
                # Entries of older releases held the requester's context,
                # token included: never kept.
                entry.pop('context', None)
                self.journal.write(image_id, **entry)
                LOG.error('The Glance images of unfinished live snapshot %s '
                          'were not deleted; nova-compute tries again when '
                          'it next starts. Configure [service_user] in '
                          'nova.conf with a user Glance lets delete them.',
                          image_id)


def service_context():
    """An admin request context that authenticates as Nova's service user
    (``[service_user]`` in nova.conf), for work no request asked for, such
    as cleaning up after a crash. Without that configuration, an anonymous
    admin context (which a real Glance refuses), with a warning."""
    from nova.conf import service_token
    from nova import context as nova_context
    from nova import service_auth
    context = nova_context.get_admin_context()
    auth = service_auth.get_service_auth_plugin(
        service_token.SERVICE_USER_GROUP)
    if auth is None:
        LOG.warning('[service_user] has no auth_type: live snapshot '
                    'recovery has no credentials of its own for Glance')
    else:
        context.user_auth_plugin = auth
    return context


def record_size_mib(record):
    return int(record.memory_size) // (1024 * 1024)
