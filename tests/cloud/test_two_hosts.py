"""A live image captured on one compute host serves clones on another.

Host A is the machine's libvirtd; host B a libvirtd, virtlogd and Open
vSwitch of its own in mount, UTS and network namespaces of their own
(tools/cloud/computehost.py), in availability zone ``nls-b``. In order:

1. a Debian source boots on host A (no zone named: host A's) and its live
   image is captured there; host A's cache holds the memory stream it
   captured; the image requires the compatibility traits of what captured
   it (architecture, machine type, QEMU release, CPU model), which both
   hosts' resource providers carry;
2. a clone asked for in host B's zone lands on host B, in host B's libvirtd
   and not host A's: the memory stream was fetched from Glance onto host B
   (one download of the memory image in Glance's log, one fetch in host B's
   nova-compute log), verified against the signed SHA-256 (the cached
   stream's own hash is the record's) and cached there; the clone resumes
   the source's workload with an identity of its own, on its own Neutron
   port: its port's MAC and fixed IP, leased by the DHCP server on host A
   across the wire between the hosts, answering on that address (ping and
   sshd with its own host key);
3. a second clone on host B restores from host B's cache: no second
   download from Glance, the same cached file, and a machine distinct from
   the first clone;
4. deleting the clones and the live image prunes the memory stream from
   both hosts' caches and leaves no domain or instance directory on host B.
"""

import hashlib
import os
import re

import openstack
import pytest

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

from tests.cloud import conftest
from tests.cloud.conftest import record_time
from tests.cloud.conftest import Stopwatch
from tests.cloud.conftest import wait_ready
from tests.cloud import netview

IMAGE = 'two-host-golden'
GLANCE_LOG = os.path.join(conftest.CLOUD_DIR, 'logs', 'glance-api.log')


class Flow:
    """What the scenarios hand on to each other."""
    source = None
    source_guest = None
    before_capture = None
    image = None
    memory_id = None
    memory_sha256 = None
    clones = []
    identities = []


@pytest.fixture(scope='module')
def flow(demo):
    state = Flow()
    state.clones, state.identities = [], []
    yield state
    for server in list(state.clones) + [state.source]:
        if server:
            demo('server', 'delete', '--wait', server['id'], parse=False)
    if state.image:
        demo('server', 'live-image', 'delete', IMAGE, parse=False)


def _glance_downloads(image_id):
    """How many times Glance served ``image_id``'s data (its access log)."""
    pattern = re.compile(r'"GET /v2/images/%s/file HTTP/[0-9.]+" 200 '
                         % image_id)
    with open(GLANCE_LOG, errors='replace') as f:
        return sum(1 for line in f if pattern.search(line))


def _provider_traits(node):
    """The traits of compute node ``node``'s resource provider."""
    os.environ['OS_CLIENT_CONFIG_FILE'] = conftest.CLOUDS_YAML
    conn = openstack.connect(cloud='nls-admin')
    rps = list(conn.placement.resource_providers(name=node))
    assert len(rps) == 1, (node, rps)
    return set(conn.placement.get(
        '/resource_providers/%s/traits' % rps[0].id,
        microversion='1.6').json()['traits'])


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _port(cli, server_id):
    rows = cli('port', 'list', '--server', server_id)
    assert len(rows) == 1, rows
    port = cli('port', 'show', rows[0]['ID'])
    return port['mac_address'], port['fixed_ips'][0]['ip_address']


def _clone_on_b(demo, admin, compute_b, name):
    watch = Stopwatch()
    demo('server', 'create', '--image', IMAGE, '--flavor', 'nls.small',
         '--network', demo.network, '--availability-zone', compute_b.zone,
         '--wait', name, parse=False)
    server = demo.server(name)
    record_time('two hosts: %s create to ACTIVE' % name, watch())
    assert server['status'] == 'ACTIVE', server
    assert admin.server(server['id'])['OS-EXT-SRV-ATTR:host'] == \
        compute_b.name
    return server, watch


def _check_distinct_machine(demo, flow, compute_b, server, others, watch):
    """``server`` on host B resumed the source's workload as a machine of
    its own on its own port; returns its identity."""
    guest = compute_b.guest(server['id'])
    state = wait_ready(guest)
    # The benchmark of issue 13 beside the scenario, never a pass/fail
    # timing: a host's first clone of an image (download and verification
    # included) against its next (from its cache).
    record_time('two hosts: %s create to workload ready' % server['name'],
                watch())
    assert state.token == flow.before_capture.token
    assert state.counter >= flow.before_capture.counter
    ident = testbed.read_identity(guest)
    mac, ip = _port(demo, server['id'])
    assert ident['mac'] == mac, ident
    assert ident['ipv4'].split('/')[0] == ip, ident
    for other in others:
        for key in ('hostname', 'machine_id', 'ssh_ed25519', 'mac',
                    'ipv4'):
            assert ident[key] != other[key], key
    net = netview.ProjectNetwork(demo('network', 'show', demo.network)['id'])
    # The DHCP server runs on host A: the lease crossed the wire.
    assert net.leases().get(mac) == ip
    net.wait_ping(ip)
    assert net.ssh_ed25519(ip) == ident['ssh_ed25519']
    return ident


