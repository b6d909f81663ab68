"""The driver subclass inside Nova's services, on a real libvirtd.

Nova's API (with the ``live_snapshot`` filter), conductor, scheduler and a
compute service running ``livesnapshot.LiveSnapshotDriver`` run in-process
on Nova's fixtures for the database, RPC, placement and Neutron; Glance is
Nova's fixture keeping data and hashes as Glance does. The hypervisor is
real: libvirtd and TCG guests booted from the busybox test guest disk.
"""

from tests.nova import base  # noqa: I100 (Nova's test package first)

import importlib
import json
import os
import shutil
import threading
import time
import urllib.parse
import uuid

import fixtures
from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova.tests import fixtures as nova_fixtures
from nova import thread_pool_factory

from nova_live_snapshot import domainxml
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import protocol
from nova_live_snapshot import qemuimg
from nova_live_snapshot import testbed
from nova_live_snapshot.virt import images

CACHE = os.environ.get('NLS_CACHE_DIR', '/var/cache/nova-live-snapshot')
GUEST_DISK = os.path.join(CACHE, 'guest', 'busybox-guest.qcow2')
# The libvirt host under test: Nova's [libvirt] connection_uri. Another host
# is reached by its socket (make backports-live: tools/backports-host.sh).
URI = os.environ.get('NLS_LIBVIRT_URI', 'qemu:///system')
SOCKET = urllib.parse.parse_qs(urllib.parse.urlsplit(URI).query).get(
    'socket', ['/var/run/libvirt/libvirt-sock'])[0]


def _init_events(self):
    """Nova's ``Host._init_events``, with its connection-event thread on a
    daemon thread instead of Nova's executor: that thread never returns, and
    the test base waits for the executors at cleanup. (Nova's test base
    poisons the whole method: its tests run on a fake libvirt.)"""
    self._delayed_executor = (
        thread_pool_factory.StaticallyDelayingCancellableTaskExecutorWrapper(
            delay=15, executor=thread_pool_factory.get_executor(
                thread_pool_factory.ExecutorType.DEFAULT)))
    self._event_handler.start()
    threading.Thread(target=self._conn_event_thread, daemon=True).start()


def _record(name, timings):
    """Wall times of a scenario, kept in $NLS_RESULTS_DIR (make sets it)."""
    results = os.environ.get('NLS_RESULTS_DIR')
    if not results:
        return
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, 'nova-live-%s.json' % name), 'w') as f:
        json.dump({k: [round(x, 2) for x in v] if isinstance(v, list)
                   else round(v, 2) for k, v in timings.items()}, f,
                  indent=1)


def _remove_leftovers():
    """Domains an interrupted run of these tests left (their disks are
    under /var/tmp/nls-nova-*): Nova refuses to start a new compute service
    on a hypervisor that has instances it does not know."""
    host = host_mod.Host(URI)
    for name in host.domain_names():
        guest = host.lookup(name)
        if any(p.startswith('/var/tmp/nls-nova-')
               for p in guest.disk_sources().values()):
            guest.remove()


