"""Restoring a clone of a live image inside Nova's spawn.

The driver's part of a clone's spawn, around the restore seam
(:class:`nova_live_snapshot.restore.Restorer`): the live image's signed
record checked against the instance before anything is built
(:meth:`Restores.prepare`), its memory stream from this host's cache or
Glance (:meth:`Restores.memory_stream`), Nova's guest config made
restorable and handed to the seam (:meth:`Restores.restore`), and the
clone re-identified once Nova has let it run (:meth:`Restores.reidentify`).
"""

import contextlib
import dataclasses
import functools
import uuid as uuidlib

from nova_live_snapshot import clone as clone_mod
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import identity
from nova_live_snapshot import liveimage
from nova_live_snapshot import restore as restore_mod
from nova_live_snapshot import template as template_mod
from nova_live_snapshot.virt import disks
from nova_live_snapshot.virt import guestconfig
from nova_live_snapshot.virt import images

__all__ = ['RestorePlan', 'Restores']


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


class Restores:
    """Clones restored on one compute host
    (:class:`virt.live.LiveSnapshots`)."""

    def __init__(self, live):
        self.live = live

    def prepare(self, context, instance):
        """Check that ``instance`` may be a clone of its live image, before
        anything is created for it.

        :returns: :class:`RestorePlan`
        :raises UntrustedImage:, WrongProject:, FlavorMismatch:,
            IncompatibleImage:, NotConfigured:
        """
        image = self.live.image_api.get(context, instance.image_ref)
        record = images.Record.from_image(image, self.live.conf.signing_key)
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
        reasons = clone_mod.host_reasons(self.live.host, 'x86_64',
                                         record.machine, record.qemu_version)
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
                self.live.image_api.download(context, record.memory_image,
                                             dest_path=path)
            except (nova_exception.ImageNotFound,
                    nova_exception.ImageNotAuthorized) as e:
                # Every host would fail the same way: not a reschedule.
                raise exception.InvalidLiveImage(
                    image=record.disk_image, reason='its memory image %s '
                    'cannot be read from Glance (%s); the live image is '
                    'incomplete' % (record.memory_image,
                                    e.format_message())) from e

        with self.live.cache.use(record.memory_image, record.memory_sha256,
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
        xml_for_restore = domainxml.for_restore(
            xml, plan.facts.machine, self.live.host.machine_aliases(), genid)
        lazy = self.live.conf.restore_mode == restore_mod.LAZY
        plan.request = restore_mod.RestoreRequest(
            image=plan.record.disk_image, image_facts=plan.facts,
            domain_xml=xml_for_restore, persistent_xml=xml,
            memory=restore_mod.Memory(plan.memory_path, plan.save),
            fifo_dir=instance_dir,
            mode=restore_mod.LAZY if lazy else restore_mod.EAGER,
            # Built after the instance's disks and config drive exist.
            template=functools.partial(self._template, plan, xml_for_restore)
            if lazy else None,
            lazy_fallback=self.live.conf.lazy_fallback_to_eager,
            # Nova's own hostname for the instance, or its domain name.
            hostname=plan.hostname or domainxml.facts(
                xml, 'Nova guest config').name,
            prepared=plan.identity, origin='Nova guest config')
        self.live.restorer.restore(plan.request, paused=paused,
                                   after_define=after_define)

    def _template(self, plan, xml):
        """The lazy template for clones with Nova's config ``xml``.

        :raises TemplateError:
        """
        record = plan.record

        def render(partial, ram):
            return guestconfig.template_xml(
                xml, record.disk_image,
                template_mod.template_genid(plan.facts), partial, ram,
                record.ram_mib)
        source = template_mod.Source(
            key='%s-%s' % (record.memory_image,
                           domainxml.device_signature(xml)),
            image_id=record.memory_image, name=record.disk_image,
            memory_path=plan.memory_path, save=plan.save,
            memory_mib=record.ram_mib, backend='nova', render=render)
        return self.live.templates.acquire_source(source)

    def reidentify(self, plan, domain_name):
        """Give the running clone its own identity (:mod:`identity`).

        :returns: the identity report as a dict.
        :raises CloneSpawnFailed: naming the step that failed.
        """
        return self.live.restorer.reidentify(
            plan.request, self.live.host.lookup(domain_name)).to_dict()
