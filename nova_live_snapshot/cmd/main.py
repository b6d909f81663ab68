"""``nova-live-snapshot``: the engine on the local libvirt host, no Nova needed.

Subcommands: ``capture``, ``spawn``, ``list``, ``show``, ``verify``,
``delete``, ``destroy``, ``templates`` and ``demo``. Options come from ``[live_snapshot]``
in the ``--config-file`` files (defaults otherwise).
"""

import argparse
import json
import logging
import os
import sys

from oslo_config import cfg

from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import demo
from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import exception


def _parser():
    p = argparse.ArgumentParser(
        prog='nova-live-snapshot',
        description='Capture running libvirt domains into live images and '
                    'spawn clones that resume them.')
    p.add_argument('--config-file', action='append', default=[],
                   help='oslo.config file with a [live_snapshot] section')
    p.add_argument('--debug', action='store_true')
    sub = p.add_subparsers(dest='command', required=True)

    c = sub.add_parser('capture', help='capture a running domain')
    c.add_argument('domain', help='domain name or UUID')
    c.add_argument('name', help='name of the new live image')
    c.add_argument('--mode', choices=['live', 'save'],
                   help='override [live_snapshot] capture_mode')

    s = sub.add_parser('spawn', help='spawn clones of a live image')
    s.add_argument('image')
    s.add_argument('--count', type=int, default=1)
    s.add_argument('--prefix', help='clone name prefix')

    sub.add_parser('list', help='list live images and clones')
    sh = sub.add_parser('show', help="show a live image's manifest")
    sh.add_argument('image')
    v = sub.add_parser('verify', help='check a live image against its '
                                      'manifest and this host')
    v.add_argument('image')
    d = sub.add_parser('delete', help='delete a live image')
    d.add_argument('image')
    d.add_argument('--destroy-clones', action='store_true',
                   help='destroy the clones that use it first')
    x = sub.add_parser('destroy', help='destroy clones')
    x.add_argument('clones', nargs='+')
    t = sub.add_parser('templates', help="list this host's lazy-mode "
                                         'templates, the memory each holds '
                                         'on tmpfs and the clones mapping it')
    t.add_argument('--collect', action='store_true',
                   help='first remove the templates whose image is gone and '
                        'that no clone maps')

    dm = sub.add_parser('demo', help='boot the Debian test guest (or the '
                                     'busybox one), capture it warm, spawn '
                                     'clones, report')
    dm.add_argument('--busybox', action='store_true',
                    help="the busybox guest ([live_snapshot] test_guest_dir) "
                         "on QEMU's user-mode network, instead of the "
                         'Debian guest on the test network')
    dm.add_argument('--netns', default='nls-test',
                    help='network namespace the test network lives in')
    dm.add_argument('--warm-cpu-s', type=float, default=10,
                    help="seconds of CPU the Debian guest's workload warms "
                         'up for before it serves')
    dm.add_argument('--clones', type=int, default=3)
    dm.add_argument('--json', action='store_true',
                    help='print the result as one JSON object')
    dm.add_argument('--keep', action='store_true',
                    help='keep the source, image and clones')
    dm.add_argument('--guest-dir',
                    help='a built test guest (default [live_snapshot] '
                         'test_guest_dir; the Debian guest of '
                         'tools/build-debian-guest.sh shows SSH host keys '
                         'and machine-ids too)')
    dm.add_argument('--network',
                    help='libvirt network for the source and clones (default '
                         "[live_snapshot] clone_network, else QEMU's "
                         'user-mode network)')
    b = sub.add_parser('bench', help='benchmark suite: cold boot against '
                                     'clone (with and without a warm-up), '
                                     'restore floor, capture pause, scale, '
                                     'size and compression')
    b.add_argument('--quick', action='store_true',
                   help='fewer repetitions and clones (for CI)')
    b.add_argument('--json', action='store_true',
                   help='print the result as one JSON object')
    b.add_argument('--out', default='bench-results',
                   help='directory for result.json, report.md and plots')
    b.add_argument('--debian-guest-dir',
                   help='the Debian guest of tools/build-debian-guest.sh: '
                        'adds cold boot against clone until sshd answers, '
                        'and until a workload that warms up first serves '
                        '(needs --network)')
    b.add_argument('--apps-guest-dir',
                   help='the apps guest of tools/build-debian-guest.sh '
                        '--apps: adds a JVM and PostgreSQL, cold boot, '
                        'start and warm-up against a clone captured warm '
                        '(needs --network)')
    b.add_argument('--sections',
                   help='comma-separated sections to run (default all): '
                        'core, size, compression, lazy, sshd, warm, jvm, '
                        'postgres, platforms')
    b.add_argument('--network',
                   help='libvirt network for the guests (the isolated '
                        'nls-test network of tools/setup-host.sh)')
    b.add_argument('--netns', default='nls-test',
                   help='network namespace the network lives in')
    b.add_argument('--platform-uri',
                   help='a second libvirt host (the next platform of '
                        'tools/backports-host.sh): adds save and restore '
                        'of the same guest there and here, side by side, '
                        'per save format (needs --platform-virsh)')
    b.add_argument('--platform-virsh',
                   help="the second host's own virsh command line, e.g. "
                        "'chroot ROOT virsh -c qemu:///system'")
    return p


