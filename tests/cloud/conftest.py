"""Fixtures for the end-to-end scenarios on the test cloud (tools/cloud).

The scenarios act as the cloud's users do: through the real ``openstack``
command with this project's plugin, against keystone, nova-api (stock
pipeline plus the filter), glance, placement and neutron-server, with
nova-compute running the driver on the host's libvirtd. What users cannot
see (a guest's agent, libvirt domains, files on the compute host, the
compute log) the scenarios read directly on the host, as an operator would
when checking what a command left behind.

``make cloud-test`` brings the cloud up, runs them and tears it down; it sets
``NLS_REQUIRE_CLOUD=1`` so that a cloud that is not up fails the run instead
of skipping it. Step times go to ``$NLS_RESULTS_DIR/cloud-e2e.json`` and into
the test report's summary.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

CLOUD_DIR = os.environ.get('NLS_CLOUD_DIR', '/var/tmp/nls-cloud')
CLOUDS_YAML = os.path.join(CLOUD_DIR, 'clouds.yaml')
#: The compute hosts, as the cloud describes them (tools/cloud/cloud.py
#: HOSTS_JSON): A on the machine's libvirtd, B in namespaces of its own.
HOSTS_JSON = os.path.join(CLOUD_DIR, 'run', 'hosts.json')
CLOUD_TOOL = os.path.join(os.path.dirname(__file__), '..', '..', 'tools',
                          'cloud', 'cloud.py')
OPENSTACK = os.path.join(os.path.dirname(sys.executable), 'openstack')
# The CLI asks for what the tests need (2.90: the hostname of a server).
COMPUTE_API = '2.90'

_timings = {}


def record_time(step, seconds):
    """Keep a step's wall time for the report and the results file."""
    _timings[step] = round(seconds, 2)


def pytest_terminal_summary(terminalreporter):
    if not _timings:
        return
    terminalreporter.section('end-to-end wall times (s)')
    for step, seconds in _timings.items():
        terminalreporter.write_line('%-48s %8.2f' % (step, seconds))
    out = os.environ.get('NLS_RESULTS_DIR')
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, 'cloud-e2e.json'), 'w') as f:
            json.dump(_timings, f, indent=2)


class CLIError(Exception):

    def __init__(self, argv, returncode, stdout, stderr):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__('%s exited %d: %s' % (' '.join(argv), returncode,
                                               stderr.strip()[-2000:]))


class CLI:
    """The ``openstack`` command as one of the cloud's users; ``network`` is
    the name of their project's network (tools/cloud/network.py), which
    every server of the scenarios is booted on."""

    def __init__(self, cloud, network=None):
        self.cloud = cloud
        self.network = network

    def __call__(self, *args, parse=True, timeout=900):
        argv = [OPENSTACK, '--os-cloud', self.cloud,
                '--os-compute-api-version', COMPUTE_API] + list(args)
        if parse:
            argv += ['-f', 'json']
        env = dict(os.environ, OS_CLIENT_CONFIG_FILE=CLOUDS_YAML)
        for var in [v for v in env if v.startswith('OS_') and
                    v != 'OS_CLIENT_CONFIG_FILE']:
            del env[var]
        result = subprocess.run(argv, capture_output=True, text=True,
                                env=env, timeout=timeout, check=False)
        if result.returncode:
            raise CLIError(argv, result.returncode, result.stdout,
                           result.stderr)
        if parse and result.stdout.strip():
            return json.loads(result.stdout)
        return result.stdout

    def fails(self, *args):
        """Run a command that must fail; its error output."""
        with pytest.raises(CLIError) as info:
            self(*args, parse=False)
        return info.value.stderr

    def server(self, name_or_id):
        return self('server', 'show', name_or_id)

    def wait_server(self, name_or_id, status, timeout=600):
        """Wait until the server reaches ``status`` (or ERROR, which fails
        unless it is the status waited for)."""
        def reached():
            server = self.server(name_or_id)
            if server['status'] == 'ERROR' and status != 'ERROR':
                raise AssertionError('server %s went to ERROR: %s' % (
                    name_or_id, server.get('fault')))
            return server if server['status'] == status else None
        return host_mod.wait_for(reached, timeout, interval=1,
                                 what='server %s to be %s' % (name_or_id,
                                                              status))

    def wait_gone(self, name_or_id, timeout=300):
        def gone():
            try:
                self('server', 'show', name_or_id, parse=False)
            except CLIError as e:
                return 'No Server found' in e.stderr or '404' in e.stderr
            return False
        host_mod.wait_for(gone, timeout, interval=1,
                          what='server %s to be deleted' % name_or_id)


