"""Nova's guest config, rewritten for live images.

Nova renders a clone's domain XML as for a boot; what makes it restorable
(:func:`clone_xml`), the key by which clones share a lazy template
(:func:`device_signature`) and the domain that builds that template
(:func:`template_xml`) are made here from it.
"""

import hashlib
import os
import uuid as uuidlib

from lxml import etree

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import qemuimg
from nova_live_snapshot.virt import disks

__all__ = ['clone_xml', 'device_signature', 'template_xml']


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
