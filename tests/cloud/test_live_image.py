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
4. deleting the clones and the live image leaves no domain, instance
   directory, cached memory stream, staging file or Glance image;
5. a nova-compute killed in the middle of a capture comes back with the
   source ACTIVE on its own disk, the half-made image deleted and nothing
   left on the host.

Each step's wall time is recorded (see conftest.record_time).
"""

import os
import time

import pytest

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

from tests.cloud.conftest import record_time
from tests.cloud.conftest import Stopwatch
from tests.cloud.conftest import wait_ready


class Flow:
    """What the scenarios hand on to each other."""
    source = None
    source_guest = None
    before_capture = None
    image = None
    clones = ()
    measured = []
    plain_image = False


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
                  '--flavor', 'nls.small', '--nic', 'none', '--wait',
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
        demo, compute, flow):
    watch = Stopwatch()
    # (--wait waits for the first server of the three.)
    demo('server', 'create', '--image', 'golden', '--flavor', 'nls.small',
         '--nic', 'none', '--min', '3', '--max', '3', '--wait', 'clone')
    rows = demo('server', 'list', '--name', '^clone-')
    flow.clones = [{'id': row['ID']} for row in rows]
    assert len(rows) == 3, rows
    clones = flow.clones = [demo.wait_server(row['ID'], 'ACTIVE')
                            for row in rows]
    record_time('clone: create x3 to all ACTIVE', watch())

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
                      'nls.small', '--nic', 'none', '--wait',
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
    record_time('ratio: plain-snapshot boot / clone, to ready',
                results['plain'] / results['clone'])
    demo('server', 'delete', '--wait', *[s['id'] for s in flow.measured],
         parse=False)
    flow.measured = []
    demo('image', 'delete', 'golden-plain', parse=False)
    flow.plain_image = False


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
