"""Capture a running domain into a live image.

Two modes (``[live_snapshot] capture_mode``):

``live`` (default)
    One libvirt external snapshot of memory and disks with the LIVE and ATOMIC
    flags. QEMU migrates RAM to the memory file while the guest runs and
    stops the vCPUs only for the last pass and the disk switch-over; the
    source then continues on new overlays and its previous disk images become
    read-only: the memory file and those images are a point-in-time pair.

``save``
    ``virDomainSave`` (the guest stops), new overlays on the saved disks,
    restore of the source onto them. Simple and what the original design
    named, but the source is stopped for seconds.

Either way the frozen chain is then flattened into the image's own
``disk.qcow2`` while the source runs, and the capture's overlay is merged
back into the source's own disk (:func:`commit_overlays`): every capture,
whoever asked for it, leaves the source on the disk it ran on, so that the
disk's name and backing chain never grow from one capture to the next. The
memory file is moved (from tmpfs staging) into the image with its SHA-256
computed on the way, and the image is published atomically
(:class:`nova_live_snapshot.liveimage.ImageWriter`). On any failure the
source keeps running, back on its own disk, and nothing of the image
remains.
"""

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import time

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import ownership
from nova_live_snapshot import qemuimg
from nova_live_snapshot import records

LOG = logging.getLogger(__name__)

__all__ = ['capture', 'CaptureResult', 'commit_overlays', 'capture_overlays']

_MIB = 1024 * 1024
# Headroom above guest RAM for the save-image header and QEMU's device state.
_MEMORY_MARGIN_MIB = 16


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    image: liveimage.LiveImage
    pause_ms: float
    duration_s: float
    memory_staged: bool
    # {target dev: the disk the source runs on}: the ones it ran on before.
    source_disks: dict


def _overlay_name(current, image_id):
    stem, _ = os.path.splitext(current)
    return '%s.ls-%s.qcow2' % (stem, image_id[:8])


_OVERLAY_RE = re.compile(r'\.ls-[0-9a-f]{8}\.qcow2$')


def capture_overlays(guest):
    """The disks of ``guest`` that run on an overlay a live capture made
    (``{target dev: overlay path}``): what a capture interrupted after its
    snapshot and before its commit leaves the source on."""
    return {dev: path for dev, path in guest.disk_sources().items()
            if path and _OVERLAY_RE.search(os.path.basename(path))}


def commit_overlays(host, domain, overlays):
    """Merge the overlays a capture put under running ``domain`` back into
    the disks it ran on, remove them, and keep a persistent definition on
    those disks: the source ends as it was before the capture (same disk
    paths, same backing chain).

    The one way back for every caller: a capture once its frozen copy is
    made, a capture that failed after its snapshot, and the recovery of a
    capture a crash interrupted. The point-in-time copy must have been
    taken from the backing files already: they are written again from here.

    :param overlays: ``{target dev: overlay path}``; an overlay the domain
        no longer runs on is only removed.
    :raises DomainNotFound:, HypervisorError:
    """
    guest = host.lookup(domain)
    for dev, overlay in sorted(overlays.items()):
        if guest.active_disk(dev) == overlay:
            guest.commit_active(dev)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(overlay)
    if guest.is_persistent():
        # libvirt keeps the persistent definition pointing at the overlay
        # it created; the next boot would use it.
        host.define(guest.xml(inactive=False))


def _back_on_own_disks(host, guest, overlays):
    """:func:`commit_overlays` for a capture that is failing: logged, not
    raised, so that the capture's own error is the one the caller sees."""
    try:
        commit_overlays(host, guest.uuid, overlays)
    except exception.LiveSnapshotError:
        LOG.exception('Could not merge the capture overlays %s of %s back; '
                      'it keeps running on them', sorted(overlays.values()),
                      guest.name)


