"""Rendering a clone's XML, reading facts from untrusted XML, comparing them."""

import re
import uuid as uuidlib

from lxml import etree
import pytest

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception


def _spec(**kw):
    kw.setdefault('name', 'clone-1')
    kw.setdefault('disk_path', '/srv/clones/clone-1/disk.qcow2')
    kw.setdefault('console_log', '/srv/clones/clone-1/console.log')
    return domainxml.DomainSpec(**kw)


def test_render_then_facts_round_trip():
    spec = _spec(memory_mib=256, vcpus=2, machine='pc-i440fx-7.2')
    facts = domainxml.facts(domainxml.render(spec), 'test')
    assert facts.name == 'clone-1'
    assert facts.uuid == spec.uuid
    assert facts.memory_kib == 256 * 1024
    assert facts.vcpus == 2
    assert facts.machine == 'pc-i440fx-7.2'
    assert facts.arch == 'x86_64'
    assert facts.disks == (('vda', 'virtio'),)
    assert facts.nics == (('virtio', spec.mac),)
    assert facts.genid == spec.genid
    assert facts.has_agent


def test_rendered_host_paths_come_only_from_the_spec():
    xml = domainxml.render(_spec())
    paths = set(re.findall(r"(?:file|path)=['\"]([^'\"]+)", xml))
    assert paths == {'/srv/clones/clone-1/disk.qcow2',
                     '/srv/clones/clone-1/console.log'}


def test_each_spec_gets_a_new_identity():
    a, b = _spec(), _spec()
    assert len({a.uuid, b.uuid}) == 2
    assert len({a.genid, b.genid}) == 2
    assert a.mac != b.mac


def test_macs_with_link_down_follow_the_spec():
    down = _spec(network='nls-test', link_up=False)
    assert domainxml.macs_with_link_down(domainxml.render(down)) == [down.mac]
    up = _spec(network='nls-test', link_up=True)
    assert domainxml.macs_with_link_down(domainxml.render(up)) == []


def test_random_mac_is_locally_administered_qemu_range():
    for _ in range(50):
        mac = domainxml.random_mac()
        assert re.fullmatch(r'52:54:00(:[0-9a-f]{2}){3}', mac)


def test_memory_units_are_converted():
    xml = ("<domain><name>x</name><memory unit='MiB'>512</memory>"
           "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>"
           "</os></domain>")
    assert domainxml.facts(xml, 't').memory_kib == 512 * 1024


def test_compare_names_every_difference():
    image = domainxml.facts(domainxml.render(_spec(machine='pc-i440fx-7.2')),
                            'image')
    clone = domainxml.facts(domainxml.render(_spec(
        memory_mib=256, vcpus=2, machine='pc-i440fx-8.0')), 'clone')
    reasons = domainxml.compare(image, clone)
    assert len(reasons) == 3
    assert any('128 MiB' in r and '256 MiB' in r for r in reasons)
    assert any('vCPUs' in r for r in reasons)
    assert any('pc-i440fx-8.0' in r for r in reasons)


def test_compare_ignores_identity_and_paths():
    image = domainxml.facts(domainxml.render(_spec()), 'image')
    clone = domainxml.facts(domainxml.render(_spec(
        name='other', disk_path='/x', console_log='/y')), 'clone')
    assert domainxml.compare(image, clone) == []