@pytest.fixture(scope='session')
def cloud_ready():
    with open(os.devnull, 'w') as devnull:
        up = subprocess.run([sys.executable, CLOUD_TOOL, 'status'],
                            stdout=devnull, check=False).returncode == 0
    if not up:
        reason = 'the test cloud is not up (make cloud-up)'
        if os.environ.get('NLS_REQUIRE_CLOUD') == '1':
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope='session')
def demo(cloud_ready):
    return CLI('nls-demo', 'demo-net')


@pytest.fixture(scope='session')
def alt(cloud_ready):
    return CLI('nls-alt', 'alt-net')


@pytest.fixture(scope='session')
def admin(cloud_ready):
    return CLI('nls-admin')


@pytest.fixture(scope='session')
def demo_default(cloud_ready):
    """demo, through the nova-api that leaves the feature at its default."""
    return CLI('nls-demo-default', 'demo-net')


def hosts():
    """{'A': ..., 'B': ...}: each compute host's Nova name, libvirt URI,
    directories, log and service name."""
    with open(HOSTS_JSON) as f:
        return json.load(f)


class Compute:
    """A compute host as an operator sees it: its libvirt, Nova's and the
    driver's directories, its nova-compute's log and service.

    :param which: ``'A'`` (the machine's libvirtd) or ``'B'``
    """

    def __init__(self, admin, which='A'):
        desc = hosts()[which]
        self.admin = admin
        self.name = desc['host']
        self.host = host_mod.Host(desc['uri'])
        self.data = desc['data']
        self.instances = desc['instances']
        self.image_dir = desc['image_dir']
        self.cache_dir = desc['cache_dir']
        self.staging = desc['staging']
        self.log = desc['log']
        self.service = desc['service']
        self.zone = desc['zone']

    def guest(self, server_id):
        """The server's libvirt domain, whose agent the checks talk to."""
        name = self.admin.server(server_id)['OS-EXT-SRV-ATTR:instance_name']
        return self.host.lookup(name)

    def domain_names(self):
        return {d.name() for d in self.host.get_connection().listAllDomains()}

    def files(self, path):
        if not os.path.isdir(path):
            return []
        return sorted(os.listdir(path))

    def log_lines(self, pattern):
        regex = re.compile(pattern)
        with open(self.log, errors='replace') as f:
            return [line for line in f if regex.search(line)]

    def restart(self, kill=False, service=None, action='restart'):
        """Restart (or stop, or start) a service of the cloud through its
        supervisor, this host's nova-compute by default; with ``kill``,
        SIGKILL it first, as a crash would."""
        argv = [sys.executable, CLOUD_TOOL, action, service or self.service]
        if kill:
            argv.append('--kill')
        subprocess.run(argv, check=True, capture_output=True, timeout=300)

    def ovs_ports(self):
        """The ports of the cloud's integration bridge."""
        return set(subprocess.run(
            ['ovs-vsctl', 'list-ports', 'br-int'], check=True,
            capture_output=True, text=True).stdout.split())


@pytest.fixture(scope='session')
def compute(admin):
    """Host A, where the scenarios' servers land unless they say."""
    return Compute(admin)


@pytest.fixture(scope='session')
def compute_b(admin):
    """Host B: a libvirtd, virtlogd and Open vSwitch of its own in
    namespaces of their own (tools/cloud/computehost.py)."""
    return Compute(admin, 'B')


def wait_ready(guest, timeout=300):
    return testbed.wait_ready(guest, timeout=timeout)


def busybox_and_its_live_image(cli, compute, name):
    """A busybox server of ``cli``'s on host A, ready, and a live image of
    it: ``(server, image)``; the caller deletes both
    (:func:`delete_server_and_image`)."""
    server = cli('server', 'create', '--image', 'busybox-guest', '--flavor',
                 'nls.tiny', '--network', cli.network, '--wait',
                 '%s-source' % name)
    wait_ready(compute.guest(server['id']))
    image = cli('server', 'live-image', 'create', server['id'], '--name',
                '%s-image' % name, '--wait')
    return server, image


def delete_server_and_image(cli, server, image):
    cli('server', 'delete', '--wait', server['id'], parse=False)
    cli('server', 'live-image', 'delete', image['id'], parse=False)


class Stopwatch:

    def __init__(self):
        self.started = time.monotonic()

    def __call__(self):
        return time.monotonic() - self.started
