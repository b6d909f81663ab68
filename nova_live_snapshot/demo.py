"""``nova-live-snapshot demo``: the whole idea in one run on the local host.

Boots the test guest, waits until its workload is ready, captures a live
image while it runs, spawns clones concurrently, and shows what each clone
resumed beside the source. Removes everything it made unless asked to keep
the clones.

By default on the Debian guest on the isolated test network (``make demo``):
there the source also runs a workload that warms up in memory before it
serves on a TCP port, and the demo times cold boot and warm-up until it
serves against one clone until it serves on its new address, then shows
every identity row (MAC, hostname, SSH host key, machine-id, address) of
the source and the clones as each guest reports it. With the busybox guest
(``--busybox``) it shows the resumed counters and what identity that guest
has.
"""

import contextlib
import os
import sys
import time
import uuid as uuidlib

from nova_live_snapshot.bench import workload
from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import testbed
from nova_live_snapshot import waiting

__all__ = ['run']


class Progress:
    def __init__(self, stream, quiet=False):
        self.stream = stream
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message):
        if not self.quiet:
            print('[%6.1fs] %s' % (time.monotonic() - self.started, message),
                  file=self.stream, flush=True)


_IDENTITY_SCRIPT = r'''
ifc=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
echo "mac=$(cat /sys/class/net/$ifc/address 2>/dev/null)"
echo "hostname=$(hostname)"
key=$(ls /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null)
[ -n "$key" ] && echo "ssh_host_key=$(ssh-keygen -lf "$key" | cut -d' ' -f2)"
[ -f /etc/machine-id ] && echo "machine_id=$(cat /etc/machine-id)"
true
'''


def read_identity(guest):
    """What the guest itself says it is (read inside, through the agent)."""
    _, out, _ = guest.agent_exec(['/bin/sh', '-c', _IDENTITY_SCRIPT])
    found = dict(line.split('=', 1) for line in out.decode().splitlines()
                 if '=' in line)
    return {key: found.get(key) for key in
            ('mac', 'hostname', 'ssh_host_key', 'machine_id')}


def read_debian_identity(guest):
    """The identity rows of a Debian guest, read inside it."""
    # A busy host makes the guest slow: a generous timeout.
    facts = testbed.read_identity(guest, timeout=180)
    return {'mac': facts.get('mac'), 'hostname': facts.get('hostname'),
            'ssh_host_key': facts.get('ssh_ed25519'),
            'machine_id': facts.get('machine_id'),
            'address': facts.get('ipv4') or None}


def run(conf, clones=3, keep=False, progress=None, netns=None,
        warm_cpu_s=10):
    """Run the demo; returns the result dict the command prints.

    With ``netns`` (the namespace of ``conf.clone_network``), the guest in
    ``conf.test_guest_dir`` must be the Debian guest: the demo then adds the
    workload that warms up for ``warm_cpu_s`` seconds of CPU and the
    cold-to-ready against clone-to-ready comparison.
    """
    progress = progress or Progress(sys.stderr)
    session = _Session(conf, keep, progress)
    try:
        if netns:
            return _run_debian(session, clones, netns, warm_cpu_s)
        return _run_busybox(session, clones)
    finally:
        session.close()


class _Session:
    """What one demo run uses and makes; :meth:`close` removes what it
    made unless asked to keep it."""

    def __init__(self, conf, keep, progress):
        self.eng = engine_mod.Engine(conf)
        work = os.path.join(os.path.dirname(conf.image_dir.rstrip('/')),
                            'demo')
        self.guest_image = testbed.TestGuest(conf.test_guest_dir, work,
                                             network=conf.clone_network)
        tag = uuidlib.uuid4().hex[:6]
        self.source_name = 'nls-demo-%s' % tag
        self.image_name = 'demo-%s' % tag
        self.spawned = []
        self.keep = keep
        self.progress = progress

    def close(self):
        if self.keep:
            return
        self.progress('cleaning up')
        for clone in self.spawned:
            with contextlib.suppress(Exception):
                self.eng.destroy(clone.name)
        with contextlib.suppress(Exception):
            self.eng.delete_image(self.image_name, destroy_clones=True)
        self.guest_image.remove(self.eng.host, self.source_name)


def _capture(session, source, result):
    """Capture the source into the session's image; the capture result
    and the workload state read just after it."""
    cap = session.eng.capture(session.source_name, session.image_name)
    after = testbed.read_workload(source)
    result.update({
        'capture_pause_ms': round(cap.pause_ms, 1),
        'capture_s': round(cap.duration_s, 2),
        'memory_staged': cap.memory_staged,
        'memory_mib_on_disk': round(
            cap.image.manifest.files['memory']['size'] / 2 ** 20, 1)})
    return cap, after


