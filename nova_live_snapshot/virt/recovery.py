"""Recovery after nova-compute died during a capture.

Every capture in progress is in the crash journal
(:mod:`nova_live_snapshot.virt.journal`); when nova-compute starts again,
:meth:`Recovery.run` puts each source back on its own disk, removes staging
files and partial images, and deletes the Glance images of captures that
never finished, as Nova's service user.
"""

import contextlib
import logging
import os
import shutil

from nova_live_snapshot import capture as capture_mod
from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot.virt import capturing

LOG = logging.getLogger(__name__)

__all__ = ['Recovery']


class Recovery:
    """Recovery on one compute host (:class:`virt.live.LiveSnapshots`)."""

    def __init__(self, live):
        self.live = live

    def _overlays_left(self, entry):
        """The overlays an interrupted capture left its source on: those
        the journal recorded, and those the domain runs on (a crash between
        libvirt's snapshot and the journal's update leaves them unrecorded).
        """
        overlays = dict(entry.get('overlays') or {})
        if not entry.get('domain'):
            return overlays
        try:
            guest = self.live.host.lookup(entry['domain'])
            guest.end_job()
        except exception.DomainNotFound:
            return overlays
        overlays.update(capture_mod.capture_overlays(guest))
        return overlays

    def _remove_orphaned_staging(self):
        """Memory files staged by captures whose writer is gone (its
        partial image was just removed as stale): machine memory on tmpfs
        that nothing will ever move or delete otherwise."""
        staging = self.live.conf.staging_dir
        if not os.path.isdir(staging):
            return
        live = set()
        if os.path.isdir(self.live.conf.image_dir):
            live = {name.rsplit('-', 1)[-1]
                    for name in os.listdir(self.live.conf.image_dir)
                    if name.startswith(liveimage.PARTIAL_PREFIX)}
        for entry in os.listdir(staging):
            if entry[:8] not in live:
                LOG.warning('Removing orphaned capture staging %s', entry)
                shutil.rmtree(os.path.join(staging, entry),
                              ignore_errors=True)

    def run(self, get_context):
        """After a crash: put every source back on its own disk, drop
        staging files and partial images, and delete the Glance images of
        captures that never finished.

        :param get_context: returns the request context to delete Glance
            images with: the service's own (:func:`service_context`). A
            capture whose images Glance would not delete keeps its journal
            entry, and the next start tries again.
        """
        if os.path.isdir(self.live.conf.image_dir):
            self.live.store.remove_stale_partials()
        self.live.cache.remove_partials()
        self._remove_orphaned_staging()
        for entry in list(self.live.journal.entries()):
            image_id = entry['image_id']
            LOG.warning('Cleaning up the live snapshot %s that was in '
                        'progress when nova-compute stopped', image_id)
            overlays = self._overlays_left(entry)
            if overlays:
                try:
                    capture_mod.commit_overlays(self.live.host, entry['domain'],
                                                overlays)
                except exception.LiveSnapshotError:
                    LOG.exception('Could not commit the capture overlay of '
                                  '%s back', entry['domain'])
            with contextlib.suppress(exception.ImageNotFound):
                self.live.store.delete(image_id)
            context = get_context()
            deleted = [capturing.delete_image(self.live.image_api, context,
                                              glance_id)
                       for glance_id in (entry.get('memory_image'), image_id)
                       if glance_id]
            if all(deleted):
                self.live.journal.remove(image_id)
            else:
                # Entries of older releases held the requester's context,
                # token included: never kept.
                entry.pop('context', None)
                self.live.journal.write(image_id, **entry)
                LOG.error('The Glance images of unfinished live snapshot %s '
                          'were not deleted; nova-compute tries again when '
                          'it next starts. Configure [service_user] in '
                          'nova.conf with a user Glance lets delete them.',
                          image_id)
