"""Every clone becomes a distinct machine before its workload sees the
network: proven inside real guests, four clones of one image."""

import os
import re
import time

from lxml import etree
import pytest

from nova_live_snapshot import dhcphost
from nova_live_snapshot import exception
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

from tests.live.conftest import CLONES
from tests.live.conftest import NETWORK


def _sh(guest, script):
    rc, out, err = guest.agent_exec(['/bin/sh', '-c', script])
    assert rc == 0, err
    return out.decode().strip()


@pytest.fixture(scope='module')
def four(bed, golden):
    """Re-identified clones of the session's image (four unless
    NLS_IDENTITY_CLONES says otherwise)."""
    result, before, _ = golden
    clones = bed.spawn(result.image.name, count=CLONES)
    yield clones, [bed.host.lookup(c.name) for c in clones]
    bed.destroy_all(clones)


def test_every_step_is_reported(four):
    clones, _ = four
    for clone in clones:
        report = clone.identity
        assert report['agent'] and report['reset'], report
        steps = {s['step']: s['status'] for s in report['steps']}
        assert list(steps) == ['mac', 'entropy', 'hostname', 'ssh_host_keys',
                               'machine_id', 'clock', 'network', 'hooks']
        # The busybox guest has no sshd and no machine-id: reported, not
        # pretended.
        assert steps['ssh_host_keys'] == 'skipped'
        assert steps['machine_id'] == 'skipped'
        for step in ('mac', 'entropy', 'hostname', 'clock', 'network',
                     'hooks'):
            assert steps[step] == 'done', (step, report)


def test_guest_visible_macs_are_new_and_match_libvirt(four, source):
    clones, guests = four
    source_mac = _sh(source, 'cat /sys/class/net/eth0/address')
    seen = [_sh(g, 'cat /sys/class/net/eth0/address') for g in guests]
    assert len(set(seen)) == CLONES
    assert source_mac not in seen
    assert seen == [g.interface_macs()[0] for g in guests]
    assert seen == [c.mac for c in clones]


def test_hostnames_differ(four, source):
    clones, guests = four
    names = [_sh(g, 'hostname') for g in guests]
    assert len(set(names)) == CLONES
    assert _sh(source, 'hostname') not in names
    assert names == [c.identity['facts']['hostname'] for c in clones]


def test_clocks_are_set_to_the_host(four):
    _, guests = four
    for g in guests:
        guest_ns = g.agent_command('guest-get-time')
        assert abs(guest_ns - time.time_ns()) < 2e9


def test_each_clone_leases_its_own_address_and_answers_on_it(
        bed, four, source):
    """On the shared isolated network, each clone asked the network's DHCP
    server for a lease with its new MAC after its link came up: four
    distinct addresses, none the source's, each answering a ping from
    inside the network's namespace."""
    clones, guests = four
    source_addr = _sh(source, "ip -o -4 addr show dev eth0 | awk '{print $4}'")
    addrs = [c.identity['facts']['ipv4'] for c in clones]
    assert len(set(addrs)) == CLONES
    assert source_addr not in addrs
    for addr, g, c in zip(addrs, guests, clones):
        assert addr.startswith('10.77.')
        # The address of the clone's own static DHCP entry.
        assert addr.split('/')[0] == c.address, (addr, c)
        assert addr in _sh(g, 'ip -o -4 addr show dev eth0')
        assert bed.ping(addr.split('/')[0]), addr
    # No clone ever spoke as the source: the bridge still forwards the
    # source's MAC to the source's own port, and no neighbour entry maps the
    # source's address to a clone's MAC.
    source_mac = _sh(source, 'cat /sys/class/net/eth0/address')
    source_port = etree.fromstring(source.xml().encode()).find(
        'devices/interface/target').get('dev')
    fdb = [line for line in bed.netns_run('bridge', 'fdb', 'show', 'br',
                                          'nlsbr0').splitlines()
           if line.startswith(source_mac + ' ')]
    # The source is quiet on the network: its own entry may have aged out
    # (the bridge forgets a MAC after 300 s); a clone that had sent with the
    # source's MAC since its spawn, minutes ago, would have left one on its
    # own port.
    assert all(' dev %s ' % source_port in line for line in fdb), fdb
    neigh = bed.netns_run('ip', 'neigh', 'show', source_addr.split('/')[0])
    assert not any(c.mac in neigh for c in clones), neigh