class LiveDriverTest(base.LiveSnapshotTestBase):
    """Capture and clone through Nova, on a real hypervisor."""

    ADMIN_API = True

    def setUp(self):
        if not os.path.exists(GUEST_DISK) or not os.path.exists(SOCKET):
            msg = 'needs libvirtd and the test guest (make guest)'
            if os.environ.get('NLS_REQUIRE_LIVE') == '1':
                self.fail(msg)
            self.skipTest(msg)
        _remove_leftovers()
        # QEMU runs as libvirt-qemu: the instances and the image staging
        # must be reachable by it (the test's TempDir is 0700).
        self.root = '/var/tmp/nls-nova-%s' % uuid.uuid4().hex[:8]
        os.makedirs(self.root, mode=0o711)
        os.chmod(self.root, 0o711)
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        # tmpfs: the driver creates it; the tests check it is left empty.
        self.staging = '/dev/shm/nls-nova-%s' % uuid.uuid4().hex[:8]
        self.addCleanup(shutil.rmtree, self.staging, ignore_errors=True)
        os.mkdir(os.path.join(self.root, 'instances'), 0o711)
        self.flags(instances_path=os.path.join(self.root, 'instances'))
        self.flags(virt_type='qemu', connection_uri=URI, group='libvirt')
        # Nova's test base forbids looking at the host (uname, interfaces):
        # its tests run on a fake one. This one is real.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.GenericPoisonFixture.POISON_THESE', ()))
        # No VNC: nothing but QEMU's own process on this host.
        self.flags(enabled=False, group='vnc')
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host._init_events', _init_events))
        # Privileged helpers run in this (root) process, not through a
        # privsep daemon.
        self.useFixture(nova_fixtures.PrivsepFixture())
        # Other test beds may run guests on this libvirtd at the same time:
        # the compute service is new in its database whatever it finds.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.compute.manager.ComputeManager._sanity_check_new_host',
            lambda manager: None))
        self.compute = self._start_compute('compute1')
        # The test's own view of libvirt, on the driver's connection (one
        # event loop per process).
        self.host = host_mod.Host(
            connection=self.compute.driver._host.get_connection)
        self._servers = []
        self.addCleanup(self._no_domains_left)
        with open(GUEST_DISK, 'rb') as f:
            self.guest_image = self.glance.create(None, {
                'name': 'busybox-guest', 'disk_format': 'qcow2',
                'container_format': 'bare', 'visibility': 'public',
                'properties': {'hw_qemu_guest_agent': 'yes'}}, data=f)['id']
        self.flavor = self._create_flavor(memory_mb=128, vcpu=1, disk=1,
                                          ephemeral=0)
        self.other_flavor = self._create_flavor(memory_mb=256, vcpu=1,
                                                disk=1, ephemeral=0)

    def live_snapshot_options(self):
        opts = super().live_snapshot_options()
        opts.update(image_dir=os.path.join(self.root, 'images'),
                    memory_cache_dir=os.path.join(self.root, 'cache'),
                    staging_dir=self.staging)
        return opts

    def _no_domains_left(self):
        # A test that failed half-way: remove what it left (the test has
        # failed already).
        for name in ({s['OS-EXT-SRV-ATTR:instance_name']
                      for s in self._servers} & self.host.domain_names()):
            self.host.lookup(name).remove()

    def _boot(self, image, flavor, expected_state='ACTIVE'):
        server = self.api.post_server({'server': self._build_server(
            image_uuid=image, flavor_id=flavor, networks='none')})
        # A TCG boot or restore: seconds; two minutes is the deadline.
        server = self._wait_for_state_change(server, expected_state,
                                             max_retries=240)
        self._servers.append(server)
        return server

    def _guest(self, server):
        return self.host.lookup(server['OS-EXT-SRV-ATTR:instance_name'])

    def _capture(self, server, name='golden'):
        image_id = self.create_live_image(server['id'], name).body['image_id']
        # Capture, hashing and upload: seconds; two minutes is the deadline.
        self._wait_for_server_parameter(
            server, {'OS-EXT-STS:task_state': None, 'status': 'ACTIVE'},
            max_retries=240)
        image = self.glance.show(None, image_id)
        self.assertEqual('active', image['status'])
        return image

    def test_capture_then_clones_resume_with_their_own_identity(self):
        """A live image captured through the API, while the source runs,
        spawns clones through a plain server create: they resume the
        source's workload (same token, counter past the capture point),
        each with its own hostname; the source keeps running on its own
        disk; the image is signed, bound to the trait and the source's RAM,
        and its memory half is a hidden image; the capture sent Nova's
        snapshot notifications in both formats; deleting the servers leaves
        no domain."""
        timings = {}
        started = time.monotonic()
        source = self._boot(self.guest_image, self.flavor)
        timings['boot_to_active_s'] = time.monotonic() - started
        src_guest = self._guest(source)
        testbed.wait_ready(src_guest, timeout=180)
        timings['boot_to_ready_s'] = time.monotonic() - started
        before = testbed.read_workload(src_guest)

        started = time.monotonic()
        image = self._capture(source)
        timings['capture_to_active_image_s'] = time.monotonic() - started
        # Nova's snapshot notifications, legacy (Nova's default format) and
        # versioned, as for createImage.
        self.assertEqual(
            ['compute.instance.snapshot.start',
             'compute.instance.snapshot.end'],
            [n.event_type for n in self.notifier.notifications
             if n.event_type.startswith('compute.instance.snapshot')])
        self.assertEqual(
            ['instance.snapshot.start', 'instance.snapshot.end'],
            [n['event_type'] for n in self.notifier.versioned_notifications
             if n['event_type'].startswith('instance.snapshot')])
        props = image['properties']
        self.assertEqual('required', props['trait:%s' % protocol.TRAIT])
        self.assertEqual(128, image['min_ram'])
        record = images.Record.from_image(image, base.SIGNING_KEY)
        self.assertEqual(source['id'], record.source_instance)
        memory = self.glance.show(None, record.memory_image)
        self.assertTrue(memory['os_hidden'])
        # The source runs on, on its own disk again.
        after = testbed.wait_counter(src_guest, before.counter + 2)
        self.assertEqual(before.token, after.token)
        self.assertEqual(
            os.path.join(self.root, 'instances', source['id'], 'disk'),
            src_guest.disk_sources()['vda'])

        clones = []
        for _ in range(2):
            started = time.monotonic()
            clones.append(self._boot(image['id'], self.flavor))
            timings.setdefault('clone_to_active_s', []).append(
                time.monotonic() - started)
        hostnames = set()
        for clone in clones:
            guest = self._guest(clone)
            state = testbed.read_workload(guest)
            self.assertEqual(before.token, state.token)
            self.assertGreaterEqual(state.counter, before.counter)
            rc, out, _ = guest.agent_exec(['/bin/hostname'])
            hostnames.add(out.decode().strip())
        self.assertEqual(2, len(hostnames))
        self.assertNotIn(source['OS-EXT-SRV-ATTR:hostname'], hostnames)
        # What the clones share (their disks' backing chain: the image's
        # base in instances/_base) is never the QEMU user's to write.
        shared = set()
        for clone in clones:
            disk = self._guest(clone).disk_sources()['vda']
            shared.update(i['filename'] for i in qemuimg.info(
                disk, chain=True)[1:])
        self.assertNotEqual(set(), shared)
        self.assertEqual({}, testbed.qemu_user_can_write(*sorted(shared)))
        # The clones are ordinary instances now: their snapshots do not
        # inherit the live image's record, and their next spawn boots.
        for clone in clones:
            sysmeta = objects.Instance.get_by_uuid(
                nova_context.get_admin_context(), clone['id']).system_metadata
            self.assertEqual([], [k for k in sysmeta
                                  if 'live_snapshot' in k
                                  or 'LIVE_SNAPSHOT' in k])
            self.assertEqual('yes', sysmeta['image_hw_qemu_guest_agent'])
        _record('capture_and_clone', timings)

        self._delete_all()
        self.assertEqual({}, testbed.qemu_user_can_write(*sorted(shared)))

    def test_lazy_clones_map_one_template_that_goes_with_them(self):
        """With restore_mode = lazy, two clones built through Nova resume
        the source's workload, each re-identified, mapping one template of
        the image (its RAM file, privately) built on the first spawn; their
        definitions boot. With a memory cache that keeps nothing, the
        template stays while a clone maps it and goes with the last one."""
        templates = '/dev/shm/nls-nova-%s-templates' % uuid.uuid4().hex[:8]
        self.addCleanup(shutil.rmtree, templates, ignore_errors=True)
        self.flags(group='live_snapshot', restore_mode='lazy',
                   template_dir=templates, memory_cache_max_mib=0,
                   lazy_writable_templates=True)
        # The driver's operations read the cache size when built: again.
        self.compute.driver._live = None
        source = self._boot(self.guest_image, self.flavor)
        src_guest = self._guest(source)
        testbed.wait_ready(src_guest, timeout=180)
        before = testbed.read_workload(src_guest)
        image = self._capture(source)

        clones = [self._boot(image['id'], self.flavor) for _ in range(2)]
        store = self.compute.driver.live.templates
        (template,) = store.list()
        record = images.Record.from_image(image, base.SIGNING_KEY)
        self.assertEqual(record.memory_image, template.image_id)
        guests = [self._guest(c) for c in clones]
        self.assertEqual(sorted(g.name for g in guests),
                         store.users(template))
        hostnames = set()
        for guest in guests:
            self.assertEqual(template.memory_path,
                             domainxml.lazy_ram_file(guest.xml()))
            self.assertIsNone(domainxml.lazy_ram_file(
                guest.xml(inactive=True)))
            self.assertEqual(before.token,
                             testbed.read_workload(guest).token)
            rc, out, _ = guest.agent_exec(['/bin/hostname'])
            hostnames.add(out.decode().strip())
        self.assertEqual(2, len(hostnames))
        self.assertTrue(store.verify(template))

        for clone, template_stays in zip(clones, (True, False)):
            self.api.delete_server(clone['id'])
            self._wait_until_deleted(clone)
            self._servers.remove(clone)
            self.assertEqual(template_stays, os.path.isdir(template.path))
        self._delete_all()

    def test_refusals_leave_a_clear_fault_and_nothing_running(self):
        """A flavor of another size, and an image whose record was changed
        after capture, fail the build before anything starts, with the
        reason in the server's fault."""
        source = self._boot(self.guest_image, self.flavor)
        testbed.wait_ready(self._guest(source), timeout=180)
        image = self._capture(source)

        wrong = self._boot(image['id'], self.other_flavor,
                           expected_state='ERROR')
        self.assertIn('128 MiB RAM', wrong['fault']['message'])

        tampered = dict(image, id=None, name='tampered')
        tampered.pop('id')
        tampered['properties'] = dict(image['properties'],
                                      live_snapshot_vcpus='1')
        forged = self.glance.create(None, tampered,
                                    data=_BytesFile(self.glance.data(
                                        image['id'])))
        bad = self._boot(forged['id'], self.flavor, expected_state='ERROR')
        self.assertIn('signature does not match', bad['fault']['message'])
        self._delete_all()

    def test_compute_restart_during_a_capture_leaves_no_half_image(self):
        """nova-compute stops right after the live snapshot, before the
        source's overlay is merged back and before anything is uploaded.
        Until then, Nova answers other actions on the source with 409.
        The restarted service finds the source ACTIVE with its task state
        cleared, running on its own disk with the overlay merged and gone,
        the queued Glance image deleted, and no staging, partial image or
        journal left; the source's workload kept running throughout."""
        self._crash_during_capture(
            'nova_live_snapshot.capture.commit_overlays',
            lambda *args, **kwargs: True)

    def test_compute_restart_before_the_journal_knew_the_overlay(self):
        """nova-compute stops after libvirt's snapshot put the source on an
        overlay but before the capture journal recorded it: the restarted
        service finds the overlay on the domain itself and merges it back,
        with the same outcome as above."""
        self._crash_during_capture(
            'nova_live_snapshot.virt.journal.Journal.write',
            lambda journal, image_id, **entry: 'overlays' in entry)

    def _crash_during_capture(self, target, crashes):
        """Make ``target`` die (and hang until the test restarts the
        service) the first time ``crashes(*args, **kwargs)`` is true."""
        crashed, release = threading.Event(), threading.Event()
        real = _resolve(target)

        def die_once(*args, **kwargs):
            if not crashed.is_set() and crashes(*args, **kwargs):
                crashed.set()
                release.wait(300)
                raise RuntimeError('this nova-compute died')
            return real(*args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(target, die_once))
        self.addCleanup(release.set)
        source = self._boot(self.guest_image, self.flavor)
        guest = self._guest(source)
        before = testbed.wait_ready(guest, timeout=180)
        image_id = self.create_live_image(source['id']).body['image_id']
        self.assertTrue(crashed.wait(120), 'the capture never got that far')
        self.assertNotEqual(
            os.path.join(self.root, 'instances', source['id'], 'disk'),
            guest.disk_sources()['vda'], 'the source should be on an overlay')
        # Meanwhile Nova refuses other actions on the source, and another
        # capture, with 409.
        for action in ({'os-stop': None}, {'createImage': {'name': 'x'}},
                       {'createLiveImage': {'name': 'again'}}):
            response = self.api.api_post(
                '/servers/%s/action' % source['id'], action,
                check_response_status=False)
            self.assertEqual(409, response.status, action)
        # The capture journal holds ids and paths, never the requester's
        # token or context: recovery uses the service's own credentials.
        journals = [n for n in os.listdir(self.live_conf['image_dir'])
                    if n.endswith('.capture.json')]
        self.assertEqual(1, len(journals))
        with open(os.path.join(self.live_conf['image_dir'],
                               journals[0])) as f:
            entry = json.load(f)
        self.assertNotIn('context', entry)
        self.assertNotIn('token', json.dumps(entry).lower())

        self.compute = self.restart_compute_service(
            self.computes['compute1'], keep_hypervisor_state=False)
        self._wait_for_server_parameter(
            source, {'OS-EXT-STS:task_state': None, 'status': 'ACTIVE'},
            max_retries=240)
        self.assertRaises(nova_exception.ImageNotFound, self.glance.show,
                          None, image_id)
        instance_dir = os.path.join(self.root, 'instances', source['id'])
        self.assertEqual(os.path.join(instance_dir, 'disk'),
                         guest.disk_sources()['vda'])
        self.assertEqual(['console.log', 'disk', 'disk.info'],
                         sorted(os.listdir(instance_dir)))
        image_dir = self.live_conf['image_dir']
        self.assertEqual([], [n for n in os.listdir(image_dir)
                              if n.startswith('.partial-')
                              or n.endswith('.capture.json')])
        staging = self.live_conf['staging_dir']
        self.assertEqual([], os.listdir(staging) if os.path.isdir(staging)
                         else [])
        after = testbed.wait_counter(guest, before.counter + 2)
        self.assertEqual(before.token, after.token)
        release.set()
        self._delete_all()

    def _delete_all(self):
        """Delete every server of the test through the API; no domain of
        theirs may remain."""
        for server in self._servers:
            self.api.delete_server(server['id'])
        for server in self._servers:
            self._wait_until_deleted(server)
        self.assertEqual(set(), {s['OS-EXT-SRV-ATTR:instance_name']
                                 for s in self._servers}
                         & self.host.domain_names())


class _BytesFile:
    def __init__(self, data):
        self._data = data

    def read(self):
        return self._data


def _resolve(dotted):
    """The attribute a dotted path names (module, class, attribute)."""
    module, cls, attr = dotted.rsplit('.', 2)
    return getattr(getattr(importlib.import_module(module), cls), attr)
