"""The engine's public surface: capture, spawn, delete, destroy.

A small facade over the host connection, the image store and the clone
manager, built from the ``[live_snapshot]`` options. The standalone command
and the demo use this and nothing below it. The Nova driver has images of
its own (in Glance) and its own connection (Nova's), so it does not go
through this facade; it shares what lies under it: the capture
(:mod:`nova_live_snapshot.capture`) and the restore seam
(:mod:`nova_live_snapshot.restore`), through which every clone, the
engine's or Nova's, is restored and re-identified.
"""

from nova_live_snapshot import capture as capture_mod
from nova_live_snapshot import clone as clone_mod
from nova_live_snapshot import exception
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import liveimage
from nova_live_snapshot import template as template_mod

__all__ = ['Engine']


class Engine:
    """Live images and clones on one libvirt host."""

    def __init__(self, conf, host=None):
        """:param conf: the ``[live_snapshot]`` group (``CONF.live_snapshot``)."""
        self.conf = conf
        self.host = host or host_mod.Host(conf.connection_uri)
        self.images = liveimage.ImageStore(conf.image_dir, conf.qemu_group,
                                           conf.host_key_file)
        self.templates = template_mod.TemplateStore(
            conf.template_dir, self.host, self.images,
            timeout=conf.restore_timeout, network=conf.clone_network,
            allow_writable=conf.lazy_writable_templates)
        self.clones = clone_mod.CloneManager(
            self.host, conf.clone_dir, conf.restore_timeout,
            require_agent=conf.require_guest_agent,
            agent_timeout=conf.agent_timeout, network=conf.clone_network,
            templates=self.templates if conf.restore_mode == 'lazy' else None,
            lazy_fallback=conf.lazy_fallback_to_eager)
        self.images.remove_stale_partials()
        self.collect_templates()

    def capture(self, domain, name):
        """Capture running ``domain`` into live image ``name``.

        :returns: :class:`nova_live_snapshot.capture.CaptureResult`
        """
        return capture_mod.capture(self.host, self.images, domain, name,
                                   self.conf)

    def verify(self, name):
        """Check image ``name`` against its manifest and this host.

        :returns: :class:`nova_live_snapshot.liveimage.VerifiedImage`
        """
        verified = self.images.verify(self.images.get(name))
        clone_mod.check_host(self.host, verified)
        return verified

    def spawn(self, name, count=1, prefix=None, exact_copy=False):
        """Spawn ``count`` clones of image ``name``, each re-identified;
        verifies the image first."""
        return self.clones.spawn(self.verify(name), count=count, prefix=prefix,
                                 exact_copy=exact_copy)

    def destroy(self, clone_name):
        """Destroy a clone; the template it mapped goes too if its image is
        gone and no other clone maps it."""
        self.clones.destroy(clone_name)
        self.collect_templates()

    def delete_image(self, name, destroy_clones=False):
        """Delete image ``name``.

        :raises ImageInUse: clones still use its frozen disk, unless
            ``destroy_clones`` is set, in which case they are destroyed first.
        """
        try:
            self.images.get(name)
        except exception.InvalidLiveImage:
            pass        # a damaged image can always be deleted
        users = self.clones.list(image=name)
        if users and not destroy_clones:
            raise exception.ImageInUse(image=name,
                                       clones=', '.join(c.name for c in users))
        for clone in users:
            self.clones.destroy(clone.name)
        self.images.delete(name)
        self.collect_templates()

    def collect_templates(self):
        """Remove the lazy-mode templates whose image this host no longer
        has and that no running domain maps (and dead partial builds).

        :returns: the names of the images whose template was removed.
        """
        return self.templates.collect({i.template_key
                                       for i in self.images.list()})

    def list_templates(self):
        """This host's templates: image, guest RAM, memory held on tmpfs,
        the clones that map each."""
        return [self.templates.describe(t) for t in self.templates.list()]