def _plan_memory(conf, writer, memory_mib):
    """Decide where libvirt writes the memory file; check the space first.

    :returns: ``(path, staged)``
    :raises InsufficientSpace:
    """
    needed = memory_mib + _MEMORY_MARGIN_MIB
    policy = conf.memory_staging
    if policy != 'never':
        os.makedirs(conf.staging_dir, mode=0o700, exist_ok=True)
        free = records.free_mib(conf.staging_dir)
        if free >= needed:
            stage = os.path.join(conf.staging_dir, writer.id)
            os.mkdir(stage, 0o700)
            return os.path.join(stage, liveimage.MEMORY), True
        if policy == 'always':
            raise exception.InsufficientSpace(
                path=conf.staging_dir, free_mib=free, needed_mib=needed,
                what='the memory file', option='[live_snapshot] staging_dir')
        LOG.info('Staging directory %s has %d MiB free, %d MiB needed: '
                 'writing the memory file to %s directly',
                 conf.staging_dir, free, needed, writer.path)
    return writer.memory_path, False


def _check_image_space(conf, writer, memory_mib, disk_estimate_mib):
    needed = memory_mib + _MEMORY_MARGIN_MIB + disk_estimate_mib
    free = records.free_mib(writer.path)
    if free < needed:
        raise exception.InsufficientSpace(
            path=conf.image_dir, free_mib=free, needed_mib=needed,
            what='the live image', option='[live_snapshot] image_dir')


def _chain_bytes(path):
    """Bytes allocated by an image and its backing chain (an upper bound for
    a flattened copy of it)."""
    return sum(layer.get('actual-size', 0)
               for layer in qemuimg.info(path, chain=True))


def _snapshot_live(host, guest, memory_path, overlays):
    with host.pause_window(guest) as window:
        guest.snapshot_live(memory_path, overlays)
    return window.pause_ms


def _snapshot_save(host, guest, memory_path, overlays, frozen):
    """virDomainSave, new overlays, restore; bring the source back whatever
    fails after the save."""
    persistent = guest.is_persistent()
    started = time.monotonic()
    guest.save(memory_path)
    try:
        for dev, overlay in overlays.items():
            qemuimg.create_overlay(frozen[dev], overlay)
        new_xml = domainxml.with_disk_overlays(
            host.save_image_xml(memory_path), overlays,
            'save image of %s' % guest.name)
        host.restore_with_xml(memory_path, new_xml)
    except Exception:
        # The source is stopped: bring it back on its original disks, which
        # nothing has written since the save.
        LOG.exception('Save-mode capture of %s failed; restoring the source '
                      'on its original disks', guest.name)
        host.restore(memory_path)
        for overlay in overlays.values():
            if os.path.exists(overlay):
                os.unlink(overlay)
        raise
    pause_ms = (time.monotonic() - started) * 1000.0
    if persistent:
        restored = host.lookup(guest.uuid)
        host.define(restored.xml(inactive=False))
    return pause_ms


