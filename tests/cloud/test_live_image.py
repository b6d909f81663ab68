"""The whole feature through the test cloud, as a user meets it.

One Debian source server, one live image, three clones, in order:

1. ``openstack server create`` a Debian guest and wait for its workload;
2. ``openstack server live-image create --wait`` while the workload runs:
   the source stays ACTIVE and its workload (same QEMU process, same token,
   a counter that kept counting) never restarts;
3. ``openstack server create --image golden --min 3 --max 3``: three clones
   reach ACTIVE, resume the workload's memory, and share none of the
   identity that matters (hostname, SSH host keys, machine-id, VM
   generation ID and a reseeded kernel RNG, clock), read through the guest
   agent;
3a. each server on its own Neutron port: a clone's guest interface carries
   its port's MAC and the fixed IP Neutron's DHCP agent leased it, the
   source keeps its address and lease, and no frame with the source's MAC
   or address left a clone's tap from its first instant; every server
   answers on its own address from the DHCP namespace (ping, and sshd with
   its own host key);
3c. a security group rule that the source and the clones share blocks them
   all, and port security drops what a clone sends from its source's
   address;
3d. the OVS agent restarted while the clones run: every server ends ACTIVE
   and answering on its address, with no port left over on the bridge
   (after an ovs-vswitchd restart, test 6, the DHCP namespace's port
   stays without carrier: a known failure, marked so); with the DHCP
   agent down while a clone spawns, that clone ends ACTIVE with its
   address or in ERROR with a fault that says why, and once deleted leaves
   no domain, port, tap or file;
4. deleting the clones and the live image leaves no domain, instance
   directory, cached memory stream, staging file or Glance image;
5. a nova-compute killed in the middle of a capture comes back with the
   source ACTIVE on its own disk, the half-made image deleted and nothing
   left on the host.

Each step's wall time is recorded (see conftest.record_time).
"""

import os
import re
import time

import pytest

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

from tests.cloud import conftest
from tests.cloud.conftest import record_time
from tests.cloud.conftest import Stopwatch
from tests.cloud.conftest import wait_ready
from tests.cloud import netview


class Flow:
    """What the scenarios hand on to each other."""
    source = None
    source_guest = None
    before_capture = None
    image = None
    clones = ()
    measured = []
    plain_image = False
    frames = None       # what clones sent into their taps (netview.TapWatch)


@pytest.fixture(scope='module')
def flow(demo):
    state = Flow()
    yield state
    # Whatever a failed step left: the scenarios' own servers and image.
    for server in list(state.clones) + state.measured + [state.source]:
        if server:
            demo('server', 'delete', '--wait', server['id'], parse=False)
    if state.plain_image:
        demo('image', 'delete', 'golden-plain', parse=False)
    if state.image:
        images = demo('image', 'list', '--name', 'golden')
        if images:
            demo('server', 'live-image', 'delete', 'golden', parse=False)


def test_1_boot_a_debian_server_and_wait_for_its_workload(demo, compute, flow):
    watch = Stopwatch()
    server = demo('server', 'create', '--image', 'debian-guest',
                  '--flavor', 'nls.small', '--network', demo.network, '--wait',
                  'golden-source')
    record_time('boot: create to ACTIVE', watch())
    flow.source = server
    assert server['status'] == 'ACTIVE'
    guest = compute.guest(server['id'])
    state = wait_ready(guest)
    record_time('boot: create to workload ready', watch())
    flow.source_guest = guest
    assert state.counter >= 0 and len(state.token) == 32


def test_2_capture_while_the_workload_runs(demo, compute, flow):
    guest = flow.source_guest
    before = testbed.read_workload(guest)
    pid = guest.qemu_pid()
    watch = Stopwatch()
    image = demo('server', 'live-image', 'create', flow.source['id'],
                 '--name', 'golden', '--wait')
    record_time('capture: live-image create to image active', watch())
    flow.image = image
    assert image['status'] == 'active', image
    flow.before_capture = before

    server = demo.server(flow.source['id'])
    assert server['status'] == 'ACTIVE' and not server['OS-EXT-STS:task_state']
    # The same QEMU process, the same workload, still counting.
    assert guest.qemu_pid() == pid
    after = testbed.wait_counter(guest, before.counter + 2)
    assert after.token == before.token

    shown = demo('server', 'live-image', 'show', 'golden')
    assert shown['source_server'] == flow.source['id']
    listed = demo('server', 'live-image', 'list')
    assert [i['ID'] for i in listed] == [image['id']]