def _run_busybox(session, clones):
    eng, guest_image = session.eng, session.guest_image
    progress, spawned = session.progress, session.spawned
    source_name, image_name = session.source_name, session.image_name
    result = {'source': {'name': source_name}, 'image': image_name}
    progress('booting source %s from the test guest (TCG)' % source_name)
    t0 = time.monotonic()
    source = guest_image.boot(eng.host, source_name)
    ready = testbed.wait_ready(source, timeout=300)
    result['cold_boot_s'] = round(time.monotonic() - t0, 2)
    progress('source ready after %.1f s (token %s)'
             % (result['cold_boot_s'], ready.token))
    # Let the counter advance so that "resumed, not rebooted" shows.
    before = testbed.read_workload(source)
    before = testbed.wait_counter(source, before.counter + 2)

    progress('capturing live image %s while the workload runs'
             % image_name)
    cap, after = _capture(session, source, result)
    result['source'].update({
        'identity': read_identity(source),
        'uuid': source.uuid, 'token': before.token,
        'counter_before_capture': before.counter,
        'counter_after_capture': after.counter,
        'running': source.is_running()})
    progress('captured in %.2f s; source paused %.0f ms and kept running '
             '(counter %d -> %d)' % (cap.duration_s, cap.pause_ms,
                                     before.counter, after.counter))

    progress('spawning %d clones concurrently' % clones)
    t0 = time.monotonic()
    spawned += eng.spawn(image_name, count=clones)
    result['clones_wall_s'] = round(time.monotonic() - t0, 2)
    result['clone_spawn_s'] = [c.spawn_s for c in spawned]
    result['clone_restore_s'] = [c.restore_s for c in spawned]
    result['clones'] = []
    for clone in spawned:
        guest = eng.host.lookup(clone.name)
        state = testbed.read_workload(guest)
        identity = read_identity(guest)
        identity['report'] = clone.identity
        result['clones'].append({
            'identity': identity,
            'name': clone.name, 'uuid': clone.uuid, 'mac': clone.mac,
            'genid': clone.genid, 'spawn_s': clone.spawn_s,
            'counter': state.counter, 'token': state.token,
            'resumed': (state.token == before.token
                        and state.counter >= before.counter)})
        progress('clone %s up in %.2f s: counter %d, token %s'
                 % (clone.name, clone.spawn_s, state.counter, state.token))
    result['source']['counter_now'] = testbed.read_workload(
        source).counter
    return result


def _run_debian(session, clones, netns, warm_cpu_s):
    eng, guest_image = session.eng, session.guest_image
    progress, spawned = session.progress, session.spawned
    source_name, image_name = session.source_name, session.image_name
    result = {'guest': 'debian', 'source': {'name': source_name},
              'image': image_name, 'warm_cpu_s': warm_cpu_s}
    progress('booting source %s from the Debian guest (TCG), then '
             'warming up its workload (%g s of CPU)'
             % (source_name, warm_cpu_s))
    t0 = time.monotonic()
    source = guest_image.boot(eng.host, source_name)
    # Generous: a Debian boot under TCG on a busy 2-core host took over
    # five minutes.
    testbed.wait_ready(source, timeout=900)
    workload.start_warm(source, warm_cpu_s)
    addr = waiting.wait_for(source.leased_ipv4, 300, interval=0.2,
                            what='a DHCP lease for %s' % source_name)
    banner = workload.parse_warm(workload.wait_banner(
        netns, addr, workload.WARM_PORT,
        workload.warm_prefix(source_name),
        time.monotonic() + 300 + 20 * warm_cpu_s))
    result['cold_to_ready_s'] = round(time.monotonic() - t0, 2)
    result['cold_warmup_s'] = banner.warmup_s
    progress('source serving after %.1f s (of which warm-up %.1f s)'
             % (result['cold_to_ready_s'], banner.warmup_s))
    before = testbed.read_workload(source)

    progress('capturing live image %s' % image_name)
    cap, after = _capture(session, source, result)
    result['source'].update({
        'identity': read_debian_identity(source), 'token': before.token,
        'counter_before_capture': before.counter,
        'counter_after_capture': after.counter,
        'running': source.is_running()})

    progress('spawning one clone, until its workload serves on its new '
             'address')
    t0 = time.monotonic()
    spawned += eng.spawn(image_name)
    first = spawned[0]
    workload.wait_banner(netns, first.identity['facts']['ipv4']
                         .split('/')[0], workload.WARM_PORT,
                         workload.warm_prefix(source_name), t0 + 300)
    result['clone_to_ready_s'] = round(time.monotonic() - t0, 2)
    result['ratio_cold_over_clone'] = round(
        result['cold_to_ready_s'] / result['clone_to_ready_s'], 2)
    progress('clone serving after %.1f s: %.1fx'
             % (result['clone_to_ready_s'],
                result['ratio_cold_over_clone']))
    if clones > 1:
        progress('spawning %d more clones concurrently' % (clones - 1))
        t0 = time.monotonic()
        spawned += eng.spawn(image_name, count=clones - 1)
        result['more_clones_wall_s'] = round(time.monotonic() - t0, 2)
    result['clones'] = []
    for clone in spawned:
        guest = eng.host.lookup(clone.name)
        state = testbed.read_workload(guest)
        result['clones'].append({
            'identity': read_debian_identity(guest),
            'name': clone.name, 'spawn_s': clone.spawn_s,
            'counter': state.counter, 'token': state.token,
            'steps': [(s['step'], s['status'])
                      for s in clone.identity['steps']],
            'resumed': (state.token == before.token
                        and state.counter >= before.counter)})
    return result