def test_a_clones_dhcp_entry_is_made_with_it_and_removed_with_it(
        bed, golden):
    """Each clone's address is a static host entry of the network (its
    MAC, its name, an address outside the dynamic range), there before
    the clone's DHCP request and gone when the clone is destroyed; its
    lease is not, so the next clone takes another address."""
    result, _, _ = golden
    clones = bed.spawn(result.image.name, count=2)
    try:
        xml = bed.host.network_xml(NETWORK)
        for clone in clones:
            assert dhcphost.static_address(xml, clone.name) == clone.address
            assert clone.identity['facts']['ipv4'].split('/')[0] == \
                clone.address
            assert "mac='%s'" % clone.mac in xml or \
                'mac="%s"' % clone.mac in xml
        assert clones[0].address != clones[1].address
        # Outside the range dnsmasq leases dynamically (10.77.1.1-...).
        assert all(c.address.startswith('10.77.0.') for c in clones)
    finally:
        bed.destroy_all(clones)
    xml = bed.host.network_xml(NETWORK)
    for clone in clones:
        assert dhcphost.static_address(xml, clone.name) is None
        assert clone.mac not in xml
    # dnsmasq still holds the destroyed clones' leases (until they expire;
    # libvirt lists one once dnsmasq's lease script has run) and would not
    # serve those addresses to another MAC: the next clone gets another
    # address, no listed lease's, and leases exactly it.
    leased = bed.host.dhcp_leased_addresses(NETWORK)
    later = bed.spawn(result.image.name, count=1)
    try:
        assert later[0].address not in {c.address for c in clones} | leased
        assert later[0].identity['facts']['ipv4'].split('/')[0] == \
            later[0].address
    finally:
        bed.destroy_all(later)


def test_a_restored_clone_is_off_the_network_until_re_identified(
        bed, golden):
    """QEMU takes a restored NIC's link state from the migration stream
    (the source's: up), whatever the clone's XML says. An exact copy on the
    shared network, never re-identified and so kept off it, sees no carrier
    and gets no DHCP lease, though its DHCP client asks with the source's
    identity."""
    result, _, _ = golden
    copies = bed.spawn(result.image.name, exact_copy=True)
    try:
        copy = bed.host.lookup(copies[0].name)
        # (carrier, lease)
        assert bed.on_the_network(copy) == (False, False)
    finally:
        bed.destroy_all(copies)


def test_operator_hooks_ran_last_with_the_new_name_and_uuid(four):
    clones, guests = four
    for clone, g in zip(clones, guests):
        assert _sh(g, 'cat /run/clone-hook.out') == 'name=%s uuid=%s' % (
            clone.name, clone.uuid)


def _first_random_bytes(guest):
    """Wait for /run/first-random without starting a process in the guest
    (every exec draws random numbers: the wait must not change what it
    waits for), then return it with the guest kernel's trace of its CRNG
    (written before it)."""
    def read():
        try:
            data = guest.agent_read_file('/run/first-random')
        except exception.GuestAgentError:
            return None
        return data if len(data) == 32 else None
    data = host_mod.wait_for(read, 60, interval=0.5,
                             what='/run/first-random in %s' % guest.name)
    return data, guest.agent_read_file('/run/crng-trace').decode()


# The guest kernel's function tracer on the two CRNG functions that matter:
# crng_reseed (the base key changes, from an input pool that differs between
# copies) and crng_make_state (every draw, which advances the per-CPU key).
_TRACE = '/sys/kernel/tracing'
_TRACE_ON = (
    'T=%(t)s; mountpoint -q $T || mount -t tracefs nodev $T; '
    'echo "crng_reseed crng_make_state" > $T/set_ftrace_filter; '
    'echo function > $T/current_tracer; echo > $T/trace; '
    'echo 1 > $T/tracing_on' % {'t': _TRACE})
