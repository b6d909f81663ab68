#!/usr/bin/env python3
"""Re-identification of the same live image, old code against new, side by
side in one run: the benchmark behind the re-identification figures of
doc/source/benchmarks.rst.

The old code is ``nova_live_snapshot/identity.py``, its guest scripts and
``Guest.agent_exec`` as they were at a git revision (``--old-ref``), loaded
from ``git show`` into a package of their own; the new code is the working
tree's. One Debian source is booted on the test network and captured once;
then every round spawns two exact copies of it (restored paused, link
down, not re-identified) and re-identifies one with each code, in
alternating order, timing each from the call until its report (and, for the
new code, its host-side preparation started at the spawn, as the engine
does), counting agent commands, then until sshd answers on the clone's new
address from the test network's namespace. Both clones are destroyed before
the next round, so at most three guests run.

Usage (as root, from the repository, with the virtualenv)::

    .venv/bin/python tools/reident-compare.py --rounds 4 [--old-ref REV]

REV defaults to ``main``; once the change is merged there, give the commit
before it (0c5fd89 for the two-script re-identification).

Prints one JSON document: per round and variant the total, each step's
guest-side seconds, the agent commands by name, the time to the sshd
banner and the host's load average at the start of the round.
"""

import argparse
import collections
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nova_live_snapshot.bench import workload  # noqa: E402
from nova_live_snapshot import conf as conf_mod  # noqa: E402
from nova_live_snapshot import engine as engine_mod  # noqa: E402
from nova_live_snapshot import guest as guest_mod  # noqa: E402
from nova_live_snapshot import identity  # noqa: E402
from nova_live_snapshot import testbed  # noqa: E402

CACHE = os.environ.get('NLS_CACHE_DIR', '/var/cache/nova-live-snapshot')


def old_code(ref, where):
    """The identity module of revision ``ref`` (with its guest scripts) as
    package ``nls_old_identity`` under ``where``, and the Guest class with
    that revision's ``agent_exec``."""
    pkg = os.path.join(where, 'nls_old_identity')
    os.makedirs(os.path.join(pkg, 'guest_scripts'))
    open(os.path.join(pkg, '__init__.py'), 'w').close()

    def show(path):
        return subprocess.run(['git', '-C', REPO, 'show', '%s:%s'
                               % (ref, path)], check=True,
                              capture_output=True).stdout
    with open(os.path.join(pkg, 'identity.py'), 'wb') as f:
        f.write(show('nova_live_snapshot/identity.py'))
    names = subprocess.run(
        ['git', '-C', REPO, 'ls-tree', '--name-only', ref,
         'nova_live_snapshot/guest_scripts/'], check=True,
        capture_output=True, text=True).stdout.split()
    for name in names:
        with open(os.path.join(pkg, 'guest_scripts',
                               os.path.basename(name)), 'wb') as f:
            f.write(show(name))
    spec = importlib.util.spec_from_file_location(
        'nls_old_identity.identity', os.path.join(pkg, 'identity.py'),
        submodule_search_locations=None)
    sys.path.insert(0, where)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = 'nls_old_identity'
    spec.loader.exec_module(module)

    # The old agent_exec: a guest-exec-status look every 50 ms.
    namespace = {}
    source = show('nova_live_snapshot/guest.py').decode()
    start = source.index('    def agent_exec(')
    body = source[start:]
    end = body.find('\n    def ', 10)
    body = body if end < 0 else body[:end + 1]
    exec(compile('import base64, time\nfrom nova_live_snapshot import '
                 'exception\nclass OldExec:\n' + body, 'old agent_exec',
                 'exec'), namespace)
    return module, namespace['OldExec'].agent_exec


class Counted(guest_mod.Guest):
    """A Guest that counts and times its agent commands."""

    exec_impl = None

    def __init__(self, domain):
        super().__init__(domain)
        self.calls = collections.Counter()

    def agent_command(self, execute, arguments=None, timeout=10, **kwargs):
        self.calls[execute] += 1
        return super().agent_command(execute, arguments, timeout, **kwargs)

    def agent_exec(self, argv, timeout=30, stdin=None):
        if self.exec_impl is not None:
            return self.exec_impl(self, argv, timeout, stdin)
        return super().agent_exec(argv, timeout, stdin)


