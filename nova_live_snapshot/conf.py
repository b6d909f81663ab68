"""The ``[live_snapshot]`` option group: every option this project reads.

Registered on ``oslo_config.cfg.CONF`` by :func:`register_opts`; listed for
``oslo-config-generator`` by :func:`list_opts` (entry point
``oslo.config.opts = nova_live_snapshot = nova_live_snapshot.conf:list_opts``).
"""

import os

from oslo_config import cfg

__all__ = ['CONF', 'GROUP', 'register_opts', 'list_opts', 'new', 'derive',
           'for_compute_host']

CONF = cfg.CONF

GROUP = cfg.OptGroup(
    'live_snapshot',
    title='Live snapshot options',
    help="""
Capture running instances (memory and disk) into live images and spawn clones
that resume where the source was, instead of booting. Experimental.
""")

ENGINE_OPTS = [
    cfg.StrOpt(
        'connection_uri',
        help="""
libvirt connection URI the standalone engine and command use.

Possible values:

* Unset (the default): libvirt's default URI (``LIBVIRT_DEFAULT_URI``,
  ``uri_default`` in ``libvirt.conf``, else what libvirt finds).
* A libvirt URI for a QEMU driver, e.g. ``qemu:///system`` or, for a
  libvirtd of its own on the same machine,
  ``qemu:///system?socket=/path/to/libvirt-sock``.

Related options:

* Inside nova-compute the driver uses Nova's own ``[libvirt] connection_uri``
  (the connection of Nova's own ``Host``).
"""),
    cfg.StrOpt(
        'image_dir',
        default='/var/lib/nova-live-snapshot/images',
        help="""
Directory holding live images, one sub-directory each.

A live image holds a copy of a machine's memory: treat this directory as
secret. It is created mode 0700 and every file in it mode 0600.

Related options:

* ``staging_dir``: where memory is written during a capture.
"""),
    cfg.StrOpt(
        'clone_dir',
        default='/var/lib/nova-live-snapshot/clones',
        help="""
Directory holding the clones' own files: a qcow2 overlay on the image's
frozen disk and a console log each.

QEMU opens the overlays, so the directory must be traversable by the user
libvirt runs QEMU as.
"""),
    cfg.StrOpt(
        'staging_dir',
        default='/dev/shm/nova-live-snapshot',
        help="""
Directory, ideally on tmpfs, where the memory file is written during a
capture before it is moved into ``image_dir``.

Writing the memory to RAM shortens the source's pause (measured 100-200 ms
instead of 260-500 ms for a 128 MiB guest), because the pause includes
libvirt flushing the memory file.

Related options:

* ``memory_staging`` decides when this directory is used.
"""),
    cfg.StrOpt(
        'memory_staging',
        default='auto',
        choices=[
            ('auto', 'Stage on ``staging_dir`` when the guest memory fits in '
                     'its free space, else write straight to ``image_dir``.'),
            ('always', 'Always stage; refuse the capture when it does not '
                       'fit.'),
            ('never', 'Write the memory file straight into ``image_dir``.'),
        ],
        help='When to write the memory file to ``staging_dir`` first.'),
    cfg.StrOpt(
        'capture_mode',
        default='live',
        choices=[
            ('live', 'External memory and disk snapshot while the guest runs; '
                     'the source pauses only for the final switch-over.'),
            ('save', 'virDomainSave, then restore the source onto a new '
                     'overlay; the source is stopped for the whole save and '
                     'restore (seconds).'),
        ],
        help='How a running domain is captured.'),
    cfg.StrOpt(
        'qemu_group',
        default='libvirt-qemu',
        help="""
The group libvirt runs QEMU processes in (``group`` in libvirt's qemu.conf).

Frozen disks of live images are made readable by this group, because clones
open them as backing files; memory files and manifests stay owner-only. When
the group does not exist (QEMU runs as root), frozen disks stay mode 0600.
"""),
    cfg.BoolOpt(
        'require_guest_agent',
        default=True,
        help="""
Refuse to spawn a clone whose guest agent does not answer.

Without the QEMU guest agent a clone cannot be re-identified: it keeps its
source's MAC inside the guest, its entropy pool state, hostname, SSH host
keys and machine-id. With the default, such a spawn fails with a clear error
and leaves nothing behind; set to false to spawn it anyway, with a warning
and an identity report that says identity was not reset.

Related options:

* ``agent_timeout``
"""),
    cfg.IntOpt(
        'agent_timeout',
        default=30,
        min=1,
        help='Seconds to wait for a restored clone\'s guest agent to answer.'),
    cfg.StrOpt(
        'clone_network',
        help="""
libvirt network the standalone engine attaches clones to.

Possible values:

* Unset (the default): QEMU's user-mode network, a private NAT inside each
  QEMU process.
* The name of a libvirt network, for example the isolated ``nls-test``
  network ``tools/setup-host.sh`` creates inside its network namespace.

Related options:

* Inside nova-compute a clone's ports come from Neutron instead.
"""),
    cfg.StrOpt(
        'restore_mode',
        default='eager',
        choices=[
            ('eager', 'Each clone reads the whole memory stream into RAM of '
                      'its own before it runs.'),
            ('lazy', 'Experimental. Each clone maps a per-host template of '
                     'the image copy-on-write and loads only its device '
                     'state: spawn time independent of guest RAM, unwritten '
                     'memory shared by all clones of the image.'),
        ],
        help="""
How clones are restored on this host. ``lazy`` is experimental.

In ``lazy`` mode the first clone of an image on this host builds the image's
template in ``template_dir`` (its guest RAM as a file, and its device state);
every clone then maps that file privately and loads the small device state.
Lazy clones are libvirt domains with ``<qemu:commandline>`` passthrough,
which libvirt marks as tainted (see ``doc/source/lazy.rst``).

Related options:

* ``template_dir``, ``lazy_fallback_to_eager``
"""),
    cfg.StrOpt(
        'template_dir',
        default='/dev/shm/nova-live-snapshot-templates',
        help="""
Directory on tmpfs holding the lazy-mode templates, one sub-directory per
live image: its guest RAM as a file clones map copy-on-write, its device
state and a record.

A template holds a copy of a machine's memory: the directory is kept 0710
(group: ``qemu_group``, which must reach the RAM files). It must be on tmpfs:
clones fault their unwritten memory in from it. A template needs up to the
guest's RAM size of room there; it stays while the image exists on this host
and is removed with the image once no clone uses it. Give each ``image_dir``
its own ``template_dir``: templates whose image is not in ``image_dir`` are
removed once nothing maps them.

Related options:

* ``restore_mode``, ``lazy_fallback_to_eager``
"""),
    cfg.BoolOpt(
        'lazy_fallback_to_eager',
        default=False,
        help="""
In ``lazy`` mode, restore clones eagerly when the image's template cannot be
built (no room in ``template_dir``, not tmpfs, the build failed), with a
warning, instead of failing the spawn.

With the default, such a spawn fails with an error that says why, and
nothing of the template or the clone is left behind.
"""),
    cfg.BoolOpt(
        'lazy_writable_templates',
        default=False,
        help="""
Allow ``lazy`` mode on a QEMU older than 8.2.

A lazy clone maps its template's RAM file privately. QEMU 8.2 and later open
that file read-only (``readonly=on,rom=off``), and the file is root's, mode
0440: no QEMU process can change it. Older QEMU (Debian 12 has 7.2) must open
it read-write, so the file has to be writable by the QEMU group, and a
compromised clone could rewrite the memory every other clone of the image
maps. With the default, lazy spawns on such a host are refused (or restored
eagerly with ``lazy_fallback_to_eager``); set this only on hosts where every
clone of an image is equally trusted.
"""),
    cfg.IntOpt(
        'restore_timeout',
        default=120,
        min=10,
        help='Seconds one clone restore may take before it is abandoned.'),
]

