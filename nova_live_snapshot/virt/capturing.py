"""Capturing an instance and publishing it to Glance as a live image.

The capture itself is the engine's (:mod:`nova_live_snapshot.capture`);
what is Nova's is here: the crash journal kept while it runs, the two
uploads (the hidden memory image, then the disk with the signed record in
one update) and the record, assembled from the image's manifest
(:func:`build_record`).
"""

import contextlib
import logging

from nova_live_snapshot import capture as capture_mod
from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import protocol
from nova_live_snapshot.virt import images
from nova_live_snapshot.virt import traits

LOG = logging.getLogger(__name__)

__all__ = ['Captures', 'build_record', 'image_properties', 'delete_image']


def build_record(image, image_id, memory_image_id, instance):
    """The live image's :class:`images.Record` for engine image ``image``
    (its checked manifest and frozen disk) captured from ``instance``,
    published as Glance images ``image_id`` (the disk) and
    ``memory_image_id``."""
    manifest = image.manifest
    source = manifest.source
    return images.Record(
        format=protocol.FORMAT, disk_image=image_id,
        project_id=instance.project_id,
        memory_image=memory_image_id,
        memory_sha256=manifest.files['memory']['sha256'],
        memory_size=str(manifest.files['memory']['size']),
        disk_hash='%s:%s' % (protocol.DISK_HASH, liveimage.file_digest(
            image.disk_path, protocol.DISK_HASH)[0]),
        memory_mib=str(source['memory_mib']),
        vcpus=str(source['vcpus']),
        machine=source['machine'],
        cpu_model=source.get('cpu_model') or '',
        qemu_version=manifest.host['qemu_version'],
        source_instance=instance.uuid,
        created_at=manifest.data['created_at'])


def image_properties(record, signing_key):
    """The disk image's properties: the signed record, and the traits a
    host needs to be given a clone of it."""
    properties = record.properties(signing_key)
    properties['trait:%s' % protocol.TRAIT] = 'required'
    # Only hosts whose QEMU can resume it (format 1: x86_64).
    for trait in traits.image_traits('x86_64', record.machine,
                                     record.qemu_version, record.cpu_model):
        properties['trait:%s' % trait] = 'required'
    return properties


def delete_image(image_api, context, image_id):
    """Delete a Glance image; False (logged) when Glance refused."""
    from nova import exception as nova_exception
    try:
        image_api.delete(context, image_id)
    except nova_exception.ImageNotFound:
        pass
    except Exception:   # noqa: cleanup must not hide the first error
        LOG.exception('Could not delete Glance image %s', image_id)
        return False
    return True


def record_size_mib(record):
    return int(record.memory_size) // (1024 * 1024)


class Captures:
    """Captures on one compute host (:class:`virt.live.LiveSnapshots`)."""

    def __init__(self, live):
        self.live = live

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

        live = self.live
        conf, journal, image_api = live.conf, live.journal, live.image_api
        images.check_key(conf.signing_key)
        journal.write(image_id, instance=instance.uuid, domain=domain_name,
                      project_id=context.project_id)
        memory_image_id = None
        try:
            # The capture merges its overlay back into the source's disk
            # itself; the journal knows the overlay while it does.
            result = capture_mod.capture(
                live.host, live.store, domain_name, image_id, conf,
                before_merge=lambda overlays: journal.write(
                    image_id, overlays=overlays, domain=domain_name))
            update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
            update_task_state(
                task_state=task_states.IMAGE_UPLOADING,
                expected_state=task_states.IMAGE_PENDING_UPLOAD)
            image = result.image
            name = image_api.get(context, image_id)['name']
            with open(image.memory_path, 'rb') as f:
                memory_image_id = image_api.create(
                    context, images.memory_image_meta(name, image_id),
                    data=f)['id']
            journal.write(image_id, memory_image=memory_image_id)
            record = build_record(image, image_id, memory_image_id, instance)
            # One upload with the signed record: the image turns active
            # complete, never active and unsigned.
            with open(image.disk_path, 'rb') as f:
                uploaded = image_api.update(context, image_id, {
                    'disk_format': 'qcow2',
                    'container_format': 'bare',
                    'min_ram': image.manifest.source['memory_mib'],
                    'properties': image_properties(record, conf.signing_key),
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
            live.cache.add(memory_image_id, image.memory_path,
                           record.memory_sha256)
            LOG.info('Live image %s of %s: source paused %.0f ms, memory '
                     '%d MiB', image_id, instance.uuid, result.pause_ms or -1,
                     record_size_mib(record))
            return record
        except BaseException:
            if memory_image_id is not None:
                delete_image(image_api, context, memory_image_id)
            raise
        finally:
            with contextlib.suppress(exception.ImageNotFound):
                live.store.delete(image_id)
            journal.remove(image_id)
