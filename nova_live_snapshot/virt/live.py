"""The driver's live-snapshot operations, on Nova's objects.

:class:`LiveSnapshots` is what :class:`nova_live_snapshot.virt.driver.
LiveSnapshotDriver` calls: what one compute host has for live images (its
libvirt connection, which is Nova's own, so that nova-compute keeps one
connection and one event loop; the memory stream cache, the crash journal,
the capture staging store, the lazy templates, the restore seam) and the
operations on them, one module each:

* :mod:`~nova_live_snapshot.virt.capturing`: capture an instance and
  publish it to Glance, its signed record assembled there;
* :mod:`~nova_live_snapshot.virt.restoring`: check, fetch, restore and
  re-identify a clone, through :class:`nova_live_snapshot.restore.Restorer`;
* :mod:`~nova_live_snapshot.virt.recovery`: clean up after a crash, from
  :mod:`~nova_live_snapshot.virt.journal`;
* :mod:`~nova_live_snapshot.virt.guestconfig`: Nova's guest config made
  restorable.
"""

import functools
import os

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import liveimage
from nova_live_snapshot import restore as restore_mod
from nova_live_snapshot import template as template_mod
from nova_live_snapshot.virt import capturing
from nova_live_snapshot.virt import images
from nova_live_snapshot.virt import journal as journal_mod
from nova_live_snapshot.virt import recovery
from nova_live_snapshot.virt import restoring

__all__ = ['LiveSnapshots']


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
        self.journal = journal_mod.Journal(conf.image_dir)
        self.captures = capturing.Captures(self)
        self.restores = restoring.Restores(self)
        self.recovery = recovery.Recovery(self)

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
