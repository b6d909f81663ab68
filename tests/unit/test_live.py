"""The Nova driver's lazy templates: which configs share one, and the
domain that builds one from Nova's guest config."""

import os
import subprocess

from lxml import etree
import pytest

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot.virt import guestconfig

NOVA_XML = """<domain type="qemu">
  <name>instance-0000000{n}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"/>
  </metadata>
  <memory>131072</memory>
  <vcpu>1</vcpu>
  <sysinfo type="smbios"><system>
    <entry name="manufacturer">OpenStack Foundation</entry>
    <entry name="uuid">{uuid}</entry>
  </system></sysinfo>
  <os><type machine="pc-i440fx-7.2">hvm</type><smbios mode="sysinfo"/></os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="{disk}"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="/srv/instances/{uuid}/disk.config"/>
      <target dev="hdd" bus="ide"/>
    </disk>
    <interface type="bridge">
      <mac address="fa:16:3e:00:00:0{n}"/>
      <model type="virtio"/>
      <source bridge="br-int"/>
      <virtualport type="openvswitch"/>
      <target dev="tap0000000{n}"/>
      <link state="down"/>
    </interface>
    <serial type="pty">
      <log file="/srv/instances/{uuid}/console.log" append="off"/>
      <target port="0"/>
    </serial>
    <graphics type="vnc" autoport="yes" listen="0.0.0.0"/>
    <memballoon model="virtio"/>
  </devices>
</domain>
"""


def _xml(n=1, uuid='11111111-2222-3333-4444-55555555555%d', disk=None):
    uuid = uuid % n if '%' in uuid else uuid
    return NOVA_XML.format(n=n, uuid=uuid,
                           disk=disk or '/srv/instances/%s/disk' % uuid)


def test_configs_that_differ_only_on_the_host_share_a_signature():
    """Name, UUID, SMBIOS, Nova's metadata, disk and console paths, tap
    names and MACs are the host's or the clone's own: one template serves
    both. A device more, or another memory size, is another template."""
    assert domainxml.device_signature(_xml(1)) == domainxml.device_signature(_xml(2))
    more = _xml(1).replace('<memballoon model="virtio"/>',
                           '<memballoon model="virtio"/><rng model="virtio">'
                           '<backend model="random">/dev/urandom</backend>'
                           '</rng>')
    assert domainxml.device_signature(more) != domainxml.device_signature(_xml(1))
    bigger = _xml(1).replace('131072', '262144')
    assert domainxml.device_signature(bigger) != domainxml.device_signature(_xml(1))


@pytest.fixture
def instance_disk(tmp_path):
    path = str(tmp_path / 'disk')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, '64M'],
                   check=True)
    return path


def test_the_template_domain_uses_none_of_the_instance_host_resources(
        tmp_path, instance_disk):
    partial = str(tmp_path / 'partial')
    os.mkdir(partial)
    ram = os.path.join(partial, 'memory.ram')
    xml = guestconfig.template_xml(_xml(1, disk=instance_disk), 'img',
                                   'aaaaaaaa-0000-0000-0000-000000000000',
                                   partial, ram, 128)
    root = etree.fromstring(xml.encode())
    assert root.findtext('name').startswith('nls-template-')
    new_uuid = root.findtext('uuid')
    assert new_uuid != '11111111-2222-3333-4444-555555555551'
    assert root.findtext("sysinfo/system/entry[@name='uuid']") == new_uuid
    assert root.find('metadata') is None
    disk, cdrom = root.findall('devices/disk')
    overlay = disk.find('source').get('file')
    assert os.path.dirname(overlay) == partial
    assert cdrom.find('source').get('file').endswith('disk.config')
    nic = root.find('devices/interface')
    assert nic.get('type') == 'ethernet'
    assert [c.tag for c in nic] == ['mac', 'model', 'link']
    serial = root.find('devices/serial')
    assert serial.get('type') == 'pty' and serial.find('log') is None
    assert root.find('devices/graphics') is None
    assert domainxml.lazy_ram_file(xml) == ram
    args = [a.get('value') for a in root.iter(
        '{%s}arg' % domainxml.QEMU_NS)]
    assert '"share": true' in args[1]
    info = subprocess.run(['qemu-img', 'info', '--output=json', overlay],
                          check=True, capture_output=True, text=True).stdout
    assert instance_disk in info


def test_a_disk_it_cannot_stand_in_for_is_refused(tmp_path):
    block = _xml(1).replace('<disk type="file" device="disk">',
                            '<disk type="block" device="disk">')
    with pytest.raises(exception.TemplateBuildFailed, match='type block'):
        guestconfig.template_xml(block, 'img', 'g', str(tmp_path),
                                 str(tmp_path / 'memory.ram'), 128)
