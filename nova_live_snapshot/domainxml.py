"""Domain XML: the engine renders a clone's, and only reads facts from an image's.

The domain XML embedded in a live image came from another machine's memory
file, so it is untrusted input. It is parsed without entities or network
access, reduced to a handful of facts (:class:`DomainFacts`), and compared
with the XML the engine renders itself for the clone (:func:`render`). Every
host path a clone uses (its disk overlay, its console log) comes from the
:class:`DomainSpec` the engine builds from its own configuration; nothing in
the embedded XML chooses a file on this host.
"""

import dataclasses
import hashlib
import json
import uuid as uuidlib

from lxml import etree

from nova_live_snapshot import exception

__all__ = ['DomainSpec', 'DomainFacts', 'render', 'parse', 'facts',
           'compare', 'check_cookie', 'random_mac', 'lazy_ram_args',
           'lazy_ram_file', 'with_lazy_ram', 'LAZY_RAM_ID',
           'macs_with_link_down', 'add_backing_store', 'for_restore',
           'device_signature', 'template_domain', 'disk_sources',
           'interface_macs', 'genid', 'interface_with_link', 'active_disk',
           'mirror_ready', 'snapshot_xml', 'with_disk_overlays']

# Large enough for any real domain; bounds what a crafted header can cost.
MAX_XML_BYTES = 1024 * 1024

AGENT_CHANNEL = 'org.qemu.guest_agent.0'

QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0'

# The id of the RAM backend a lazy domain maps its memory from. libvirt
# always creates the machine's default backend itself as ``pc.ram``, so ours
# needs another id (QEMU names the RAM block after it; see migstream).
LAZY_RAM_ID = 'nls.ram'

# The elements libvirt writes into a save image's cookie (qemuDomainSaveCookie
# in libvirt's qemu_domain.c). Anything else is refused rather than passed to
# libvirt's parser.
_COOKIE_CHILDREN = frozenset({'cpu', 'slirpHelper'})


def _parser():
    return etree.XMLParser(resolve_entities=False, no_network=True,
                           load_dtd=False, huge_tree=False,
                           remove_comments=True)


def parse(text, origin):
    """Parse XML that may come from an untrusted image.

    :raises UnsafeDomainXML: too large, not well formed, or has a DOCTYPE.
    """
    data = text.encode('utf-8') if isinstance(text, str) else text
    if len(data) > MAX_XML_BYTES:
        raise exception.UnsafeDomainXML(
            origin=origin, reason='%d bytes of XML is over the %d-byte limit'
            % (len(data), MAX_XML_BYTES))
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise exception.UnsafeDomainXML(origin=origin,
                                        reason='not well-formed: %s' % e)
    if root.getroottree().docinfo.doctype:
        raise exception.UnsafeDomainXML(origin=origin,
                                        reason='a DOCTYPE is not allowed')
    return root


def random_mac():
    """A random locally administered unicast MAC in QEMU's 52:54:00 range."""
    tail = uuidlib.uuid4().bytes[:3]
    return '52:54:00:' + ':'.join('%02x' % b for b in tail)


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    """Everything the engine decides about a domain it starts.

    ``machine`` must be the exact machine type (``pc-i440fx-7.2``, not the
    ``pc`` alias) when restoring, because the saved device state was made
    for that machine.
    """

    name: str
    disk_path: str
    console_log: str
    memory_mib: int = 128
    vcpus: int = 1
    machine: str = 'pc'
    uuid: str = dataclasses.field(default_factory=lambda: str(uuidlib.uuid4()))
    mac: str = dataclasses.field(default_factory=random_mac)
    genid: str = dataclasses.field(default_factory=lambda: str(uuidlib.uuid4()))
    disk_format: str = 'qcow2'
    # Clones start with the link down so that nothing in the guest uses the
    # network before the clone has its own identity.
    link_up: bool = True
    # A libvirt network to attach to; None: QEMU's user-mode network, whose
    # traffic never leaves the QEMU process.
    network: str = None
    # Lazy mode (doc/source/lazy.rst): guest RAM mapped from this file,
    # shared (a template being built) or private (a clone), and QEMU left
    # waiting for its state (-incoming defer) instead of booting.
    ram_file: str = None
    ram_shared: bool = False
    # A clone's private mapping of a file QEMU opens read-only (QEMU 8.2+
    # ``rom=off``): see nova_live_snapshot.template.
    ram_readonly: bool = False
    # The frozen disk ``disk_path`` is an overlay on: named in the XML with
    # DAC relabelling off, so that libvirt never hands it to the QEMU user
    # (it would chown it and, being a backing file, never give it back:
    # every QEMU could then rewrite what all clones of the image read).
    backing_path: str = None
    backing_format: str = 'qcow2'

    def with_identity(self, **changes):
        return dataclasses.replace(self, **changes)