# Reseed from the host's seed, mark the trace, then read 1 s later; the trace
# is kept before the bytes, so that the bytes' presence means both are there.
_READER = (
    'T=%(t)s; (/usr/sbin/nls-reseed < /run/seed; '
    'echo nls-reseeded > $T/trace_marker; sleep 1; '
    'head -c 32 /dev/urandom > /run/first.tmp; '
    'echo nls-read > $T/trace_marker; cat $T/trace > /run/crng-trace.tmp; '
    'mv /run/crng-trace.tmp /run/crng-trace; '
    'mv /run/first.tmp /run/first-random) >/dev/null 2>&1 &' % {'t': _TRACE})
_TRACE_LINE = re.compile(r'^\s*(?P<comm>.+)-\d+\s+\[\d+\]\s+\S+\s+'
                         r'[\d.]+:\s+(?P<event>.+?)\s*$')


def crng_history(trace):
    """What the kernel's CRNG did between the host's reseed and the read of
    /dev/urandom: the (process, function, caller) of every draw and reseed,
    in order, up to and including the reader's draw.

    Two exact copies resume with one CRNG state; they read the same bytes if
    and only if the same draws happened in the same order and no reseed
    (which mixes an input pool that differs between copies) came between.
    """
    events, started = [], False
    for line in trace.splitlines():
        m = _TRACE_LINE.match(line)
        if m is None or line.startswith('#'):
            continue
        comm, event = m.group('comm').strip(), m.group('event')
        if event.endswith('nls-reseeded'):
            events, started = [], True
            continue
        if not started:
            continue
        events.append((comm, event))
        if comm == 'head' and event.endswith('<-get_random_bytes_user'):
            return tuple(events)
    raise AssertionError('no read of /dev/urandom after the reseed in the '
                         'guest kernel trace:\n%s' % trace[-2000:])


def test_first_random_bytes_differ_and_would_not_without_the_reset(bed):
    """The first 32 bytes each re-identified clone reads from /dev/urandom
    right after spawn differ across clones. Control: from a source whose
    kernel ignores the VM generation ID (its vmgenid driver unbound, as in
    kernels without CONFIG_VMGENID), exact copies without re-identification
    read the same 32 bytes whenever their kernels did the same thing.

    The control's read is made inside the guest by a process the source
    starts just before the capture: it reseeds the CRNG, then reads 1 s of
    guest time later. What happens in between differs from copy to copy
    after the restore: other processes draw random numbers in an order that
    depends on scheduling, and the kernel reseeds on a timer from a pool
    that differs between copies. Rather than trust a time window, the
    guest kernel's function tracer records every CRNG draw and reseed in
    each copy (``crng_history``): copies with the same history must read the
    same bytes, and at least two copies must share one (more are spawned,
    up to six, until two do). The source's own workload, the one process
    that draws on its own schedule, is stopped before the capture, and the
    source runs to 120 s of uptime, after which the timed reseed comes every
    60 s.
    """
    # QEMU's user-mode network: the exact copies keep their link up as
    # captured (a link change, or traffic on a shared network, makes each
    # copy's kernel draw random numbers at its own moments).
    eng = bed.engine_with(clone_network=None)
    name = bed.name('entropy')
    guest = bed.guest_image.boot(bed.host, name, network=None)
    testbed.wait_ready(guest, timeout=180)
    try:
        _sh(guest, 'for d in /sys/bus/acpi/drivers/vmgenid/*:*; do '
                   'echo "${d##*/}" > /sys/bus/acpi/drivers/vmgenid/unbind; '
                   'done; ! ls /sys/bus/acpi/drivers/vmgenid/ | grep -q :')
        host_mod.wait_for(
            lambda: float(_sh(guest, 'cut -d" " -f1 /proc/uptime')) >= 120,
            240, interval=2, what='120 s of guest uptime')
        _sh(guest, _TRACE_ON)
        _sh(guest, 'kill -STOP $(pidof workload)')
        guest.agent_write_file('/run/seed', os.urandom(64))
        _sh(guest, _READER)
        image = eng.capture(guest.name, bed.name('entropy')).image
        assert image.manifest.capture['pause_ms'] < 1000

        by_history = {}
        for batch in (3, 1, 1, 1):
            copies = bed.spawn(image.name, count=batch, exact_copy=True,
                               engine=eng)
            try:
                for c in copies:
                    data, trace = _first_random_bytes(bed.host.lookup(c.name))
                    by_history.setdefault(crng_history(trace), []).append(
                        data)
            finally:
                bed.destroy_all(copies, engine=eng)
            if any(len(v) >= 2 for v in by_history.values()):
                break
        clones = bed.spawn(image.name, count=3, engine=eng)
        try:
            reset = [bed.host.lookup(c.name).agent_read_file(
                '/dev/urandom', limit=32) for c in clones]
        finally:
            bed.destroy_all(clones, engine=eng)
        control = [d for v in by_history.values() for d in v]
        assert all(len(b) == 32 for b in control + reset)
        shared = [v for v in by_history.values() if len(v) >= 2]
        assert shared, ('control: no two exact copies had the same CRNG '
                        'history: %s' % list(by_history))
        for same in shared:
            assert len(set(same)) == 1, (
                'control: exact copies with one CRNG history should agree')
        assert len(set(reset)) == 3
        assert not set(control) & set(reset)
        eng.delete_image(image.name)
    finally:
        bed.guest_image.remove(bed.host, guest.name)


