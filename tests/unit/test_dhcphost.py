"""Which addresses a clone's static DHCP entry may take (dhcphost)."""

import ipaddress

from nova_live_snapshot import dhcphost

NETWORK = '''<network>
  <name>nls-test</name>
  <ip address='10.77.0.1' netmask='255.255.0.0'>
    <dhcp>
      <range start='10.77.1.1' end='10.77.254.254'/>
      <host mac='52:54:00:00:00:01' name='a' ip='10.77.0.2'/>
    </dhcp>
  </ip>
</network>'''


def test_free_addresses_skip_the_gateway_ranges_and_entries():
    addresses = dhcphost._free_addresses(NETWORK)
    free = [str(a) for a in addresses]
    assert free[:2] == ['10.77.0.3', '10.77.0.4']
    assert '10.77.0.1' not in free and '10.77.0.2' not in free
    lo, hi = ipaddress.IPv4Address('10.77.1.1'), ipaddress.IPv4Address(
        '10.77.254.254')
    assert not [a for a in addresses if lo <= a <= hi]
    assert '10.77.1.0' in free
    assert free[-1] == '10.77.255.254'


def test_static_address_by_name():
    assert dhcphost.static_address(NETWORK, 'a') == '10.77.0.2'
    assert dhcphost.static_address(NETWORK, 'b') is None


def test_a_network_without_dhcp_has_nothing_free():
    assert dhcphost._free_addresses(
        "<network><name>n</name><ip address='10.0.0.1' prefix='24'/>"
        "</network>") == []


def test_an_address_still_leased_is_not_free():
    """dnsmasq keeps a lease after its host entry is deleted and will not
    serve that address to another MAC until it expires."""
    free = [str(a) for a in dhcphost._free_addresses(
        NETWORK, leased={'10.77.0.3', '10.77.5.5'})]
    assert free[0] == '10.77.0.4'
    assert '10.77.0.3' not in free


def test_addresses_are_taken_in_turn_after_the_last_reserved():
    """The address a clone destroyed a moment ago gave back is the lowest
    free one, and its lease may not be listed by libvirt yet: the next
    reservation takes the one after the last reserved, wrapping round."""
    free = dhcphost._free_addresses(NETWORK)
    turn = dhcphost._in_turn(free, ipaddress.IPv4Address('10.77.0.5'))
    assert [str(a) for a in turn[:2]] == ['10.77.0.6', '10.77.0.7']
    assert str(turn[-1]) == '10.77.0.5' and len(turn) == len(free)
    last = free[-1]
    assert dhcphost._in_turn(free, last)[0] == free[0]
    assert dhcphost._in_turn(free, None) == free