def _sub(parent, tag, text=None, **attrs):
    el = etree.SubElement(parent, tag, {k.rstrip('_'): str(v)
                                        for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def render(spec):
    """The domain XML for ``spec``: one virtio disk, one virtio NIC (on
    ``spec.network`` or QEMU's user-mode network), a serial console logged
    to a file, a guest-agent channel, a virtio RNG, a generation ID, ACPI.
    Guests run under TCG (``type='qemu'``).
    """
    dom = etree.Element('domain', type='qemu')
    _sub(dom, 'name', spec.name)
    _sub(dom, 'uuid', spec.uuid)
    _sub(dom, 'genid', spec.genid)
    _sub(dom, 'memory', spec.memory_mib * 1024, unit='KiB')
    _sub(dom, 'vcpu', spec.vcpus)
    os_ = _sub(dom, 'os')
    _sub(os_, 'type', 'hvm', arch='x86_64', machine=spec.machine)
    _sub(os_, 'boot', dev='hd')
    features = _sub(dom, 'features')
    # Without ACPI there is no vmgenid device and no PCI hotplug.
    _sub(features, 'acpi')
    _sub(features, 'apic')
    _sub(dom, 'clock', offset='utc')
    _sub(dom, 'on_poweroff', 'destroy')
    _sub(dom, 'on_reboot', 'restart')
    _sub(dom, 'on_crash', 'destroy')
    devices = _sub(dom, 'devices')
    disk = _sub(devices, 'disk', type='file', device='disk')
    _sub(disk, 'driver', name='qemu', type=spec.disk_format)
    _sub(disk, 'source', file=spec.disk_path)
    if spec.backing_path:
        add_backing_store(disk, spec.backing_path, spec.backing_format)
    _sub(disk, 'target', dev='vda', bus='virtio')
    if spec.network:
        nic = _sub(devices, 'interface', type='network')
        _sub(nic, 'source', network=spec.network)
    else:
        nic = _sub(devices, 'interface', type='user')
    _sub(nic, 'mac', address=spec.mac)
    _sub(nic, 'model', type='virtio')
    if not spec.link_up:
        _sub(nic, 'link', state='down')
    # append: libvirt would otherwise truncate the log when the domain is
    # restored (save-mode capture), losing the source's console history.
    serial = _sub(devices, 'serial', type='file')
    _sub(serial, 'source', path=spec.console_log, append='on')
    _sub(serial, 'target', port=0)
    channel = _sub(devices, 'channel', type='unix')
    _sub(channel, 'target', type='virtio', name=AGENT_CHANNEL)
    rng = _sub(devices, 'rng', model='virtio')
    _sub(rng, 'backend', '/dev/urandom', model='random')
    _sub(devices, 'memballoon', model='none')
    if spec.ram_file:
        dom = _with_lazy_ram(dom, spec.ram_file, spec.ram_shared,
                             spec.memory_mib, spec.ram_readonly)
    return etree.tostring(dom, encoding='unicode', pretty_print=True)


def add_backing_store(disk, path, fmt):
    """Name ``path`` as the (last) backing file of ``<disk>`` element
    ``disk``, read-only to QEMU and never relabelled by libvirt's DAC driver:
    QEMU reads it through the file's group or other permission bits, which
    the engine sets (:meth:`nova_live_snapshot.liveimage.ImageStore.
    share_read_only`)."""
    store = _sub(disk, 'backingStore', type='file')
    _sub(store, 'format', type=fmt)
    source = _sub(store, 'source', file=path)
    _sub(source, 'seclabel', model='dac', relabel='no')
    _sub(store, 'backingStore')
    # libvirt's schema wants <backingStore> right after <source>.
    src = disk.find('source')
    disk.remove(store)
    src.addnext(store)
    return store


def with_backing_chains(xml, chains, what='domain XML'):
    """``xml`` with the backing chain of each file disk named in it, every
    backing file with DAC relabelling off (:func:`add_backing_store`).

    :param chains: ``{disk source path: [(backing path, format), ...]}``,
        nearest backing file first; disks not in it are left as they are.
    """
    root = parse(xml, what)
    for disk in root.findall('devices/disk'):
        source = disk.find('source')
        chain = chains.get(source.get('file') if source is not None else None)
        if not chain:
            continue
        for old in disk.findall('backingStore'):
            disk.remove(old)
        parent = disk
        for path, fmt in chain:
            store = add_backing_store(parent, path, fmt)
            # add_backing_store ends the chain with an empty <backingStore/>:
            # the next level replaces it.
            parent = store
            last = store.find('backingStore')
            if (path, fmt) != chain[-1]:
                store.remove(last)
    return etree.tostring(root, encoding='unicode')


def lazy_ram_args(ram_file, shared, memory_mib, readonly=False):
    """QEMU arguments that put the guest RAM in ``ram_file`` and make QEMU
    wait for its state: our ``memory-backend-file`` (JSON, so that no path
    needs QemuOpts comma escaping), ``-machine memory-backend`` to use it
    instead of libvirt's ``pc.ram`` (which QEMU then never touches), and
    ``-incoming defer``.

    With ``readonly`` (a private mapping only), QEMU opens the file
    read-only and still maps it writable, privately (``rom=off``, QEMU
    8.2): a clone's QEMU then cannot change what the other clones map."""
    backend = {'qom-type': 'memory-backend-file', 'id': LAZY_RAM_ID,
               'size': memory_mib * 1024 * 1024,
               'mem-path': ram_file, 'share': shared}
    if readonly:
        if shared:
            raise ValueError('a shared RAM mapping cannot be read-only')
        backend.update(readonly=True, rom='off')
    return ['-object', json.dumps(backend, sort_keys=True),
            '-machine', 'memory-backend=%s' % LAZY_RAM_ID,
            '-incoming', 'defer']


def _with_lazy_ram(dom, ram_file, shared, memory_mib, readonly=False):
    # The qemu namespace must be declared on the root element.
    root = etree.Element('domain', dict(dom.attrib), nsmap={'qemu': QEMU_NS})
    root.extend(list(dom))
    cmdline = etree.SubElement(root, '{%s}commandline' % QEMU_NS)
    for arg in lazy_ram_args(ram_file, shared, memory_mib, readonly):
        etree.SubElement(cmdline, '{%s}arg' % QEMU_NS, value=arg)
    return root


def with_lazy_ram(xml, ram_file, shared, memory_mib, readonly=False):
    """Domain XML ``xml`` (rendered elsewhere, e.g. by Nova) with the lazy
    RAM passthrough of :func:`lazy_ram_args` added."""
    root = parse(xml, 'domain XML')
    return etree.tostring(_with_lazy_ram(root, ram_file, shared, memory_mib,
                                         readonly),
                          encoding='unicode')


def lazy_ram_file(xml_text):
    """The file a running domain's lazy RAM backend maps, from its live
    XML; None for any other domain."""
    root = parse(xml_text, 'domain XML')
    args = [a.get('value') for a in root.iterfind(
        '{%s}commandline/{%s}arg' % (QEMU_NS, QEMU_NS))]
    for arg in args:
        if not arg or not arg.startswith('{'):
            continue
        try:
            backend = json.loads(arg)
        except ValueError:
            continue
        if isinstance(backend, dict) and backend.get('id') == LAZY_RAM_ID:
            return backend.get('mem-path')
    return None


@dataclasses.dataclass(frozen=True)
class DomainFacts:
    """What restoring depends on, read from a domain XML."""

    name: str
    uuid: str
    memory_kib: int
    vcpus: int
    arch: str
    machine: str
    cpu_model: str
    disks: tuple        # ((target dev, bus), ...)
    nics: tuple         # ((model, mac), ...)
    genid: str
    has_agent: bool

    @property
    def nic_models(self):
        return tuple(model for model, _ in self.nics)


_UNITS = {'b': 1, 'bytes': 1, 'k': 1024, 'kib': 1024, 'kb': 1000,
          'm': 1024 ** 2, 'mib': 1024 ** 2, 'mb': 1000 ** 2,
          'g': 1024 ** 3, 'gib': 1024 ** 3, 'gb': 1000 ** 3}


def _int(text, what, origin):
    try:
        value = int((text or '').strip())
    except ValueError:
        raise exception.UnsafeDomainXML(
            origin=origin, reason='%s is not an integer: %r' % (what, text))
    if value < 0:
        raise exception.UnsafeDomainXML(origin=origin,
                                        reason='%s is negative' % what)
    return value


def macs_with_link_down(xml_text):
    """The MACs of the NICs whose link the domain XML sets down."""
    root = parse(xml_text, 'domain XML')
    return [nic.find('mac').get('address')
            for nic in root.findall('devices/interface')
            if nic.find('mac') is not None
            and nic.find("link[@state='down']") is not None]


def facts(xml_text, origin):
    """Read :class:`DomainFacts` from (possibly untrusted) domain XML.

    :raises UnsafeDomainXML: malformed, or missing what a domain must have.
    """
    root = parse(xml_text, origin)
    if root.tag != 'domain':
        raise exception.UnsafeDomainXML(
            origin=origin, reason='root element is <%s>, not <domain>'
            % root.tag)
    mem = root.find('memory')
    if mem is None:
        raise exception.UnsafeDomainXML(origin=origin,
                                        reason='no <memory> element')
    unit = (mem.get('unit') or 'KiB').lower()
    if unit not in _UNITS:
        raise exception.UnsafeDomainXML(origin=origin,
                                        reason='unknown memory unit %r' % unit)
    memory_kib = _int(mem.text, 'memory', origin) * _UNITS[unit] // 1024
    ostype = root.find('os/type')
    disks = tuple((t.get('dev'), t.get('bus'))
                  for t in root.findall("devices/disk/target"))
    nics = tuple(((i.find('model').get('type')
                   if i.find('model') is not None else None),
                  (i.find('mac').get('address')
                   if i.find('mac') is not None else None))
                 for i in root.findall('devices/interface'))
    agent = any(t.get('name') == AGENT_CHANNEL
                for t in root.findall('devices/channel/target'))
    return DomainFacts(
        name=root.findtext('name') or '',
        uuid=root.findtext('uuid') or '',
        memory_kib=memory_kib,
        vcpus=_int(root.findtext('vcpu'), 'vcpu', origin),
        arch=ostype.get('arch') if ostype is not None else None,
        machine=ostype.get('machine') if ostype is not None else None,
        cpu_model=root.findtext('cpu/model'),
        disks=disks,
        nics=nics,
        genid=root.findtext('genid'),
        has_agent=agent)


def with_genid(xml, genid, what='domain XML'):
    """``xml`` with VM generation ID ``genid`` (replacing any), or with
    none when ``genid`` is None.

    The generation ID is an ACPI device the guest kernel watches: a new
    value tells it that it was forked and must reseed its RNG. The device
    is part of the machine: a clone has one only if its source had one.
    """
    root = parse(xml, what)
    for old in root.findall('genid'):
        root.remove(old)
    if genid is not None:
        element = etree.Element('genid')
        element.text = genid
        uuid = root.find('uuid')
        root.insert(list(root).index(uuid) + 1 if uuid is not None else 0,
                    element)
    return etree.tostring(root, encoding='unicode')


def ensure_genid(xml):
    """``xml`` with a VM generation ID (a new one) if it is a domain
    without one; anything else unchanged."""
    try:
        root = parse(xml, 'domain XML')
    except exception.UnsafeDomainXML:
        return xml
    if root.tag != 'domain' or root.find('genid') is not None:
        return xml
    return with_genid(xml, str(uuidlib.uuid4()))


def compare(image, clone):
    """The reasons why a clone described by ``clone`` cannot resume ``image``.

    Both are :class:`DomainFacts`. An empty list means the engine sees no
    obstacle; libvirt's own ABI check still has the last word at restore.
    """
    reasons = []
    if image.memory_kib != clone.memory_kib:
        reasons.append('the image has %d MiB of memory, the clone %d MiB'
                       % (image.memory_kib // 1024, clone.memory_kib // 1024))
    if image.vcpus != clone.vcpus:
        reasons.append('the image has %d vCPUs, the clone %d'
                       % (image.vcpus, clone.vcpus))
    if image.arch != clone.arch:
        reasons.append('the image is %s, the clone %s'
                       % (image.arch, clone.arch))
    if image.machine != clone.machine:
        reasons.append('the image was captured on machine type %s, the '
                       'clone would run %s' % (image.machine, clone.machine))
    if image.disks != clone.disks:
        reasons.append('the image has disks %s, the clone %s'
                       % (list(image.disks), list(clone.disks)))
    if image.nic_models != clone.nic_models:
        reasons.append('the image has NIC models %s, the clone %s'
                       % (list(image.nic_models), list(clone.nic_models)))
    return reasons


def check_cookie(cookie, origin):
    """Refuse a save-image cookie that is not libvirt's save cookie.

    libvirt parses the cookie when restoring; we pass it on only when it is
    the small ``<cookie>`` document libvirt itself writes.
    """
    if not cookie:
        return
    root = parse(cookie, origin)
    if root.tag != 'cookie':
        raise exception.UnsafeDomainXML(
            origin=origin, reason='cookie root is <%s>, not <cookie>'
            % root.tag)
    unexpected = sorted({child.tag for child in root} - _COOKIE_CHILDREN)
    if unexpected:
        raise exception.UnsafeDomainXML(
            origin=origin, reason='unexpected cookie elements %s' % unexpected)


# Domains rendered elsewhere (Nova's guest config, libvirt's live XML) ----

def for_restore(xml, machine, aliases, genid, origin='Nova guest config'):
    """Guest config ``xml`` rendered elsewhere (by Nova) for a clone, made
    restorable.

    * The clone's VM generation ID is ``genid`` (None when its source had
      no generation ID device).
    * Every interface's link is down: a clone stays off the network until
      it has its own MAC and has forgotten its source's addresses
      (:mod:`nova_live_snapshot.identity`).
    * A machine type alias (Nova writes ``pc`` unless the image says
      otherwise) becomes the image's concrete machine type when the alias
      stands for it here (``aliases``: alias to machine type): the
      migration stream only loads into that one.
    """
    root = parse(xml, origin)
    for nic in root.findall('devices/interface'):
        for link in nic.findall('link'):
            nic.remove(link)
        etree.SubElement(nic, 'link', state='down')
    ostype = root.find('os/type')
    if ostype is not None and ostype.get('machine') != machine and \
            aliases.get(ostype.get('machine')) == machine:
        ostype.set('machine', machine)
    return with_genid(etree.tostring(root, encoding='unicode'), genid, origin)


# What of a guest config is the host's, not the guest's: left out of the
# device signature a template is keyed by, and replaced in the domain that
# builds it.
_HOST_SIDE = ('name', 'uuid', 'genid', 'title', 'description', 'metadata',
              'sysinfo', 'seclabel', 'resource')
_NIC_KEEP = ('mac', 'model', 'driver', 'address', 'mtu', 'rom', 'link',
             'alias')


def device_signature(xml, origin='Nova guest config'):
    """A digest of the guest-visible devices of guest config ``xml`` (host
    paths, names and MACs left out): clones whose configs have the same
    signature can share a template, whose saved device state must match
    their devices."""
    root = parse(xml, origin)
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


def template_domain(xml, genid, overlay_for, refuse,
                    origin='Nova guest config'):
    """Guest config ``xml`` as the domain that builds a lazy template: the
    same guest devices, none of the instance's host resources.

    Disks become the overlays ``overlay_for(dev, source file, format)``
    returns (the caller makes them), NICs unattached taps (a virtio-net
    state records that its backend gives vnet headers, as Neutron's taps
    do), serial ports and consoles ptys without logs; read-only media stay.
    The domain has a new name and UUID and generation ID ``genid``.

    :raises: ``refuse(reason)`` for a device it cannot stand in for.
    """
    root = parse(xml, origin)
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
    for disk in root.findall('devices/disk'):
        if disk.get('device', 'disk') != 'disk':
            continue
        source = disk.find('source')
        if disk.get('type') != 'file' or source is None:
            raise refuse('its disk %s is of type %s; lazy templates stand in '
                         'for file disks only' % (
                             disk.find('target').get('dev'), disk.get('type')))
        overlay = overlay_for(disk.find('target').get('dev'),
                              source.get('file'),
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
    return etree.tostring(root, encoding='unicode')


def _live(xml):
    # libvirt's own XML of a domain on this host (not an image's).
    return parse(xml, 'live domain XML')


def disk_sources(xml):
    """``{target dev: source file}`` of the file-backed disks of ``xml``."""
    root = _live(xml)
    return {d.find('target').get('dev'): d.find('source').get('file')
            for d in root.findall("devices/disk[@type='file']")
            if d.find('source') is not None}


def interface_macs(xml):
    """The MACs of the domain's NICs, in order."""
    return [m.get('address')
            for m in _live(xml).findall('devices/interface/mac')]


def genid(xml):
    """The domain's VM generation ID, or None."""
    return _live(xml).findtext('genid')


def interface_with_link(xml, mac, state):
    """The ``<interface>`` of the NIC with ``mac`` in ``xml``, its link set
    to ``state`` (for a device update), or None when there is none."""
    for nic in _live(xml).findall('devices/interface'):
        if nic.find('mac') is not None and \
                nic.find('mac').get('address') == mac:
            for link in nic.findall('link'):
                nic.remove(link)
            etree.SubElement(nic, 'link', state=state)
            return etree.tostring(nic, encoding='unicode')
    return None


def _disk(root, dev):
    for disk in root.findall('devices/disk'):
        target = disk.find('target')
        if target is not None and target.get('dev') == dev:
            return disk
    return None


def active_disk(xml, dev):
    """The file disk ``dev`` of the domain writes to, or None."""
    disk = _disk(_live(xml), dev)
    source = disk.find('source') if disk is not None else None
    return source.get('file') if source is not None else None


def mirror_ready(xml, dev):
    """Whether the block job mirror of disk ``dev`` is ready to pivot
    (False when it has none)."""
    disk = _disk(_live(xml), dev)
    mirror = disk.find('mirror') if disk is not None else None
    return mirror is not None and mirror.get('ready') == 'yes'


def snapshot_xml(memory_path, overlays):
    """A ``<domainsnapshot>`` with an external memory file and an external
    qcow2 overlay for each disk of ``overlays`` (``{dev: overlay path}``)."""
    snap = etree.Element('domainsnapshot')
    etree.SubElement(snap, 'memory', snapshot='external', file=memory_path)
    disks = etree.SubElement(snap, 'disks')
    for dev, path in sorted(overlays.items()):
        disk = etree.SubElement(disks, 'disk', name=dev,
                                snapshot='external', type='file')
        etree.SubElement(disk, 'driver', type='qcow2')
        etree.SubElement(disk, 'source', file=path)
    return etree.tostring(snap, encoding='unicode')


def with_disk_overlays(xml, overlays, origin):
    """``xml`` with each file disk of ``overlays`` (``{dev: overlay}``)
    on its qcow2 overlay, its backing chain left for libvirt to probe."""
    root = parse(xml, origin)
    for disk in root.findall("devices/disk[@type='file']"):
        dev = disk.find('target').get('dev')
        if dev in overlays:
            disk.find('source').set('file', overlays[dev])
            driver = disk.find('driver')
            if driver is not None:
                driver.set('type', 'qcow2')
            # libvirt re-probes the chain from the new overlay.
            for backing in disk.findall('backingStore'):
                disk.remove(backing)
    return etree.tostring(root, encoding='unicode')