def test_3_three_clones_resume_with_identities_of_their_own(
        demo, compute, flow, tmp_path):
    # Every frame the clones send, from before their taps exist to after
    # their re-identification (test_3a reads it).
    tapwatch = netview.TapWatch(str(tmp_path)).start()
    try:
        watch = Stopwatch()
        # (--wait waits for the first server of the three.)
        demo('server', 'create', '--image', 'golden', '--flavor',
             'nls.small', '--network', demo.network, '--min', '3', '--max',
             '3', '--wait', 'clone')
        rows = demo('server', 'list', '--name', '^clone-')
        flow.clones = [{'id': row['ID']} for row in rows]
        assert len(rows) == 3, rows
        clones = flow.clones = [demo.wait_server(row['ID'], 'ACTIVE')
                                for row in rows]
        record_time('clone: create x3 to all ACTIVE', watch())
    finally:
        flow.frames = tapwatch.stop()

    guests = [compute.guest(s['id']) for s in clones]
    states = [wait_ready(g) for g in guests]
    record_time('clone: create x3 to all workloads ready', watch())
    for state in states:
        assert state.token == flow.before_capture.token
        assert state.counter >= flow.before_capture.counter

    source = testbed.read_identity(flow.source_guest)
    ids = [testbed.read_identity(g) for g in guests]
    for key in ('hostname', 'machine_id', 'ssh_ed25519', 'ssh_ecdsa',
                'ssh_rsa'):
        values = [i[key] for i in ids]
        assert len(set(values)) == 3, (key, values)
        assert source[key] not in values, key
    # Hostnames follow the servers' names; sshd was restarted with the
    # new keys and listens.
    assert sorted(i['hostname'] for i in ids) == sorted(
        s['name'] for s in clones)
    assert all(i['sshd'] != '0' for i in ids)
    # Entropy: each clone has a VM generation ID of its own, and its kernel
    # reseeded its RNG on the fork; the source never forked.
    genids = {g.genid() for g in guests} | {flow.source_guest.genid()}
    assert len(genids) == 4
    assert source['forked'] == '0'
    assert all(i['forked'] != '0' for i in ids), ids
    # The clock was set to the host's, not left at the capture's.
    for g in guests:
        assert abs(g.agent_command('guest-get-time') - time.time_ns()) < 3e9
    # nova-compute's account of each clone's re-identification.
    for clone in clones:
        lines = compute.log_lines(
            r'\[instance: %s\] Clone of live image .* re-identified'
            % clone['id'])
        assert lines, clone['id']
        for step in ('entropy', 'hostname', 'ssh_host_keys', 'machine_id',
                     'clock'):
            assert '%s done' % step in lines[-1], lines[-1]
    for clone in clones:
        launched = clone['OS-SRV-USG:launched_at']
        assert launched, clone


def _port(cli, server_id):
    """The server's one port: (id, MAC, fixed IPv4)."""
    rows = cli('port', 'list', '--server', server_id)
    assert len(rows) == 1, rows
    port = cli('port', 'show', rows[0]['ID'])
    return port['id'], port['mac_address'], port['fixed_ips'][0]['ip_address']


def test_3a_each_server_is_a_distinct_machine_on_its_own_port(
        demo, compute, flow):
    net = netview.ProjectNetwork(demo('network', 'show', demo.network)['id'])
    leases = net.leases()
    servers = [flow.source] + list(flow.clones)
    ports = [_port(demo, s['id']) for s in servers]
    assert len({p[1] for p in ports}) == len({p[2] for p in ports}) == 4
    _, source_mac, source_ip = ports[0]
    for server, (port_id, mac, ip) in zip(servers, ports):
        ident = testbed.read_identity(compute.guest(server['id']))
        # The guest's interface: its port's MAC and fixed IP, leased by
        # Neutron's dnsmasq to that MAC.
        assert ident['mac'] == mac, (server['name'], ident, mac)
        assert ident['ipv4'].split('/')[0] == ip, (server['name'], ident)
        assert leases.get(mac) == ip, (server['name'], mac, ip, leases)
        # Reachable on its own address, and the machine answering there is
        # this one (its own SSH host key, a TCP connection).
        net.wait_ping(ip)
        assert net.ssh_ed25519(ip) == ident['ssh_ed25519'], server['name']
        if server is flow.source:
            continue
        frames = flow.frames.get(netview.tap_name(port_id))
        # The clone's tap was watched from its first frame (its DHCP
        # request at least)...
        assert frames, (server['name'], sorted(flow.frames))
        # ...and nothing it sent ever carried its source's MAC or address.
        leaked = [f for f in frames if source_mac in (f['src'],
                                                      f.get('arp_mac'))
                  or f.get('ip') == source_ip]
        assert not leaked, (server['name'], leaked[:5])
        assert {f['src'] for f in frames} == {mac}, server['name']


