"""The domain that builds a lazy template, from Nova's guest config.

What of Nova's guest config a clone restores with is rewritten in
:mod:`nova_live_snapshot.domainxml` (:func:`~nova_live_snapshot.domainxml.
for_restore`, :func:`~nova_live_snapshot.domainxml.device_signature`); what
a template build needs of the host beside its XML (disk overlays, the
frozen chains kept from QEMU, the shared RAM file) is made here.
"""

import os

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import qemuimg
from nova_live_snapshot.virt import disks

__all__ = ['template_xml']


def template_xml(xml, image, genid, partial, ram, memory_mib):
    """The domain that builds the lazy template of live image ``image``
    from Nova's guest config ``xml`` of its first clone here: the same
    guest devices, so that the state it saves loads into clones, but none
    of the instance's host resources (:func:`domainxml.template_domain`).

    Its disks are overlays in ``partial`` on the instance's disks (it never
    runs, so they stay empty); its RAM is the shared file ``ram``.

    :raises TemplateBuildFailed: a device it cannot stand in for.
    """
    def overlay_for(dev, source, fmt):
        overlay = os.path.join(partial, 'disk-%s.qcow2' % dev)
        qemuimg.create_overlay(source, overlay, fmt)
        return overlay

    def refuse(reason):
        return exception.TemplateBuildFailed(image=image, reason=reason)

    root = domainxml.template_domain(xml, genid, overlay_for, refuse)
    # The overlays' chains (the first clone's disk, the image's base) are
    # never relabelled for the template's QEMU either.
    return domainxml.with_lazy_ram(disks.protect(root), ram, True, memory_mib)
