#!/usr/bin/env python3
"""Hand measurement of lazy against eager clones (issue 7), until the
benchmark suite has its own: spawn times and host memory of N concurrent
clones, for one guest size. Prints one JSON object.

    tools/measure-lazy.py <RAM MiB> <MiB the guest fills> <N clones> [work dir]

A source guest of that size (the busybox test guest, user-mode network)
fills a tmpfs inside itself with random data (memory a real workload would
have touched), is captured, then for each mode: one spawn that may build
the template, three timed single spawns, N concurrent clones whose memory
is read from /proc/<pid>/smaps. A lazy clone's own memory is its PSS
without the template mapping's shared pages, plus the pages it copied on
write; the host total adds the template's tmpfs pages once.
"""

import json
import logging
import os
import re
import sys
import time

from nova_live_snapshot import conf
from nova_live_snapshot import domainxml
from nova_live_snapshot import engine
from nova_live_snapshot import qemuimg
from nova_live_snapshot import testbed


class StateLoads(logging.Handler):
    """Collects how long lazy clones took to load their state (the
    template module logs it), QEMU start excluded."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seconds = []

    def emit(self, record):
        found = re.search(r'in ([0-9.]+) s$', record.getMessage())
        if found and record.getMessage().startswith('Loaded the state'):
            self.seconds.append(float(found.group(1)))


def pid_of(name):
    with open('/run/libvirt/qemu/%s.pid' % name) as f:
        return int(f.read())


def own_kib(pid, template_path=None):
    """A clone's PSS without the template's shared pages, in KiB."""
    total = shared = copied = 0
    mapping = None
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            parts = line.split()
            if ':' not in parts[0]:                 # a mapping's header
                mapping = parts[5] if len(parts) > 5 else ''
            elif parts[0] == 'Pss:':
                total += int(parts[1])
                if template_path and mapping == template_path:
                    shared += int(parts[1])
            elif parts[0] == 'Anonymous:' and template_path \
                    and mapping == template_path:
                copied += int(parts[1])
    return total - shared + copied


def qemu_start(host, image, work, memory_mib):
    """QEMU start alone: the same domain created paused, then destroyed."""
    disk = os.path.join(work, 'floor.qcow2')
    if os.path.exists(disk):
        os.unlink(disk)
    qemuimg.create_overlay(image.disk_path, disk)
    spec = domainxml.DomainSpec(
        name='nls-lazy-floor', disk_path=disk,
        console_log=os.path.join(work, 'floor.log'), memory_mib=memory_mib,
        machine=image.machine)
    started = time.monotonic()
    guest = host.create(domainxml.render(spec), paused=True)
    elapsed = time.monotonic() - started
    guest.destroy()
    return round(elapsed, 3)


def main(mem, fill, count, work='/var/tmp/nls-lazy-measure'):
    loads = StateLoads()
    logger = logging.getLogger('nova_live_snapshot.template')
    logger.setLevel(logging.DEBUG)
    logger.addHandler(loads)
    os.makedirs(work, mode=0o711, exist_ok=True)
    os.chmod(work, 0o711)
    base = dict(image_dir=work + '/images', clone_dir=work + '/clones',
                staging_dir='/dev/shm/nls-lazy-measure-staging',
                template_dir='/dev/shm/nls-lazy-measure-templates',
                clone_network=None)
    eager = engine.Engine(conf.new(**base))
    lazy = engine.Engine(conf.new(restore_mode='lazy', **base),
                         host=eager.host)
    host = eager.host
    source = testbed.TestGuest('/var/cache/nova-live-snapshot/guest',
                               work + '/sources', network=None)
    tag = '%d-%d' % (mem, os.getpid())
    src = source.boot(host, 'nls-lazy-src-' + tag, memory_mib=mem)
    testbed.wait_ready(src, timeout=300)
    if fill:
        src.agent_exec(['/bin/sh', '-c', 'mkdir -p /run/fill && mount -t '
                        'tmpfs -o size=%dm tmpfs /run/fill && dd '
                        'if=/dev/urandom of=/run/fill/blob bs=1M count=%d'
                        % (fill + 8, fill)], timeout=600)
    image = eager.capture(src.name, 'nls-lazy-' + tag).image
    source.remove(host, src.name)
    out = {'memory_mib': mem, 'fill_mib': fill,
           'memory_file_mb': round(image.manifest.files['memory']['size']
                                   / 1e6, 1),
           'qemu_start_s': [qemu_start(host, image, work, mem)
                            for _ in range(3)]}
    for mode, eng in (('eager', eager), ('lazy', lazy)):
        walls, restores, spawns = [], [], []
        for _ in range(4):
            started = time.monotonic()
            clone = eng.spawn(image.name, prefix='nls-lazy-%s' % mode)[0]
            walls.append(round(time.monotonic() - started, 3))
            restores.append(clone.restore_s)
            spawns.append(clone.spawn_s)
            eng.destroy(clone.name)
        out[mode] = {'first_spawn_wall_s': walls[0],
                     'restore_s': restores[1:], 'spawn_s': spawns[1:]}
        if mode == 'lazy':
            out[mode]['state_load_s'] = loads.seconds[1:4]
        clones = eng.spawn(image.name, count=count,
                           prefix='nls-lazy-%s' % mode)
        template = eng.templates.get(image.id) if mode == 'lazy' else None
        own = [own_kib(pid_of(c.name),
                       template.memory_path if template else None)
               for c in clones]
        tmpfs = template.tmpfs_bytes() // 1024 if template else 0
        out[mode].update({
            'clones': count,
            'own_mib_per_clone': [round(k / 1024, 1) for k in own],
            'template_tmpfs_mib': round(tmpfs / 1024, 1),
            'template_build_s': template.record['build_s'] if template
            else None,
            'host_total_mib': round((sum(own) + tmpfs) / 1024, 1)})
        for clone in clones:
            eng.destroy(clone.name)
    eager.delete_image(image.name)
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main(*[int(a) for a in sys.argv[1:4]], *sys.argv[4:5])