@pytest.fixture(scope='module')
def agentless(bed):
    """An image of a guest whose agent was stopped before the capture."""
    guest = bed.boot('noagent')
    rc, _, err = guest.agent_exec(
        ['/bin/sh', '-c', '(sleep 1; kill $(cat /run/qemu-ga.pid)) '
                          '>/dev/null 2>&1 &'])
    assert rc == 0, err
    host_mod.wait_for(lambda: not guest.agent_ping(timeout=1), 30,
                      what='the agent of %s to stop' % guest.name)
    image = bed.engine.capture(guest.name, bed.name('noagent')).image
    yield image
    bed.guest_image.remove(bed.host, guest.name)


def test_no_agent_refuses_by_default_and_leaves_nothing(bed, agentless):
    eng = bed.engine_with(agent_timeout=5)
    before = set(os.listdir(eng.clones.root))
    domains = set(bed.our_domains())
    with pytest.raises(exception.CloneSpawnFailed,
                       match='guest agent did not answer within 5 s.*'
                             'require_guest_agent'):
        bed.spawn(agentless.name, count=2, engine=eng)
    assert set(os.listdir(eng.clones.root)) == before
    assert set(bed.our_domains()) == domains


def test_no_agent_permissive_spawns_and_says_so(bed, agentless):
    eng = bed.engine_with(agent_timeout=5, require_guest_agent=False)
    clones = bed.spawn(agentless.name, engine=eng)
    try:
        report = clones[0].identity
        assert report['agent'] is False and report['reset'] is False
        assert 'did not answer' in report['steps'][0]['detail']
        assert bed.host.lookup(clones[0].name).is_running()
    finally:
        bed.destroy_all(clones, engine=eng)


def test_a_failed_step_fails_the_spawn_and_leaves_nothing(bed):
    """An operator hook that fails makes re-identification fail: the clone
    is destroyed and the error names the step."""
    guest = bed.boot('failhook')
    try:
        guest.agent_write_file('/etc/nova-live-snapshot/clone.d/20-fail',
                               b'#!/bin/sh\necho refusing >&2\nexit 7\n')
        _sh(guest, 'chmod 755 /etc/nova-live-snapshot/clone.d/20-fail')
        image = bed.engine.capture(guest.name, bed.name('failhook')).image
        before = set(os.listdir(bed.engine.clones.root))
        domains = set(bed.our_domains())
        with pytest.raises(exception.CloneSpawnFailed,
                           match='re-identification failed: hooks'):
            bed.spawn(image.name, count=2)
        assert set(os.listdir(bed.engine.clones.root)) == before
        assert set(bed.our_domains()) == domains
        bed.engine.delete_image(image.name)
    finally:
        bed.guest_image.remove(bed.host, guest.name)
