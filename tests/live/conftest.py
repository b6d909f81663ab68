"""Fixtures for tests on a real libvirtd with real TCG guests.

They need root, libvirtd on ``qemu:///system`` and the test guest built by
``tools/build-test-guest.sh``; ``make test`` provides all three and sets
``NLS_REQUIRE_LIVE=1`` so that a missing piece fails the run instead of
skipping it.

``NLS_LIBVIRT_URI`` points them at another libvirt host, with ``NLS_NETNS``
the network namespace its test network lives in: ``make backports-live``
runs them on the next platform that way (``tools/backports-host.sh``).
"""

import glob
import os
import shutil
import subprocess
import uuid

import pytest

from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import domainxml
from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import exception
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

CACHE = os.environ.get('NLS_CACHE_DIR', '/var/cache/nova-live-snapshot')
# The isolated network tools/setup-host.sh creates in libvirtd's namespace.
NETWORK = os.environ.get('NLS_NETWORK', 'nls-test')
NETNS = os.environ.get('NLS_NETNS', 'nls-test')
# How many clones of one image the identity tests compare (with their
# source, that many guests plus one run at once; fewer on a shared host).
CLONES = int(os.environ.get('NLS_IDENTITY_CLONES', '4'))
# The libvirt host under test (the engine's [live_snapshot] connection_uri).
URI = os.environ.get('NLS_LIBVIRT_URI', 'qemu:///system')


def pytest_collection_modifyitems(items):
    for item in items:
        if 'tests/live' in str(item.fspath):
            item.add_marker(pytest.mark.live)


def _unavailable(reason):
    if os.environ.get('NLS_REQUIRE_LIVE') == '1':
        pytest.fail('live test bed unavailable: %s' % reason, pytrace=False)
    pytest.skip(reason)


class Bed:
    """One test session's directories, configuration, engine and guest.

    Everything lives under a fresh directory in /var/tmp (QEMU, which may not
    run as root, must be able to traverse it) and a fresh staging directory
    in /dev/shm; both are removed at the end.
    """

    def __init__(self):
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.root = '/var/tmp/nls-live-%s' % tag
        os.makedirs(self.root, mode=0o711)
        os.chmod(self.root, 0o711)
        self.staging = '/dev/shm/nls-live-%s' % tag
        self.templates = '/dev/shm/nls-live-%s-templates' % tag
        # The namespace the test network lives in, from which guests are
        # reached.
        self.netns = NETNS
        self.conf = self.make_conf()
        self.engine = engine_mod.Engine(self.conf)
        self.host = self.engine.host
        self.guest_image = testbed.TestGuest(
            os.path.join(CACHE, 'guest'), os.path.join(self.root, 'sources'),
            network=NETWORK)
        self.mounts = []

    def make_conf(self, **overrides):
        """This session's ``[live_snapshot]`` group, with ``overrides``."""
        values = {'connection_uri': URI,
                  'image_dir': os.path.join(self.root, 'images'),
                  'clone_dir': os.path.join(self.root, 'clones'),
                  'staging_dir': self.staging,
                  'template_dir': self.templates,
                  'test_guest_dir': os.path.join(CACHE, 'guest'),
                  'clone_network': NETWORK,
                  # Debian 12's QEMU 7.2 opens a lazy template read-write
                  # (see test_shared_files for the default, which refuses).
                  'lazy_writable_templates': True}
        values.update(overrides)
        return conf_mod.new(**values)

    def engine_with(self, **overrides):
        return engine_mod.Engine(self.make_conf(**overrides), host=self.host)

    def name(self, what):
        return 'nlst-%s-%s-%s' % (self.tag, what, uuid.uuid4().hex[:4])

    def boot(self, what='src'):
        name = self.name(what)
        guest = self.guest_image.boot(self.host, name)
        testbed.wait_ready(guest, timeout=180)
        return guest

    def spawn(self, image, count=1, engine=None, exact_copy=False):
        """Spawn clones named after this session so cleanup finds them."""
        eng = engine or self.engine
        return eng.spawn(image, count=count,
                         prefix='nlst-%s-clone' % self.tag,
                         exact_copy=exact_copy)

    def destroy_all(self, clones, engine=None):
        eng = engine or self.engine
        for clone in clones:
            eng.destroy(clone.name)

    def tmpfs(self, name, size):
        """Mount a small tmpfs of ``size`` (e.g. '8m') under the bed."""
        path = os.path.join(self.root, name)
        os.makedirs(path, mode=0o711, exist_ok=True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0711'
                        % size, 'tmpfs', path], check=True)
        self.mounts.append(path)
        return path

    def netns_run(self, *argv):
        """Run a command inside the test network's namespace; its stdout."""
        return subprocess.run(['ip', 'netns', 'exec', NETNS] + list(argv),
                              capture_output=True, text=True).stdout

    def on_the_network(self, guest):
        """What the busybox guest's NIC reaches: (whether it sees a
        carrier, whether its DHCP client gets a lease on the network)."""
        rc, out, _ = guest.agent_exec(
            ['/bin/sh', '-c', 'cat /sys/class/net/eth0/carrier; udhcpc -n -q '
             '-t 3 -T 1 -i eth0 -s /bin/true 2>&1'], timeout=30)
        text = out.decode()
        return (text.split('\n')[0].strip() == '1',
                rc == 0 and 'obtained' in text)

    def ping(self, address):
        """Ping ``address`` from inside the test network's namespace."""
        return subprocess.run(
            ['ip', 'netns', 'exec', NETNS, 'ping', '-c', '1', '-W', '5',
             address], capture_output=True).returncode == 0

    def our_domains(self):
        return sorted(n for n in self.host.domain_names()
                      if n.startswith('nlst-%s-' % self.tag))

    def leftovers(self):
        """Files that must not outlive an operation."""
        found = glob.glob(os.path.join(self.root, '**', '*.fifo'),
                          recursive=True)
        found += glob.glob(os.path.join(self.root, 'images', '.partial-*'))
        found += glob.glob(os.path.join(self.templates, '.partial-*'))
        if os.path.isdir(self.staging):
            found += [os.path.join(self.staging, e)
                      for e in os.listdir(self.staging)]
        return found

    def close(self):
        for name in self.host.domain_names():
            if name.startswith('nlst-%s-' % self.tag) or name.startswith(
                    'nlst-%s' % self.tag):
                try:
                    self.host.lookup(name).remove()
                except exception.DomainNotFound:
                    pass
        # Template builds a failed test interrupted: their RAM is ours.
        for guest in self.host.active_guests():
            try:
                ram = domainxml.lazy_ram_file(guest.xml()) or ''
            except exception.LiveSnapshotError:
                continue
            if ram.startswith((self.templates, self.root + '/')):
                guest.remove()
        for path in reversed(self.mounts):
            subprocess.run(['umount', path], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.templates, ignore_errors=True)


