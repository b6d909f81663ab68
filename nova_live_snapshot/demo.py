"""``nova-live-snapshot demo``: the whole idea in one run on the local host.

Boots the test guest, waits until its workload is ready, captures a live
image while it runs, spawns clones concurrently, and shows what each clone
resumed beside the source. Removes everything it made unless asked to keep
the clones.
"""

import contextlib
import os
import sys
import time
import uuid as uuidlib

from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import testbed

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


def run(conf, clones=3, keep=False, progress=None):
    """Run the demo; returns the result dict the command prints."""
    progress = progress or Progress(sys.stderr)
    eng = engine_mod.Engine(conf)
    work = os.path.join(os.path.dirname(conf.image_dir.rstrip('/')), 'demo')
    guest_image = testbed.TestGuest(conf.test_guest_dir, work,
                                    network=conf.clone_network)
    tag = uuidlib.uuid4().hex[:6]
    source_name = 'nls-demo-%s' % tag
    image_name = 'demo-%s' % tag
    result = {'source': {'name': source_name}, 'image': image_name}
    spawned = []
    try:
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
        cap = eng.capture(source_name, image_name)
        after = testbed.read_workload(source)
        result.update({
            'capture_pause_ms': round(cap.pause_ms, 1),
            'capture_s': round(cap.duration_s, 2),
            'memory_staged': cap.memory_staged,
            'memory_mib_on_disk': round(
                cap.image.manifest.files['memory']['size'] / 2 ** 20, 1),
        })
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
        spawned = eng.spawn(image_name, count=clones)
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
    finally:
        if not keep:
            progress('cleaning up')
            with contextlib.suppress(Exception):
                for clone in spawned:
                    eng.destroy(clone.name)
            with contextlib.suppress(Exception):
                eng.delete_image(image_name, destroy_clones=True)
            guest_image.remove(eng.host, source_name)


def format_report(result):
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