NOVA_OPTS = [
    cfg.BoolOpt(
        'enabled',
        default=False,
        help="""
Serve the experimental ``createLiveImage`` server action.

With the default, nova-api answers the action exactly as Nova without this
extension does (400, unknown action), even when the API filter is in the
pipeline. Set it on the nova-api hosts once every compute host that runs
the live snapshot driver has ``signing_key`` set.

Related options:

* ``signing_key``: live images are only made and restored with it.
"""),
    cfg.StrOpt(
        'host_key_file',
        help="""
File holding this host's key for the live images it captures (64 hex digits).

Every image the engine captures is signed with it (``manifest.sig``, an
HMAC-SHA256 of the manifest, which holds each file's SHA-256), and an image
is read only after its signature matched: a file changed in the store, even
with its checksum rewritten, or an image copied from another host is
refused. Made on the first capture, mode 0600, when missing; it must be
root's and readable by root alone. A host without it trusts no local image.

Default: ``host.key`` in the directory that holds ``image_dir``.
"""),
    cfg.StrOpt(
        'signing_key',
        secret=True,
        help="""
Secret that compute hosts sign live images with, and check before they
restore one.

A live image's memory stream and domain XML are parsed by QEMU and libvirt
on restore; only images this cloud made may reach them. Every compute host
that runs the live snapshot driver needs the same value. Without it, live
snapshots are refused and live images are not restored.

Possible values:

* At least 32 characters of random text, e.g. ``openssl rand -hex 32``.
"""),
    cfg.StrOpt(
        'memory_cache_dir',
        default='/var/lib/nova-live-snapshot/cache',
        help="""
Directory where a compute host keeps the memory streams of live images it
has downloaded from Glance (or captured), so that the next clone of the same
image on this host needs no download. Holds machine memory: kept 0700.

Related options:

* ``memory_cache_max_mib``
"""),
    cfg.IntOpt(
        'memory_cache_max_mib',
        default=20480,
        min=0,
        help="""
Most MiB of memory streams kept in ``memory_cache_dir``. The least recently
used are evicted first; a stream being restored from is never evicted. 0
keeps none beyond the restore that needs it.
"""),
]