def test_compare_detects_other_devices():
    base = domainxml.render(_spec())
    two_nics = base.replace('</devices>', "<interface type='user'>"
                            "<model type='e1000'/></interface></devices>")
    reasons = domainxml.compare(domainxml.facts(base, 'a'),
                                domainxml.facts(two_nics, 'b'))
    assert reasons and 'NIC models' in reasons[0]


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<domain><name>&lol2;</name></domain>"""


@pytest.mark.parametrize('xml, message', [
    (BILLION_LAUGHS, 'DOCTYPE|not well-formed'),
    ('<domain><name>x</name>', 'not well-formed'),
    ('<network/>', 'not <domain>'),
    ('<domain><name>x</name></domain>', 'no <memory>'),
    ("<domain><memory unit='parsec'>1</memory></domain>", 'unknown memory'),
    ("<domain><memory>lots</memory></domain>", 'not an integer'),
    ('<domain>' + ' ' * (2 * 1024 * 1024) + '</domain>', 'limit'),
])
def test_untrusted_xml_is_refused(xml, message):
    with pytest.raises(exception.UnsafeDomainXML, match=message):
        domainxml.facts(xml, 'crafted image')


def test_external_entities_are_not_resolved():
    xml = ('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<domain><name>&x;</name></domain>')
    with pytest.raises(exception.UnsafeDomainXML):
        domainxml.facts(xml, 'crafted image')


def test_cookie_allow_list():
    domainxml.check_cookie('', 'c')
    domainxml.check_cookie('<cookie><cpu mode="custom"/></cookie>', 'c')
    with pytest.raises(exception.UnsafeDomainXML, match='not <cookie>'):
        domainxml.check_cookie('<qemu-migration/>', 'c')
    with pytest.raises(exception.UnsafeDomainXML, match='unexpected'):
        domainxml.check_cookie('<cookie><disk/></cookie>', 'c')


def test_genid_added_replaced_or_removed():
    xml = ('<domain type="qemu"><name>n</name><uuid>%s</uuid>'
           '<memory>1024</memory></domain>' % uuidlib.uuid4())
    with_one = domainxml.ensure_genid(xml)
    genid = etree.fromstring(with_one).findtext('genid')
    assert uuidlib.UUID(genid)
    # The element follows <uuid>, and an existing one is kept.
    assert [e.tag for e in etree.fromstring(with_one)][:3] == [
        'name', 'uuid', 'genid']
    assert domainxml.ensure_genid(with_one) == with_one
    other = str(uuidlib.uuid4())
    replaced = domainxml.with_genid(with_one, other)
    assert etree.fromstring(replaced).findall('genid')[0].text == other
    assert len(etree.fromstring(replaced).findall('genid')) == 1
    assert etree.fromstring(
        domainxml.with_genid(with_one, None)).find('genid') is None
    # Not a domain (or not XML): unchanged.
    assert domainxml.ensure_genid('<xml/>') == '<xml/>'
    assert domainxml.ensure_genid('not xml') == 'not xml'


def test_lazy_domain_maps_its_ram_file_and_waits_for_its_state():
    """A lazy domain's passthrough: our file backend (JSON, so a comma in a
    path needs no escaping), used as the machine's RAM, and -incoming
    defer; read back from the XML for reference counting. A plain domain
    has none."""
    spec = _spec(memory_mib=256, ram_file='/dev/shm/t,1/memory.ram')
    xml = domainxml.render(spec)
    assert domainxml.lazy_ram_file(xml) == '/dev/shm/t,1/memory.ram'
    args = domainxml.lazy_ram_args(spec.ram_file, False, 256)
    assert args[2:] == ['-machine', 'memory-backend=nls.ram',
                        '-incoming', 'defer']
    assert '"share": false' in args[1] and '"size": 268435456' in args[1]
    assert '"share": true' in domainxml.lazy_ram_args('/x', True, 128)[1]
    plain = domainxml.render(spec.with_identity(ram_file=None))
    assert domainxml.lazy_ram_file(domainxml.with_lazy_ram(
        plain, '/y/memory.ram', False, 256)) == '/y/memory.ram'
    assert domainxml.facts(xml, 'test') == domainxml.facts(
        domainxml.render(spec.with_identity(ram_file=None)), 'test')
    assert domainxml.lazy_ram_file(domainxml.render(_spec())) is None


def test_what_the_libvirt_wrapper_reads_of_a_live_domain():
    spec = _spec()
    xml = domainxml.render(spec)
    assert domainxml.disk_sources(xml) == {'vda': spec.disk_path}
    assert domainxml.interface_macs(xml) == [spec.mac]
    assert domainxml.genid(xml) == spec.genid
    assert domainxml.active_disk(xml, 'vda') == spec.disk_path
    assert domainxml.active_disk(xml, 'vdb') is None
    assert domainxml.mirror_ready(xml, 'vda') is False
    mirrored = xml.replace('</disk>', "<mirror ready='yes'/></disk>")
    assert domainxml.mirror_ready(mirrored, 'vda') is True


def test_a_nic_update_carries_only_its_new_link_state():
    spec = _spec(link_up=False)
    nic = etree.fromstring(domainxml.interface_with_link(
        domainxml.render(spec), spec.mac, 'up'))
    assert nic.tag == 'interface'
    assert [link.get('state') for link in nic.findall('link')] == ['up']
    assert domainxml.interface_with_link(domainxml.render(spec),
                                         '52:54:00:00:00:01', 'up') is None


def test_the_live_snapshot_names_every_overlay_and_the_memory_file():
    snap = etree.fromstring(domainxml.snapshot_xml(
        '/m/memory.save', {'vdb': '/o/b.qcow2', 'vda': '/o/a.qcow2'}))
    assert snap.find('memory').attrib == {'snapshot': 'external',
                                          'file': '/m/memory.save'}
    assert [(d.get('name'), d.find('source').get('file'))
            for d in snap.findall('disks/disk')] == [
        ('vda', '/o/a.qcow2'), ('vdb', '/o/b.qcow2')]


def test_a_save_image_xml_moves_its_disks_onto_their_overlays():
    spec = _spec(backing_path='/images/frozen.qcow2')
    xml = domainxml.with_disk_overlays(domainxml.render(spec),
                                       {'vda': '/o/new.qcow2'}, 'test')
    disk = etree.fromstring(xml).find('devices/disk')
    assert disk.find('source').get('file') == '/o/new.qcow2'
    assert disk.find('driver').get('type') == 'qcow2'
    assert disk.find('backingStore') is None