def test_3c_security_groups_and_port_security_hold_for_clones(
        demo, compute, flow, tmp_path):
    net = netview.ProjectNetwork(demo('network', 'show', demo.network)['id'])
    servers = [flow.source] + list(flow.clones)
    ports = [_port(demo, s['id']) for s in servers]
    ips = [p[2] for p in ports]
    assert all(net.ssh_open(ip) for ip in ips)
    # The default group, which the source and its clones share, loses its
    # SSH rule: port 22 closes on every one of them, ICMP still passes.
    rules = demo('security', 'group', 'rule', 'list', 'default',
                 '--protocol', 'tcp', '--ingress')
    ssh_rule = [r for r in rules if r['Port Range'] == '22:22']
    assert len(ssh_rule) == 1, rules
    demo('security', 'group', 'rule', 'delete', ssh_rule[0]['ID'],
         parse=False)
    try:
        host_mod.wait_for(lambda: not any(net.ssh_open(ip) for ip in ips),
                          60, interval=0.5,
                          what='port 22 to close on the source and clones')
        assert all(net.answers_ping(ip) for ip in ips)
    finally:
        demo('security', 'group', 'rule', 'create', 'default', '--ingress',
             '--protocol', 'tcp', '--dst-port', '22', '--remote-ip',
             ips[0].rsplit('.', 1)[0] + '.0/24', parse=False)
    host_mod.wait_for(lambda: all(net.ssh_open(ip) for ip in ips), 60,
                      interval=0.5, what='port 22 to open again')

    # A clone that takes its source's address: what it sends from there
    # never reaches the network (port security's anti-spoofing); what it
    # sends from its own does. Both sent alike to the DHCP server, whose
    # namespace watches its tap.
    clone = compute.guest(flow.clones[0]['id'])
    _, clone_mac, clone_ip = ports[1]
    source_ip = ips[0]
    dhcp = [p for p in demo('port', 'list', '--network', demo.network,
                            '--device-owner', 'network:dhcp')]
    assert len(dhcp) == 1, dhcp
    dhcp_port = demo('port', 'show', dhcp[0]['ID'])
    dhcp_ip = dhcp_port['fixed_ips'][0]['ip_address']
    watch = netview.TapWatch(str(tmp_path), netns=net.netns).start()
    send = ('import socket, sys\n'
            'for src in sys.argv[1:3]:\n'
            '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
            '    s.bind((src, 0))\n'
            '    for _ in range(3):\n'
            '        s.sendto(b"nls", (sys.argv[3], 9))\n')
    try:
        rc, out, err = clone.agent_exec(['/bin/sh', '-c', (
            'ip addr add "$1/32" dev eth0 && '
            'ip neigh replace "$3" lladdr "$4" dev eth0 && '
            'python3 -c "$5" "$1" "$2" "$3"; rc=$?; '
            'ip addr del "$1/32" dev eth0; exit $rc'), 'sh', source_ip,
            clone_ip, dhcp_ip, dhcp_port['mac_address'], send])
        assert rc == 0, err
        host_mod.wait_for(
            lambda: any(f.get('ip') == clone_ip
                        for f in watch.frames_so_far()), 30, interval=0.2,
            what="the clone's datagrams from its own address to arrive")
    finally:
        frames = [f for fs in watch.stop().values() for f in fs]
    spoofed = [f for f in frames if f.get('ip') == source_ip
               and f['src'] == clone_mac]
    assert not spoofed, spoofed[:5]
    # The source still owns its address.
    net.wait_ping(source_ip)
    assert net.leases().get(ports[0][1]) == source_ip