def capture(host, store, domain, name, conf, before_merge=None):
    """Capture running ``domain`` (name or UUID) into live image ``name``.

    :param host: :class:`nova_live_snapshot.host.Host`
    :param store: :class:`nova_live_snapshot.liveimage.ImageStore`
    :param conf: the ``[live_snapshot]`` option group (``CONF.live_snapshot``)
    :param before_merge: called with ``{target dev: overlay}`` once the
        image is published, just before the overlays the source runs on are
        merged back (the Nova driver journals them for its crash recovery).
    :returns: :class:`CaptureResult`
    :raises DomainNotFound:, DomainNotRunning:, InsufficientSpace:,
        ImageExists:, CaptureFailed:
    """
    started = time.monotonic()
    guest = host.lookup(domain)
    state = guest.state()
    if state != 'running':
        raise exception.DomainNotRunning(domain=domain, state=state)
    live_xml = guest.xml()
    facts = domainxml.facts(live_xml, 'domain %s' % guest.name)
    frozen = guest.disk_sources()
    if not frozen:
        raise exception.CaptureFailed(domain=guest.name,
                                      reason='it has no file-backed disk')
    memory_mib = facts.memory_kib // 1024
    mode = conf.capture_mode

    writer = store.begin(name)
    memory_path = None
    staged = False
    overlays = {}
    snapshot_taken = False
    # Overlays the source runs on that are still to be merged back.
    pending = {}
    image = None
    try:
        disk_mib = sum(_chain_bytes(p) for p in frozen.values()) // _MIB + 1
        memory_path, staged = _plan_memory(conf, writer, memory_mib)
        # The memory file ends up in the image whether or not it is staged.
        _check_image_space(conf, writer, memory_mib, disk_mib)
        overlays = {dev: _overlay_name(path, writer.id)
                    for dev, path in frozen.items()}

        if mode == 'live':
            pause_ms = _snapshot_live(host, guest, memory_path, overlays)
        else:
            pause_ms = _snapshot_save(host, guest, memory_path, overlays,
                                      frozen)
        snapshot_taken = True
        pending = dict(overlays)
        LOG.info('Captured %s: source paused %.0f ms', guest.name,
                 pause_ms or -1)

        # The source runs on its new overlays until the image is complete;
        # then it goes back onto its own disk.
        if len(frozen) != 1:
            raise exception.CaptureFailed(
                domain=guest.name, reason='format %d live images hold exactly '
                'one disk, the domain has %d' % (liveimage.FORMAT_VERSION,
                                                 len(frozen)))
        (frozen_disk,) = frozen.values()
        qemuimg.convert(frozen_disk, writer.disk_path)
        # libvirtd wrote the memory file as root: an unprivileged
        # nova-compute takes it back before reading it.
        ownership.take_back(memory_path)
        if staged:
            mem_sha, mem_size = liveimage.sha256_file(memory_path,
                                                      writer.memory_path)
            os.unlink(memory_path)
        else:
            os.chmod(writer.memory_path, 0o600)
            mem_sha, mem_size = liveimage.sha256_file(writer.memory_path)
        disk_sha, disk_size = liveimage.sha256_file(writer.disk_path)
        disk_info = qemuimg.info(writer.disk_path)
        duration = time.monotonic() - started
        manifest = liveimage.build_manifest(
            image_id=writer.id, name=name,
            source={'name': guest.name, 'uuid': guest.uuid,
                    'vcpus': facts.vcpus, 'memory_mib': memory_mib,
                    'machine': facts.machine, 'arch': facts.arch,
                    'cpu_model': facts.cpu_model},
            host_info={'libvirt_version': host.libvirt_version(),
                       'qemu_version': host.qemu_version()},
            capture={'mode': mode, 'pause_ms': pause_ms,
                     'memory_staged': staged,
                     'duration_s': round(duration, 3)},
            memory={'name': liveimage.MEMORY, 'size': mem_size,
                    'sha256': mem_sha},
            disk={'name': liveimage.DISK, 'size': disk_size,
                  'sha256': disk_sha, 'format': 'qcow2',
                  'virtual_size': disk_info['virtual-size']})
        image = writer.commit(manifest)
        if before_merge is not None:
            before_merge(dict(overlays))
        pending = {}
        commit_overlays(host, guest.uuid, overlays)
    except BaseException as e:
        if image is not None:
            # Published, but the source could not go back on its disk.
            with contextlib.suppress(exception.ImageNotFound):
                store.delete(image.name)
        writer.abort()
        if pending:
            _back_on_own_disks(host, guest, pending)
        elif not snapshot_taken:
            for overlay in overlays.values():
                # ATOMIC: libvirt removed what it created, but a save-mode
                # failure may leave one.
                if os.path.exists(overlay) and overlay not in frozen.values():
                    os.unlink(overlay)
        if isinstance(e, (exception.InsufficientSpace, exception.ImageExists,
                          exception.CaptureFailed)):
            raise
        if isinstance(e, exception.LiveSnapshotError):
            raise exception.CaptureFailed(domain=guest.name,
                                          reason=str(e)) from e
        if isinstance(e, OSError):
            raise exception.CaptureFailed(
                domain=guest.name, reason='%s: %s' % (e.filename or 'I/O',
                                                      e.strerror)) from e
        raise
    finally:
        if staged and memory_path:
            shutil.rmtree(os.path.dirname(memory_path), ignore_errors=True)
    return CaptureResult(image=image, pause_ms=pause_ms,
                         duration_s=time.monotonic() - started,
                         memory_staged=staged, source_disks=frozen)
