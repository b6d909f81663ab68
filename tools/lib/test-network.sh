# shellcheck shell=bash
# The isolated test network of a test libvirt host (tools/setup-host.sh, and
# tools/backports-host.sh's second host): a bridge with DHCP (dnsmasq) and
# no forwarding, inside the daemon's network namespace. Clones on it must
# each lease their own address, and every clone has a new MAC: a /16 keeps
# the pool from running dry however many clones the tests and benchmarks
# make (a /24 with one-hour leases ran out after 151). Sourcing it only
# defines the function below.

# test_network_xml NAME: print the network's libvirt definition.
test_network_xml() {
    cat <<XML
<network>
  <name>$1</name>
  <bridge name='nlsbr0' stp='off' delay='0'/>
  <ip address='10.77.0.1' netmask='255.255.0.0'>
    <dhcp>
      <range start='10.77.1.1' end='10.77.254.254'>
        <lease expiry='60' unit='minutes'/>
      </range>
    </dhcp>
  </ip>
</network>
XML
}
