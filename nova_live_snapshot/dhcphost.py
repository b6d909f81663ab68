"""A clone's own address on a libvirt network: a static DHCP host entry.

On the engine's network (``[live_snapshot] clone_network``) every clone has
a new MAC, so dnsmasq would lease it some new address anyway; but a dynamic
lease outlives the clone (the pool drains as clones come and go) and says
nothing about which clone holds which address. Instead each clone gets a
``<host mac= name= ip=/>`` entry, made before it is restored and deleted
with it, so that its DHCP request after re-identification gets exactly
that address and the address is free again once the clone is gone. This
is what Neutron does for a port (a fixed IP, served to its MAC only).

Addresses come from the network's subnet outside its dynamic ranges, so
that no dynamic lease can hold one, and never one that dnsmasq still holds
leased: deleting a host entry does not end the lease served from it, and
dnsmasq refuses a configured address that another MAC's lease holds (it
would serve the clone some dynamic address instead). libvirt learns of a
lease only when dnsmasq's lease script has run, some time after the lease,
so the leases it lists can miss one just made: addresses are therefore
taken in turn, from the one after the last this process reserved on the
network, not the lowest free one, which is the one a clone destroyed a
moment ago just gave back. Several engines may reserve at once:
libvirt refuses an entry whose MAC, name or address another entry has,
and the next free address is tried.
"""

import ipaddress
import logging

from lxml import etree

from nova_live_snapshot import exception

LOG = logging.getLogger(__name__)

__all__ = ['reserve', 'release', 'static_address']

_ATTEMPTS = 16

# Network name -> the last address reserved on it by this process.
_last_reserved = {}


def _ipv4(root):
    """The network's IPv4 <ip> element (the one with a DHCP section)."""
    for ip in root.findall('ip'):
        if ip.get('family', 'ipv4') == 'ipv4' and ip.find('dhcp') is not None:
            return ip
    return None


def _free_addresses(network_xml, leased=()):
    """Addresses of the network's subnet that no dynamic range covers and
    no host entry, lease (``leased``), gateway or broadcast holds, in
    order."""
    root = etree.fromstring(network_xml.encode())
    ip = _ipv4(root)
    if ip is None:
        return []
    gateway = ipaddress.IPv4Address(ip.get('address'))
    prefix = ip.get('prefix') or ip.get('netmask')
    subnet = ipaddress.IPv4Network('%s/%s' % (gateway, prefix), strict=False)
    ranges = [(ipaddress.IPv4Address(r.get('start')),
               ipaddress.IPv4Address(r.get('end')))
              for r in ip.findall('dhcp/range')]
    taken = {gateway} | {ipaddress.IPv4Address(h.get('ip'))
                         for h in ip.findall('dhcp/host') if h.get('ip')}
    taken |= {ipaddress.IPv4Address(a) for a in leased}
    return [a for a in subnet.hosts()
            if a not in taken and not any(lo <= a <= hi for lo, hi in ranges)]


def static_address(network_xml, name):
    """The address the network's DHCP host entry named ``name`` gives, or
    None."""
    for entry in _entries(network_xml):
        if entry.get('name') == name:
            return entry.get('ip')
    return None


def _entry(mac, name, address=None):
    host = etree.Element('host', mac=mac, name=name)
    if address:
        host.set('ip', str(address))
    return etree.tostring(host).decode()


def _in_turn(free, cursor):
    """``free`` (ascending) from the first address after ``cursor``,
    wrapping round."""
    if cursor is None:
        return free
    after = [a for a in free if a > cursor]
    return after + [a for a in free if a <= cursor]


def reserve(host, network, mac, name):
    """Give ``mac`` (the clone ``name``) an address of its own on
    ``network``: the next free one after the last reserved there.

    :returns: the address, as a string.
    :raises HypervisorError: the network has no free static address, or
        libvirt kept refusing the entry.
    """
    last = None
    for _ in range(_ATTEMPTS):
        free = _in_turn(_free_addresses(host.network_xml(network),
                                        host.dhcp_leased_addresses(network)),
                        _last_reserved.get(network))
        if not free:
            raise exception.HypervisorError(
                operation='reserve an address on network %s' % network,
                reason='every address of its subnet outside the DHCP '
                       'ranges has a host entry or an unexpired lease')
        try:
            host.update_dhcp_host(network, _entry(mac, name, free[0]))
        except exception.HypervisorError as e:
            # Another engine took the address in the meantime.
            last = e
            continue
        _last_reserved[network] = free[0]
        LOG.debug('Reserved %s for %s (%s) on network %s', free[0], name,
                  mac, network)
        return str(free[0])
    raise last


def _entries(network_xml):
    root = etree.fromstring(network_xml.encode())
    ip = _ipv4(root)
    return ip.findall('dhcp/host') if ip is not None else []


def release(host, network, name):
    """Delete the host entry of clone ``name`` from ``network``; False when
    it has none."""
    for entry in _entries(host.network_xml(network)):
        if entry.get('name') == name:
            host.update_dhcp_host(network, etree.tostring(entry).decode(),
                                  add=False)
            return True
    return False