@pytest.fixture(scope='session')
def bed():
    if os.geteuid() != 0:
        _unavailable('live tests need root')
    if not os.path.exists(os.path.join(CACHE, 'guest', 'guest.json')):
        _unavailable('test guest not built in %s/guest '
                     '(tools/build-test-guest.sh)' % CACHE)
    try:
        if not host_mod.Host(URI).network_active(NETWORK):
            _unavailable('libvirt network %s is not active '
                         '(tools/setup-host.sh)' % NETWORK)
    except exception.HypervisorError as e:
        _unavailable('libvirt: %s' % e)
    b = Bed()
    yield b
    b.close()


@pytest.fixture(scope='session')
def source(bed):
    """A running test guest whose workload is ready (shared, never stopped
    by a test)."""
    return bed.boot('src')


@pytest.fixture(scope='session')
def golden(bed, source):
    """A live image of ``source`` captured in the default (live) mode, with
    the workload state read just before and just after the capture."""
    before = testbed.read_workload(source)
    result = bed.engine.capture(source.name, 'golden-' + bed.tag)
    after = testbed.read_workload(source)
    return result, before, after


@pytest.fixture(autouse=True)
def no_leaks(request):
    """After every live test: no FIFO, staging or partial file remains, and
    no domain of the test remains unless a session fixture owns it."""
    if 'bed' not in request.fixturenames:
        yield
        return
    b = request.getfixturevalue('bed')
    before = set(b.our_domains())
    yield
    assert b.leftovers() == []
    clones = {c.name for c in b.engine.clones.list()}
    assert set(b.our_domains()) - before - clones == set()


@pytest.fixture(scope='session')
def debian_guest_dir():
    """Where tools/build-debian-guest.sh put the Debian guest."""
    guest_dir = os.path.join(CACHE, 'debian-guest')
    if not os.path.exists(os.path.join(guest_dir, 'guest.json')):
        _unavailable('Debian guest not built in %s '
                     '(tools/build-debian-guest.sh)' % guest_dir)
    return guest_dir


@pytest.fixture(scope='session')
def apps_guest_dir():
    """Where ``tools/build-debian-guest.sh --apps`` put the apps guest (a
    JVM service, PostgreSQL); NLS_APPS_GUEST_DIR overrides it."""
    guest_dir = os.environ.get('NLS_APPS_GUEST_DIR',
                               os.path.join(CACHE, 'apps-guest'))
    if not os.path.exists(os.path.join(guest_dir, 'guest.json')):
        _unavailable('apps guest not built in %s '
                     '(tools/build-debian-guest.sh --apps)' % guest_dir)
    return guest_dir


@pytest.fixture(scope='session')
def debian(bed, debian_guest_dir):
    """The real Debian guest (systemd, sshd, qemu-guest-agent, networkd),
    booted on the test network with its workload ready, as a TestGuest and
    the running source."""
    guest_dir = debian_guest_dir
    image = testbed.TestGuest(guest_dir, os.path.join(bed.root, 'debian'),
                              network=NETWORK)
    name = bed.name('deb')
    guest = image.boot(bed.host, name)
    testbed.wait_ready(guest, timeout=300)
    yield image, guest
    image.remove(bed.host, name)