def one(eng, image, variant, module, old_exec, netns):
    started = time.monotonic()
    hostname = 'nlsc-%s-%s' % (variant, uuid.uuid4().hex[:6])
    prepared = None
    if variant == 'new':
        # As the engine does: the host's part starts before the restore.
        prepared = module.prepare(hostname)
    (clone,) = eng.spawn(image.name, exact_copy=True,
                         prefix='nlsc-%s' % variant)
    try:
        spawned = time.monotonic()
        verified = eng.verify(image.name)
        guest = Counted(eng.host.lookup(clone.name).domain)
        if variant == 'old':
            guest.exec_impl = old_exec
        new = module.NewIdentity(
            name=clone.name, uuid=clone.uuid, mac=clone.mac,
            old_mac=verified.domain.nics[0][1],
            hostname=hostname)
        kwargs = {}
        if variant == 'new':
            kwargs['prepared'] = prepared
        t0 = time.monotonic()
        report = module.reset(guest, new,
                              lambda: guest.set_link_up(clone.mac), **kwargs)
        reset_s = time.monotonic() - t0
        addr = report.facts.get('ipv4', '').split('/')[0]
        sshd_s = None
        if addr:
            workload.wait_banner(netns, addr, 22, 'SSH-', t0 + 300)
            sshd_s = time.monotonic() - t0
        return {'variant': variant, 'reset': report.reset,
                'reset_s': round(reset_s, 3),
                'sshd_after_reset_start_s': sshd_s and round(sshd_s, 3),
                'restore_s': round(spawned - started, 3),
                'steps': {s.step: [s.status.value, s.seconds]
                          for s in report.steps},
                'details': {s.step: s.detail[:300] for s in report.steps},
                'dhcp_wait_s': report.facts.get('dhcp_wait_s'),
                'agent_commands': dict(guest.calls)}
    finally:
        eng.destroy(clone.name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--old-ref', default='main')
    parser.add_argument('--network', default='nls-test')
    parser.add_argument('--netns', default='nls-test')
    parser.add_argument('--guest-dir', default=os.path.join(CACHE,
                                                            'debian-guest'))
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    root = '/var/tmp/nls-compare-%s' % tag
    os.makedirs(root, mode=0o711)
    os.chmod(root, 0o711)
    tmp = tempfile.mkdtemp(prefix='nls-old-')
    old, old_exec = old_code(args.old_ref, tmp)
    conf = conf_mod.new(image_dir=root + '/images', clone_dir=root + '/clones',
                        staging_dir='/dev/shm/nls-compare-%s' % tag,
                        template_dir='/dev/shm/nls-compare-%s-t' % tag,
                        test_guest_dir=args.guest_dir,
                        clone_network=args.network)
    eng = engine_mod.Engine(conf)
    deb = testbed.TestGuest(args.guest_dir, root + '/src',
                            network=args.network)
    name = 'nlsc-%s-src' % tag
    rounds = []
    image = None
    try:
        src = deb.boot(eng.host, name)
        testbed.wait_ready(src, timeout=900)
        image = eng.capture(name, 'nlsc-%s-img' % tag).image
        deb.remove(eng.host, name)
        for i in range(args.rounds):
            order = ('old', 'new') if i % 2 == 0 else ('new', 'old')
            for variant in order:
                load = os.getloadavg()
                r = one(eng, image, variant,
                        old if variant == 'old' else identity, old_exec,
                        args.netns)
                r['round'] = i
                r['load'] = [round(x, 2) for x in load]
                rounds.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    finally:
        if image is not None:
            eng.delete_image(image.name, destroy_clones=True)
        deb.remove(eng.host, name)
        for path in (root, tmp, conf.staging_dir, conf.template_dir):
            shutil.rmtree(path, ignore_errors=True)
    summary = {}
    for variant in ('old', 'new'):
        runs = [r for r in rounds if r['variant'] == variant]
        summary[variant] = {
            'reset_s_median': statistics.median(r['reset_s'] for r in runs),
            'reset_s': [r['reset_s'] for r in runs],
            'sshd_s': [r['sshd_after_reset_start_s'] for r in runs],
            'agent_commands_median': statistics.median(
                sum(r['agent_commands'].values()) for r in runs),
            'steps_median': {
                step: statistics.median(r['steps'][step][1] or 0.0
                                        for r in runs if step in r['steps'])
                for step in identity.STEPS}}
    print(json.dumps({'rounds': rounds, 'summary': summary}, indent=1))


if __name__ == '__main__':
    main()