TESTBED_OPTS = [
    cfg.StrOpt(
        'test_guest_dir',
        default='/var/cache/nova-live-snapshot/guest',
        help="""
Where ``tools/build-test-guest.sh`` put the small test guest that
``nova-live-snapshot demo`` and the live tests boot.
"""),
]


ALL_OPTS = ENGINE_OPTS + NOVA_OPTS + TESTBED_OPTS


def register_opts(conf=CONF):
    # A group object of its own per ConfigOpts: oslo.config keeps overrides
    # in the group object, so sharing GROUP would leak them between configs.
    group = cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help)
    conf.register_group(group)
    conf.register_opts(ALL_OPTS, group=group)


def new(**overrides):
    """A ``[live_snapshot]`` group of a private ConfigOpts, read from no
    file, with ``overrides`` applied."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], project='nova-live-snapshot', default_config_files=[])
    for key, value in overrides.items():
        conf.set_override(key, value, group=GROUP.name)
    return conf.live_snapshot


def derive(group, **overrides):
    """A copy of the ``[live_snapshot]`` values of ``group`` with
    ``overrides`` applied; ``group`` itself is left as it is."""
    values = {opt.name: getattr(group, opt.name) for opt in ALL_OPTS}
    values.update(overrides)
    return new(**values)


#: The options whose defaults name one place per machine. Inside nova-compute
#: each left at its default is resolved per compute host
#: (:func:`for_compute_host`): two nova-compute services on one machine (each
#: with its own ``host``, ``state_path`` and libvirtd) must never share a
#: memory-stream cache, a capture journal or staging area, or lazy-mode
#: templates, because each host's cleanup removes what its own records and
#: its own libvirtd do not know.
_PER_HOST = {
    # name: (under Nova's state_path, or on tmpfs under the default + host)
    'image_dir': ('state_path', 'live-snapshot/images'),
    'clone_dir': ('state_path', 'live-snapshot/clones'),
    'memory_cache_dir': ('state_path', 'live-snapshot/cache'),
    'staging_dir': ('tmpfs', None),
    'template_dir': ('tmpfs', None),
}


def for_compute_host(conf, state_path, host):
    """The ``[live_snapshot]`` values of the nova-compute whose Nova options
    are ``state_path`` and ``host``, as a private copy.

    Options set in a configuration file (or overridden) keep their value;
    the per-machine defaults become per host: ``image_dir``, ``clone_dir``
    and ``memory_cache_dir`` under ``<state_path>/live-snapshot/``, the tmpfs
    ``staging_dir`` and ``template_dir`` a sub-directory named after
    ``host`` of their default.

    :param conf: the ConfigOpts the group is registered on (Nova's CONF)
    """
    derived = {}
    for name, (base, sub) in _PER_HOST.items():
        location = conf.get_location(name, GROUP.name)
        if location is not None and (location.location
                                     is not cfg.Locations.opt_default):
            continue
        if base == 'state_path':
            derived[name] = os.path.join(state_path, sub)
        else:
            derived[name] = os.path.join(getattr(conf.live_snapshot, name),
                                         host)
    return derive(conf.live_snapshot, **derived)


def list_opts():
    return [(GROUP, ALL_OPTS)]


register_opts()