_ROWS = (('MAC', 'mac', 17), ('hostname', 'hostname', 24),
         ('ssh host key', 'ssh_host_key', 16),
         ('machine-id', 'machine_id', 32), ('address', 'address', 18))


def _identity_table(result):
    """Source and clones, one row each, every identity column."""
    rows = [(result['source']['name'] + ' (source)',
             result['source']['identity'])]
    rows += [(c['name'], c['identity']) for c in result['clones']]
    fmt = '%-28s ' + ' '.join('%%-%ds' % w for _, _, w in _ROWS)
    lines = [fmt % (('domain',) + tuple(h for h, _, _ in _ROWS))]
    for name, ident in rows:
        lines.append(fmt % ((name,) + tuple(
            (ident.get(key) or '-')[:w] for _, key, w in _ROWS)))
    return lines


def format_report(result):
    if result.get('guest') == 'debian':
        return _format_debian(result)
    lines = []
    src = result['source']
    lines.append('nova-live-snapshot demo')
    lines.append('=' * 60)
    lines.append('cold boot to workload ready   %8.2f s' % result['cold_boot_s'])
    lines.append('capture (total)               %8.2f s' % result['capture_s'])
    lines.append('capture pause of the source   %8.1f ms  (memory %s)'
                 % (result['capture_pause_ms'],
                    'staged on tmpfs' if result['memory_staged']
                    else 'written to disk'))
    lines.append('memory image                  %8.1f MiB'
                 % result['memory_mib_on_disk'])
    lines.append('%d clones, concurrently       %8.2f s wall (restore %s s, '
                 'then identity reset)'
                 % (len(result['clones']), result['clones_wall_s'],
                    ', '.join('%.2f' % s for s in result['clone_restore_s'])))
    lines.append('')
    lines.append('%-24s %8s %8s  %-32s %s'
                 % ('domain', 'spawn s', 'counter', 'token', 'resumed'))
    lines.append('%-24s %8s %8d  %-32s %s' % (
        src['name'] + ' (source)', '-', src['counter_before_capture'],
        src['token'], 'captured at this counter'))
    for c in result['clones']:
        lines.append('%-24s %8.2f %8d  %-32s %s' % (
            c['name'], c['spawn_s'], c['counter'], c['token'],
            'yes' if c['resumed'] else 'NO'))
    lines.append('')
    lines.append('source kept running: %s (counter now %d)'
                 % ('yes' if src['running'] else 'NO', src['counter_now']))
    lines.append('')
    lines.append('identity, read inside each guest:')
    lines.append('%-24s %-17s %-24s %-14s %s' % (
        'domain', 'MAC', 'hostname', 'ssh host key', 'machine-id'))
    rows = [(src['name'] + ' (source)', src['identity'])]
    rows += [(c['name'], c['identity']) for c in result['clones']]
    for name, ident in rows:
        lines.append('%-24s %-17s %-24s %-14s %s' % (
            name, ident['mac'], ident['hostname'],
            (ident['ssh_host_key'] or '-')[:14],
            ident['machine_id'] or '-'))
    for c in result['clones']:
        report = c['identity']['report'] or {}
        steps = ', '.join('%s %s' % (s['step'], s['status'])
                          for s in report.get('steps', []))
        lines.append('%s: %s' % (c['name'], steps))
    return '\n'.join(lines)


def _format_debian(result):
    src = result['source']
    lines = ['nova-live-snapshot demo (Debian guest)', '=' * 60,
             'cold boot + %g s warm-up until it serves %8.2f s'
             % (result['warm_cpu_s'], result['cold_to_ready_s']),
             'clone until it serves (new address)   %8.2f s'
             % result['clone_to_ready_s'],
             'ratio cold / clone                    %8.2f'
             % result['ratio_cold_over_clone'],
             'capture pause of the source           %8.1f ms'
             % result['capture_pause_ms'],
             'memory image                          %8.1f MiB'
             % result['memory_mib_on_disk'], '',
             '%-28s %8s %8s  %-32s %s' % ('domain', 'spawn s', 'counter',
                                          'token', 'resumed'),
             '%-28s %8s %8d  %-32s %s' % (
                 src['name'] + ' (source)', '-', src['counter_before_capture'],
                 src['token'], 'captured at this counter')]
    for c in result['clones']:
        lines.append('%-28s %8.2f %8d  %-32s %s' % (
            c['name'], c['spawn_s'], c['counter'], c['token'],
            'yes' if c['resumed'] else 'NO'))
    lines += ['', 'source kept running: %s' % ('yes' if src['running']
                                               else 'NO'), '',
              'identity, read inside each guest:'] + _identity_table(result)
    for c in result['clones']:
        lines.append('%s: %s' % (c['name'], ', '.join(
            '%s %s' % step for step in c['steps'])))
    return '\n'.join(lines)