def test_1_capture_on_host_a(demo, admin, compute, compute_b, flow):
    server = demo('server', 'create', '--image', 'debian-guest', '--flavor',
                  'nls.small', '--network', demo.network, '--wait',
                  'two-host-source')
    flow.source = server
    assert admin.server(server['id'])['OS-EXT-SRV-ATTR:host'] == compute.name
    flow.source_guest = compute.guest(server['id'])
    wait_ready(flow.source_guest)
    flow.before_capture = testbed.read_workload(flow.source_guest)
    watch = Stopwatch()
    image = demo('server', 'live-image', 'create', server['id'], '--name',
                 IMAGE, '--wait')
    record_time('two hosts: capture on A to image active', watch())
    flow.image = image
    assert image['status'] == 'active', image
    props = admin('image', 'show', image['id'])['properties']
    flow.memory_id = props['live_snapshot_memory_image']
    flow.memory_sha256 = props['live_snapshot_memory_sha256']
    required = {k[len('trait:'):] for k, v in props.items()
                if k.startswith('trait:') and v == 'required'}
    assert 'CUSTOM_LIVE_SNAPSHOT' in required, props
    kinds = {t.split('_')[3] for t in required
             if t.startswith('CUSTOM_LIVE_SNAPSHOT_')}
    assert kinds >= {'ARCH', 'MACHINE', 'QEMU'}, required
    assert 'CUSTOM_LIVE_SNAPSHOT_MACHINE_%s' % re.sub(
        r'[^A-Z0-9]', '_', props['live_snapshot_machine'].upper()) in required
    for host in (compute, compute_b):
        node = admin('hypervisor', 'list', '--matching', host.name)
        assert len(node) == 1, node
        assert required <= _provider_traits(node[0]['Hypervisor Hostname'])
    # Host A keeps the stream it captured; Glance has served it to nobody.
    assert flow.memory_id in compute.files(compute.cache_dir)
    assert _glance_downloads(flow.memory_id) == 0


def test_2_a_clone_on_host_b_fetches_verifies_and_caches_the_stream(
        demo, admin, compute, compute_b, flow):
    assert flow.memory_id not in compute_b.files(compute_b.cache_dir)
    server, watch = _clone_on_b(demo, admin, compute_b, 'two-host-clone-1')
    flow.clones.append(server)
    instance = admin.server(server['id'])['OS-EXT-SRV-ATTR:instance_name']
    # Host B's libvirtd runs it; host A's knows nothing of it.
    assert instance in compute_b.domain_names()
    assert instance not in compute.domain_names()
    assert server['id'] in compute_b.files(compute_b.instances)
    # Fetched from Glance once, by host B, and verified before use.
    assert _glance_downloads(flow.memory_id) == 1
    fetched = compute_b.log_lines(r'Fetched memory stream %s .* SHA-256 '
                                  r'verified' % flow.memory_id)
    assert len(fetched) == 1, fetched
    assert not compute.log_lines(r'Fetched memory stream %s'
                                 % flow.memory_id)
    record_time('two hosts: first clone on B, stream fetch (s)', float(
        re.search(r'in ([\d.]+) s', fetched[0]).group(1)))
    cached = os.path.join(compute_b.cache_dir, flow.memory_id)
    with open(cached + '.sha256') as f:
        assert f.read() == flow.memory_sha256
    assert _sha256(cached) == flow.memory_sha256
    source = testbed.read_identity(flow.source_guest)
    flow.identities = [_check_distinct_machine(demo, flow, compute_b, server,
                                               [source], watch)]


def test_3_a_second_clone_on_host_b_uses_its_cache(
        demo, admin, compute_b, flow):
    cached = os.path.join(compute_b.cache_dir, flow.memory_id)
    inode = os.stat(cached).st_ino
    server, watch = _clone_on_b(demo, admin, compute_b, 'two-host-clone-2')
    flow.clones.append(server)
    assert _glance_downloads(flow.memory_id) == 1
    assert len(compute_b.log_lines(r'Fetched memory stream %s'
                                   % flow.memory_id)) == 1
    assert len(compute_b.log_lines(r'Memory stream %s .* served from this '
                                   r'host' % flow.memory_id)) == 1
    assert os.stat(cached).st_ino == inode
    source = testbed.read_identity(flow.source_guest)
    _check_distinct_machine(demo, flow, compute_b, server,
                            [source] + flow.identities, watch)


def test_4_deleting_the_live_image_prunes_both_hosts(
        demo, admin, compute, compute_b, flow):
    ids = [s['id'] for s in flow.clones]
    names = [admin.server(i)['OS-EXT-SRV-ATTR:instance_name'] for i in ids]
    demo('server', 'delete', '--wait', *ids, parse=False)
    flow.clones = []
    assert not compute_b.domain_names() & set(names)
    assert not set(compute_b.files(compute_b.instances)) & set(ids)
    assert flow.memory_id in compute.files(compute.cache_dir)
    assert flow.memory_id in compute_b.files(compute_b.cache_dir)
    demo('server', 'live-image', 'delete', IMAGE, parse=False)
    flow.image = None
    watch = Stopwatch()

    def pruned():
        return not [f for c in (compute, compute_b)
                    for f in c.files(c.cache_dir) if flow.memory_id in f]
    # At each host's next image cache pass (15 s here).
    host_mod.wait_for(pruned, 120, interval=1, what='the memory stream to '
                      'leave both hosts\' caches')
    record_time('two hosts: image deleted to stream off both hosts', watch())
    listed = {i['ID'] for i in admin('image', 'list', '--hidden')}
    assert flow.memory_id not in listed