def _restart_and_check(demo, compute, flow, service):
    """Restart ``service``; then every server must be ACTIVE and answer
    on its address, with the same ports on the bridge."""
    net = netview.ProjectNetwork(demo('network', 'show', demo.network)['id'])
    servers = [flow.source] + list(flow.clones)
    ports = [_port(demo, s['id']) for s in servers]
    bridge_ports = compute.ovs_ports()
    assert {netview.tap_name(p[0]) for p in ports} <= bridge_ports
    watch = Stopwatch()
    compute.restart(service=service)

    def whole():
        states = [demo.server(s['id'])['status'] for s in servers]
        assert 'ERROR' not in states, (service, states)
        return (states == ['ACTIVE'] * len(servers)
                and all(net.answers_ping(p[2]) for p in ports))
    host_mod.wait_for(whole, 240, interval=1, what='every server ACTIVE '
                      'and answering after %s restarted' % service)
    record_time('fault: %s restarted to all servers answering' % service,
                watch())
    # Nothing more, nothing less on the bridge; sshd (TCP) answers too.
    assert compute.ovs_ports() == bridge_ports, service
    assert all(net.ssh_open(p[2]) for p in ports), service
    # DHCP still serves: the dnsmasq of the network holds every lease.
    leases = net.leases()
    assert all(leases.get(p[1]) == p[2] for p in ports), leases


def test_3d_the_ovs_agent_restarted_while_clones_run(demo, compute, flow):
    _restart_and_check(demo, compute, flow, 'neutron-openvswitch-agent')


def test_3e_dhcp_agent_down_while_a_clone_spawns(demo, admin, compute, flow):
    bridge_ports = compute.ovs_ports()
    compute.restart(service='neutron-dhcp-agent', action='stop')
    try:
        try:
            demo('server', 'create', '--image', 'golden', '--flavor',
                 'nls.small', '--network', demo.network, '--wait',
                 'clone-nodhcp', parse=False)
        except conftest.CLIError:
            pass            # --wait fails on ERROR
        flow.measured.append(demo.server('clone-nodhcp'))
        server = host_mod.wait_for(
            lambda: (lambda s: s if s['status'] in ('ACTIVE', 'ERROR')
                     else None)(demo.server('clone-nodhcp')),
            600, interval=2, what='clone-nodhcp to be ACTIVE or ERROR')
    finally:
        compute.restart(service='neutron-dhcp-agent', action='start')
    record_time('fault: DHCP agent down, clone ended %s' % server['status'],
                0)
    instance = admin('server', 'show', server['id'])[
        'OS-EXT-SRV-ATTR:instance_name']
    if server['status'] == 'ERROR':
        # A fault that says why, and nothing of the clone on the host.
        assert server['fault']['message'], server
        assert instance not in compute.domain_names()
    else:
        port_id, mac, ip = _port(demo, server['id'])
        ident = testbed.read_identity(compute.guest(server['id']))
        assert ident['mac'] == mac and ident['ipv4'].split('/')[0] == ip
    ports = [r['ID'] for r in demo('port', 'list', '--server', server['id'])]
    demo('server', 'delete', '--wait', server['id'], parse=False)
    flow.measured = [m for m in flow.measured if m['id'] != server['id']]
    assert instance not in compute.domain_names()
    assert server['id'] not in compute.files(compute.instances)
    assert compute.ovs_ports() == bridge_ports
    for port_id in ports:
        assert demo.fails('port', 'show', port_id)


def test_3b_measure_a_clone_against_a_boot_from_a_plain_snapshot(
        demo, compute, flow):
    """The figures through Nova (a benchmark beside the scenarios, not a
    pass/fail timing): an ordinary snapshot of the same source booted to a
    ready workload, against one clone of the live image, one after the
    other in this run. The plain boot starts the workload afresh (a new
    token); the clone carries on with the source's."""
    watch = Stopwatch()
    demo('server', 'image', 'create', '--name', 'golden-plain', '--wait',
         flow.source['id'])
    flow.plain_image = True
    record_time('plain snapshot: image create to active', watch())
    results = {}
    for kind, image in (('plain', 'golden-plain'), ('clone', 'golden')):
        watch = Stopwatch()
        server = demo('server', 'create', '--image', image, '--flavor',
                      'nls.small', '--network', demo.network, '--wait',
                      'measure-%s' % kind)
        flow.measured.append(server)
        record_time('%s: create to ACTIVE' % kind, watch())
        state = wait_ready(compute.guest(server['id']))
        results[kind] = watch()
        record_time('%s: create to workload ready' % kind, results[kind])
        if kind == 'plain':
            assert state.token != flow.before_capture.token
        else:
            assert state.token == flow.before_capture.token
            _record_clone_timings(compute, server['id'])
    record_time('ratio: plain-snapshot boot / clone, to ready',
                results['plain'] / results['clone'])
    demo('server', 'delete', '--wait', *[s['id'] for s in flow.measured],
         parse=False)
    flow.measured = []
    demo('image', 'delete', 'golden-plain', parse=False)
    flow.plain_image = False