# Command-line arguments that override a [live_snapshot] option.
_OVERRIDES = {'mode': 'capture_mode', 'guest_dir': 'test_guest_dir',
              'network': 'clone_network'}


def _emit(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


def run(argv):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    conf = cfg.ConfigOpts()
    conf_mod.register_opts(conf)
    cfg_args = []
    for path in args.config_file:
        cfg_args += ['--config-file', path]
    conf(cfg_args, project='nova-live-snapshot', default_config_files=[])
    opts = conf.live_snapshot
    for arg, option in _OVERRIDES.items():
        if getattr(args, arg, None):
            conf.set_override(option, getattr(args, arg),
                              group='live_snapshot')

    if args.command == 'demo':
        netns = None
        if not args.busybox:
            # The Debian guest on the isolated test network, unless told
            # otherwise.
            cache = os.environ.get('NLS_CACHE_DIR',
                                   '/var/cache/nova-live-snapshot')
            conf.set_override('test_guest_dir', args.guest_dir or os.path.join(
                cache, 'debian-guest'), group='live_snapshot')
            conf.set_override('clone_network', args.network or 'nls-test',
                              group='live_snapshot')
            netns = args.netns
        result = demo.run(opts, clones=args.clones, keep=args.keep,
                          netns=netns, warm_cpu_s=args.warm_cpu_s)
        if args.json:
            _emit(result)
        else:
            print(demo.format_report(result))
        return 0 if all(c['resumed'] for c in result['clones']) else 1

    if args.command == 'bench':
        from nova_live_snapshot.bench import report
        from nova_live_snapshot.bench import suite
        result = suite.run(opts, quick=args.quick,
                           progress=demo.Progress(sys.stderr),
                           debian_guest_dir=args.debian_guest_dir,
                           netns=args.netns,
                           apps_guest_dir=args.apps_guest_dir,
                           sections=args.sections.split(',')
                           if args.sections else None,
                           checkpoint=lambda r: report.write_json(r, args.out),
                           platform_uri=args.platform_uri,
                           platform_virsh=args.platform_virsh)
        report.write(result, args.out)
        if args.json:
            _emit(result)
        else:
            with open(os.path.join(args.out, 'report.md')) as f:
                print(f.read())
        return 1 if result.get('errors') else 0

    eng = engine_mod.Engine(opts)
    if args.command == 'capture':
        res = eng.capture(args.domain, args.name)
        _emit({'image': res.image.name, 'path': res.image.path,
               'pause_ms': res.pause_ms, 'duration_s': res.duration_s,
               'memory_staged': res.memory_staged})
    elif args.command == 'spawn':
        _emit([c.to_dict() for c in eng.spawn(args.image, args.count,
                                              args.prefix)])
    elif args.command == 'list':
        images, problems = eng.images.scan()
        _emit({'images': [{'name': i.name, 'id': i.id,
                           'created_at': i.manifest.data['created_at'],
                           'memory_mib': i.memory_mib}
                          for i in images],
               'invalid': [{'name': n, 'reason': r} for n, r in problems],
               'clones': [c.to_dict() for c in eng.clones.list()]})
    elif args.command == 'show':
        _emit(eng.images.get(args.image).manifest.data)
    elif args.command == 'verify':
        v = eng.verify(args.image)
        _emit({'image': v.image.name, 'valid': True,
               'stream_bytes': v.save.stream_size})
    elif args.command == 'delete':
        eng.delete_image(args.image, destroy_clones=args.destroy_clones)
    elif args.command == 'destroy':
        for name in args.clones:
            eng.destroy(name)
    elif args.command == 'templates':
        removed = eng.collect_templates() if args.collect else []
        _emit({'templates': eng.list_templates(), 'removed': removed})
    return 0


def main(argv=None):
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except exception.LiveSnapshotError as e:
        print('nova-live-snapshot: error: %s' % e, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
