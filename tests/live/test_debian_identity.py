"""Re-identification on a real Debian guest: systemd, sshd, machine-id,
systemd-networkd with DHCP on the shared test network. Four clones of one
live image (NLS_IDENTITY_CLONES) must share none of the identity that
matters."""

import subprocess
import time

import pytest

from nova_live_snapshot import testbed

from tests.live.conftest import CLONES


@pytest.fixture(scope='module')
def debian_clones(bed, debian):
    image, source = debian
    before = testbed.read_workload(source)
    live = bed.engine.capture(source.name, bed.name('debimg')).image
    clones = bed.spawn(live.name, count=CLONES)
    yield source, before, clones, [bed.host.lookup(c.name) for c in clones]
    bed.destroy_all(clones)
    bed.engine.delete_image(live.name)


def test_debian_clones_resume_the_workload(debian_clones):
    _, before, _, guests = debian_clones
    for g in guests:
        state = testbed.read_workload(g)
        assert state.token == before.token
        assert state.counter >= before.counter


def test_every_step_done_on_debian(debian_clones):
    _, _, clones, _ = debian_clones
    for clone in clones:
        steps = {s['step']: s['status'] for s in clone.identity['steps']}
        assert clone.identity['reset'], clone.identity
        assert all(status == 'done' for step, status in steps.items()
                   if step != 'hooks'), clone.identity


def test_host_keys_machine_ids_hostnames_and_macs_all_differ(debian_clones):
    source, _, clones, guests = debian_clones
    src = testbed.read_identity(source)
    ids = [testbed.read_identity(g) for g in guests]
    for key in ('mac', 'hostname', 'machine_id', 'ssh_ed25519', 'ssh_ecdsa',
                'ssh_rsa'):
        values = [i[key] for i in ids]
        assert len(set(values)) == CLONES, (key, values)
        assert src[key] not in values, key
    assert [i['mac'] for i in ids] == [g.interface_macs()[0] for g in guests]
    # sshd was restarted with the new keys and listens.
    assert all(i['sshd'] != '0' for i in ids)


def test_debian_clones_lease_distinct_addresses(bed, debian_clones):
    source, _, clones, guests = debian_clones
    src = testbed.read_identity(source)['ipv4']
    addrs = [testbed.read_identity(g)['ipv4'] for g in guests]
    assert len(set(addrs)) == CLONES and src not in addrs
    for addr in addrs:
        assert addr.startswith('10.77.')
        assert bed.ping(addr.split('/')[0]), addr


def test_debian_clocks_match_the_host(debian_clones):
    _, _, _, guests = debian_clones
    for g in guests:
        assert abs(g.agent_command('guest-get-time') - time.time_ns()) < 2e9


def test_sshd_was_reloaded_and_offers_only_the_new_host_keys(
        bed, debian_clones):
    """sshd is reloaded (SIGHUP: it re-executes and reads the keys before
    it listens again), not restarted. What it offers on each clone's new
    address, asked from the test network, is that clone's new key of each
    type, never the source's, and the report says how sshd took them."""
    source, _, clones, guests = debian_clones
    src = testbed.read_identity(source)
    for clone, guest in zip(clones, guests):
        keys = next(s for s in clone.identity['steps']
                    if s['step'] == 'ssh_host_keys')
        assert 'reloaded (SIGHUP)' in keys['detail'], keys
        assert 'listens again' in keys['detail'], keys
        ids = testbed.read_identity(guest)
        addr = clone.identity['facts']['ipv4'].split('/')[0]
        for key_type in ('ed25519', 'ecdsa', 'rsa'):
            offered = bed.netns_run('ssh-keyscan', '-T', '30', '-t',
                                    key_type, addr)
            assert offered.strip(), (key_type, addr)
            listed = subprocess.run(['ssh-keygen', '-lf', '-'],
                                    input=offered, capture_output=True,
                                    text=True, check=True).stdout.split()
            assert listed[1] == ids['ssh_%s' % key_type], key_type
            assert listed[1] != src['ssh_%s' % key_type], key_type