def _record_clone_timings(compute, server_id):
    """Where the clone's time went, from nova-compute's account of it."""
    lines = compute.log_lines(r'\[instance: %s\] Clone timings' % server_id)
    assert lines, server_id
    line = lines[-1]
    for what, pattern in (
            ('restore', r'restore ([\d.]+) s'),
            ('port wiring and resume', r'port wiring and resume ([\d.]+) s'),
            ('re-identification', r're-identification ([\d.]+) s'),
            ('DHCP lease', r'DHCP lease ([\d.]+) s')):
        match = re.search(pattern, line)
        if match:
            record_time('clone: %s' % what, float(match.group(1)))
    steps = re.search(r're-identification [\d.]+ s \((.*); DHCP', line)
    for step, seconds in re.findall(r'(\w+) ([\d.]+) s', steps.group(1)):
        record_time('clone: step %s' % step, float(seconds))


def test_4_deleting_clones_and_image_leaves_nothing(
        demo, admin, compute, flow):
    clones = flow.clones
    names = [compute.guest(s['id']).name for s in clones]
    demo('server', 'delete', '--wait', *[s['id'] for s in clones],
         parse=False)
    flow.clones = ()
    image = admin('image', 'show', flow.image['id'])
    memory_id = image['properties']['live_snapshot_memory_image']
    # The clones were restored from the host's cached stream.
    assert memory_id in compute.files(compute.cache_dir)
    demo('server', 'live-image', 'delete', 'golden', parse=False)
    flow.image = None

    assert not compute.domain_names() & set(names)
    assert not set(compute.files(compute.instances)) & {
        s['id'] for s in clones}
    # The memory stream leaves the compute host's cache at nova-compute's
    # next image cache pass ([image_cache] manager_interval, 15 s here).
    watch = Stopwatch()
    host_mod.wait_for(
        lambda: not [f for f in compute.files(compute.cache_dir)
                     if memory_id in f], 120, interval=1,
        what='the memory stream to leave the compute host cache')
    record_time('delete: image deleted to memory stream off the host',
                watch())
    assert not compute.files(compute.staging)
    assert not compute.files(compute.image_dir)
    listed = {i['ID'] for i in admin('image', 'list')} | {
        i['ID'] for i in admin('image', 'list', '--hidden')}
    assert not {image['id'], memory_id} & listed


def test_5_compute_killed_mid_capture_leaves_source_active_and_no_image(
        demo, admin, compute, flow):
    guest = flow.source_guest
    before = testbed.read_workload(guest)
    demo('server', 'live-image', 'create', flow.source['id'], '--name',
         'interrupted')

    def capturing():
        return [f for f in compute.files(compute.image_dir)
                if f.endswith('.capture.json')]
    host_mod.wait_for(capturing, 120, interval=0.02,
                      what='the capture to start on the compute host')
    compute.restart(kill=True)
    watch = Stopwatch()

    def recovered():
        server = demo.server(flow.source['id'])
        return (server['status'] == 'ACTIVE'
                and not server['OS-EXT-STS:task_state']
                and not capturing())
    host_mod.wait_for(recovered, 300, interval=1,
                      what='the source to be ACTIVE with no task and no '
                           'capture journal after the restart')
    record_time('restart: compute back to source recovered', watch())

    def image_gone():
        return not admin('image', 'list', '--name', 'interrupted')
    host_mod.wait_for(image_gone, 120, interval=1,
                      what='the interrupted image to be deleted')
    # The source runs on its own disk: the overlay was merged back.
    disks = guest.disk_sources()
    assert all(os.path.basename(d) == 'disk' for d in disks.values()), disks
    assert not compute.files(compute.staging)
    assert not compute.files(compute.image_dir)
    after = testbed.wait_counter(guest, before.counter + 2)
    assert after.token == before.token


@pytest.mark.xfail(strict=True, reason=(
    'On the userspace datapath the DHCP port is a tap of ovs-vswitchd: '
    'after a restart the new one is made in libvirtd\'s namespace and, '
    'moved into the qdhcp- namespace by the restarted DHCP agent, stays '
    'without carrier (seen 2026-12-03); a veth DHCP port (ovs_use_veth) '
    'would survive, but its checksums need offload off'))
def test_6_ovs_vswitchd_restarted_under_the_source(demo, compute, flow):
    # Last: it leaves the DHCP namespace without its port.
    _restart_and_check(demo, compute, flow, 'ovs-vswitchd')
