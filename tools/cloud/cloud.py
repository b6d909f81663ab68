"""A single-node OpenStack cloud for nova-live-snapshot's end-to-end tests.

Everything an operator would run, nothing faked: Debian's MariaDB and
RabbitMQ started by hand on loopback; keystone, placement, glance,
neutron-server and nova-api from PyPI, each under a WSGI server
(``wsgi_server.py``); nova-conductor, nova-scheduler and two compute
hosts, each a nova-compute with this project's driver: host A on the
machine's libvirtd, host B (``computehost.py``) on a libvirtd, virtlogd and
Open vSwitch in mount, UTS and network namespaces of their own. Nova's stock api-paste
pipeline gets this project's filter, as ``etc/api-paste.ini.snippet`` tells
operators to do. A second nova-api, configured with the feature left at its
default, shows what users of a cloud that did not turn it on see.

There is no init system on the machines this runs on, and PID 1 reaps
nobody: ``up`` starts a supervisor (this module's ``serve``, under ``tini
-s`` so that every orphan below it is reaped) that builds the cloud, starts
every service as its child, records their PIDs and stops them in reverse
order when it receives SIGTERM. ``down`` sends it that signal (or, if it
died, stops the recorded PIDs itself) and removes what the cloud left on
the hypervisor and in tmpfs.

Commands (run with the project's virtualenv python)::

    cloud.py up        build and start the cloud (fresh state every time)
    cloud.py down      stop it by PID; logs are kept
    cloud.py status    what runs, with PIDs
    cloud.py env       shell exports for the openstack CLI
    cloud.py logs      the last error lines of every service's log
    cloud.py restart SERVICE [--kill]
                       restart one service (SIGKILL first: a crash), and
                       what runs on it (ovs-vswitchd: the DHCP agent)
    cloud.py stop SERVICE [--kill], cloud.py start SERVICE
                       stop one service, start it again

State lives in ``$NLS_CLOUD_DIR`` (default ``/var/tmp/nls-cloud``):
``etc/`` (generated configuration), ``data/`` (databases, images, Nova's
state), ``instances/``, ``logs/`` (one file per service), ``run/`` (PIDs,
the ready marker) and ``clouds.yaml``.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request

import accounts
import computehost
import network

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(TOOLS))
VENV = sys.prefix
BIN = os.path.join(VENV, 'bin')
DIR = os.environ.get('NLS_CLOUD_DIR', '/var/tmp/nls-cloud')
CACHE = os.environ.get('NLS_CACHE_DIR', '/var/cache/nova-live-snapshot')

ETC = os.path.join(DIR, 'etc')
DATA = os.path.join(DIR, 'data')
LOGS = os.path.join(DIR, 'logs')
RUN = os.path.join(DIR, 'run')
INSTANCES = os.path.join(DIR, 'instances')
STAGING = '/dev/shm/nls-cloud-staging'
TEMPLATES = '/dev/shm/nls-cloud-templates'
#: Host A is the machine's own libvirtd (tools/setup-host.sh); host B has
#: one of its own (computehost.py).
MACHINE_LIBVIRT_URI = 'qemu:///system'
MACHINE_LIBVIRT_SOCKET = '/var/run/libvirt/libvirt-sock'
#: Where host A's nova-compute reaches the machine's libvirtd when that
#: daemon's socket does not admit the libvirt group (host_a_libvirt_uri).
LIBVIRT_RELAY_DIR = os.path.join(DIR, 'libvirt-relay')
LIBVIRT_RELAY_SOCKET = os.path.join(LIBVIRT_RELAY_DIR, 'libvirt-sock')
#: NLS_CLOUD_SHARED_HYPERVISOR=1: the machine's libvirtd runs other suites'
#: guests too (a developer machine; never CI).
SHARED_HYPERVISOR = os.environ.get('NLS_CLOUD_SHARED_HYPERVISOR') == '1'
#: The user host A's nova-compute runs as. Nova's resource audit reads the
#: disk of every domain on its libvirtd (qemu-img info, and it fails the
#: whole audit when it cannot: InvalidDiskInfo is not among the errors it
#: forgives), and other suites' disks are 0600, the QEMU user's: beside
#: them only root can audit. Host B's libvirtd is the cloud's alone.
HOST_A_USER = 'root' if SHARED_HYPERVISOR else 'nova'
#: Every compute host as the tests see it.
HOSTS_JSON = os.path.join(RUN, 'hosts.json')
#: Host B's availability zone (host A is in Nova's default one, nova).
HOST_B_ZONE = 'nls-b'
CLOUDS_YAML = os.path.join(DIR, 'clouds.yaml')
READY = os.path.join(RUN, 'ready.json')
FAILED = os.path.join(RUN, 'failed')
SUPERVISOR_PID = os.path.join(RUN, 'supervisor.pid')
RESTART_REQUEST = os.path.join(RUN, 'restart.json')
RESTART_DONE = os.path.join(RUN, 'restarted-%s.json')
_SUPERVISOR_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD,
                       signal.SIGUSR1}

REGION = 'RegionOne'
KEYSTONE = 'http://127.0.0.1:5000'
#: name: (port, WSGI application, catalog type, catalog path)
APIS = {
    'keystone': (5000, 'keystone.wsgi.api:application', 'identity', '/v3'),
    'placement': (8778, 'placement.wsgi.api:application', 'placement', ''),
    'glance': (9292, 'glance.wsgi.api:application', 'image', ''),
    'neutron': (9696, 'neutron.wsgi.api:application', 'network', ''),
    'nova': (8774, 'nova.wsgi.osapi_compute:application', 'compute',
             '/v2.1'),
}
#: The second nova-api: same cloud, the feature at its default (off).
NOVA_DEFAULT_PORT = 18774
SERVICE_USERS = ('nova', 'glance', 'neutron', 'placement')
#: Projects and users the scenarios act as (each a member of its project).
PROJECT_USERS = ('demo', 'alt')
FLAVORS = {
    # name: (RAM MiB, vCPUs, root disk GiB)
    'nls.tiny': (128, 1, 1),      # the busybox test guest
    'nls.small': (512, 1, 2),     # the Debian guest
    'nls.medium': (768, 1, 2),    # "a flavor with other RAM"
}
GUESTS = {
    # Glance image name: guest directory under the cache (tools/build-*)
    'busybox-guest': 'guest',
    'debian-guest': 'debian-guest',
}


def log(fmt, *args):
    print('%s cloud: %s' % (time.strftime('%H:%M:%S'), fmt % args),
          flush=True)


class CloudError(Exception):
    pass


def wait_for(predicate, timeout, what, interval=0.25):
    """Poll ``predicate`` until it returns a true value; its value, or
    CloudError naming ``what`` after ``timeout`` seconds."""
    from nova_live_snapshot import waiting
    try:
        return waiting.wait_for(predicate, timeout, interval=interval,
                                what=what)
    except TimeoutError as e:
        raise CloudError(str(e)) from None


def alive(pid):
    """True while ``pid`` runs: a zombie (exited, not reaped because its
    parent is PID 1 here) counts as gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ('Z', 'X')


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def run(argv, what=None, env=None, timeout=900):
    """Run a setup command; its output goes to the setup log."""
    log('running %s', what or ' '.join(argv))
    started = time.monotonic()
    result = subprocess.run(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True,
                            timeout=timeout, check=False)
    if result.returncode:
        raise CloudError('%s failed (exit %d):\n%s' % (
            what or argv[0], result.returncode, result.stdout[-4000:]))
    log('%s done in %.1f s', what or argv[0], time.monotonic() - started)
    return result.stdout


# --- configuration -------------------------------------------------------

class Secrets:
    """The cloud's passwords and the driver's signing key, made fresh for
    every cloud and kept in a 0600 file: the clouds.yaml the tests use is
    the only other place they appear."""

    def __init__(self, path):
        self.path = path
        self.values = {}

    def __getitem__(self, name):
        if name not in self.values:
            self.values[name] = secrets.token_hex(16)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, 'w') as f:
                json.dump(self.values, f)
        return self.values[name]


def render(template, dest, **values):
    with open(os.path.join(TOOLS, 'etc', template)) as f:
        text = string.Template(f.read()).substitute(values)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    return dest


def _auth_lines(user, password):
    return '\n'.join([
        'auth_type = password',
        'auth_url = %s/v3' % KEYSTONE,
        'project_domain_name = Default',
        'user_domain_name = Default',
        'project_name = service',
        'username = %s' % user,
        'password = %s' % password,
        'region_name = %s' % REGION,
    ])


def keystone_authtoken(user, password):
    return '\n'.join([
        '[keystone_authtoken]',
        'www_authenticate_uri = %s' % KEYSTONE,
        _auth_lines(user, password),
        'service_token_roles_required = true',
    ])


def nova_api_paste(dest):
    """Nova's stock api-paste.ini with the live snapshot filter added after
    keystonecontext, exactly as ``etc/api-paste.ini.snippet`` describes."""
    with open(os.path.join(VENV, 'etc', 'nova', 'api-paste.ini')) as f:
        text = f.read()
    with open(os.path.join(ROOT, 'etc', 'api-paste.ini.snippet')) as f:
        snippet = f.read()
    declaration = snippet[snippet.index('[filter:live_snapshot]'):]
    declaration = declaration[:declaration.index('\n\n') + 1]
    lines = []
    changed = 0
    for line in text.splitlines():
        if (line.startswith('keystone = ')
                and 'keystonecontext osapi_compute_app_v21' in line):
            line = line.replace('keystonecontext ',
                                'keystonecontext live_snapshot ')
            changed += 1
        lines.append(line)
    if changed != 1:
        raise CloudError("Nova's api-paste.ini has no v2.1 keystone "
                         "pipeline to add the filter to")
    with open(dest, 'w') as f:
        f.write('\n'.join(lines) + '\n\n' + declaration)


class Config:
    """Renders every service's configuration from tools/cloud/etc."""

    def __init__(self, pw, hosts):
        self.pw = pw
        self.hosts = hosts
        self.transport_url = 'rabbit://nls:%s@127.0.0.1:5672/' % pw['rabbit']

    def db_url(self, user, database):
        return ('mysql+pymysql://%s:%s@127.0.0.1/%s?charset=utf8'
                % (user, self.pw['db_' + user], database))

    def write(self):
        pw = self.pw
        common = dict(etc=ETC, data=DATA, venv=VENV,
                      transport_url=self.transport_url)
        # Each service reads its files as its own user: root's, readable
        # by the service's group (0640), as Debian installs /etc/nova.
        accounts.readable_by(render(
            'keystone.conf', os.path.join(ETC, 'keystone', 'keystone.conf'),
            db_password=pw['db_keystone'], **common), 'keystone')
        for svc, template, name in (
                ('placement', 'placement.conf', 'placement.conf'),
                ('glance', 'glance-api.conf', 'glance-api.conf'),
                ('neutron', 'neutron.conf', 'neutron.conf')):
            accounts.readable_by(render(
                template, os.path.join(ETC, svc, name),
                db_password=pw['db_' + svc],
                keystone_authtoken=keystone_authtoken(svc, pw[svc]),
                nova_auth=_auth_lines('neutron', pw['neutron']),
                **common), svc)
        accounts.readable_by(render(
            'ml2_conf.ini', os.path.join(ETC, 'neutron', 'plugins', 'ml2',
                                         'ml2_conf.ini')), 'neutron')
        databases = '\n'.join([
            '[api_database]',
            'connection = %s' % self.db_url('nova', 'nova_api'),
            '', '[database]',
            'connection = %s' % self.db_url('nova', 'nova')])
        # nova-compute gets no database (as in a real deployment: it talks
        # to the conductor); the API, conductor and scheduler share one
        # file; the second API leaves the feature at its default; each
        # compute host has its own file, with its own host, paths and
        # libvirt URI.
        host_a = dict(HOST_A, connection_uri=host_a_libvirt_uri())
        files = [('nova/nova.conf', databases, 'enabled = true', host_a),
                 ('nova/nova-cpu.conf', '', 'enabled = true', host_a),
                 ('nova-default/nova.conf', databases,
                  '# enabled: left at its default (false)', host_a)]
        for host in self.hosts:
            files.append((compute_conf(host.name), '', 'enabled = true',
                          host.nova_values()))
        for path, dbs, switch, host_values in files:
            path = os.path.join(ETC, path)
            render('nova.conf', path, db_password=pw['db_nova'],
                   databases=dbs,
                   keystone_authtoken=keystone_authtoken('nova', pw['nova']),
                   service_auth=_auth_lines('nova', pw['nova']),
                   live_snapshot_switch=switch,
                   privsep=accounts.privsep_sections(VENV, path),
                   signing_key=pw['signing_key'], **host_values, **common)
            accounts.readable_by(path, 'nova')
        for conf_dir in ('nova', 'nova-default'):
            nova_api_paste(os.path.join(ETC, conf_dir, 'api-paste.ini'))

    def nova(self, *args):
        return [os.path.join(BIN, 'nova-manage'), '--config-file',
                os.path.join(ETC, 'nova', 'nova.conf')] + list(args)

    def compute_files(self):
        """Every nova-compute's configuration file (host A's first)."""
        return [os.path.join(ETC, 'nova', 'nova-cpu.conf')] + [
            os.path.join(ETC, compute_conf(h.name)) for h in self.hosts]


#: Host A's nova-compute: the machine's hostname (Nova's default ``host``),
#: the cloud's own directories, the machine's libvirtd.
HOST_A = dict(host_option='# host: the machine\'s hostname (the default)',
              state_path=os.path.join(DATA, 'nova'), instances=INSTANCES,
              connection_uri=MACHINE_LIBVIRT_URI, ovsdb=network.OVSDB,
              live_snapshot_dir=os.path.join(DATA, 'live-snapshot'),
              staging=STAGING, templates=TEMPLATES)


def libvirt_socket_admits_group(path=MACHINE_LIBVIRT_SOCKET):
    """Whether libvirtd's read-write socket ``path`` lets the libvirt group
    in (tools/setup-host.sh configures it so: ``unix_sock_group``, 0770,
    no polkit), as Debian's libvirt-daemon-system does. A daemon started
    with the stock settings has a 0777 socket whose clients polkit must
    authorise, and there is no polkit daemon on these machines."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    try:
        gid = accounts.grp.getgrnam(accounts.LIBVIRT_GROUP).gr_gid
    except KeyError:
        return False
    return st.st_gid == gid and st.st_mode & 0o777 == 0o770


def host_a_libvirt_uri():
    """The URI host A's nova-compute reaches the machine's libvirtd on:
    its own socket when the libvirt group may use it; otherwise a socket of
    the cloud's (LIBVIRT_RELAY_SOCKET, group libvirt, 0660) that a relay
    run as root joins to it: a machine whose libvirtd was started before
    tools/setup-host.sh configured its socket (a running daemon is not the
    cloud's to restart). The relay passes bytes, not file descriptors:
    lazy restores, which pass one to QEMU, need the direct socket."""
    if libvirt_socket_admits_group():
        return MACHINE_LIBVIRT_URI
    return 'qemu:///system?socket=%s' % LIBVIRT_RELAY_SOCKET


def compute_conf(host_name):
    """The configuration file of ``host_name``'s nova-compute, under ETC."""
    return 'nova/nova-cpu-%s.conf' % host_name


def host_a_description():
    """Host A as the tests see it (hosts.json)."""
    live = HOST_A['live_snapshot_dir']
    return {'host': socket.gethostname(), 'uri': MACHINE_LIBVIRT_URI,
            'instances': INSTANCES, 'data': DATA,
            'image_dir': os.path.join(live, 'images'),
            'cache_dir': os.path.join(live, 'cache'), 'staging': STAGING,
            'log': os.path.join(LOGS, 'nova-compute.log'),
            'service': 'nova-compute', 'zone': 'nova', 'user': HOST_A_USER,
            'shared_hypervisor': SHARED_HYPERVISOR,
            'netns': '/run/netns/%s' % network.NETNS}


# --- services ------------------------------------------------------------

class Service:
    """One daemon of the cloud: started as a child of the supervisor in a
    session of its own, its PID recorded, its output in logs/<name>.log."""

    def __init__(self, name, argv, env=None, port=None, stop_timeout=30,
                 before_stop=None, user=None):
        """:param before_stop: called before the service is stopped while
            it runs (host B's libvirtd destroys its domains first).
        :param user: the service account it runs as (accounts.py), with
            that user's groups and home, nothing of root; None: as root."""
        self.before_stop = before_stop
        self.user = user
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.stop_timeout = stop_timeout
        self.proc = None

    @property
    def pid_file(self):
        return os.path.join(RUN, self.name + '.pid')

    def start(self):
        if self.port and _port_open(self.port):
            raise CloudError('port %d, which %s needs, is already in use'
                             % (self.port, self.name))
        env = dict(os.environ, **(self.env or {}))
        identity = {}
        if self.user is not None:
            uid, gid, groups = accounts.ids(self.user)
            identity = dict(user=uid, group=gid, extra_groups=groups,
                            cwd='/')
            home = os.path.expanduser('~' + self.user)
            env.update(HOME=home, USER=self.user, LOGNAME=self.user)
        with open(os.path.join(LOGS, self.name + '.log'), 'ab') as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                **identity)
        with open(self.pid_file, 'w') as f:
            f.write('%d\n' % self.proc.pid)
        log('started %s (pid %d%s)', self.name, self.proc.pid,
            ', as %s' % self.user if self.user else '')

    def check_running(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise CloudError('%s exited with %s; see %s' % (
                self.name, self.proc.returncode,
                os.path.join(LOGS, self.name + '.log')))

    def log_lines(self, pattern):
        regex = re.compile(pattern)
        with open(os.path.join(LOGS, self.name + '.log'), errors='replace') as f:
            return [line.strip() for line in f if regex.search(line)]

    def wait_http(self, path='/', timeout=180):
        url = 'http://127.0.0.1:%d%s' % (self.port, path)

        def answers():
            self.check_running()
            try:
                with urllib.request.urlopen(url, timeout=30):
                    return True
            except urllib.error.HTTPError as e:
                # Any answer from the application itself will do (401
                # from an API behind keystonemiddleware, 300 from a
                # version document); 5xx means it failed to load.
                return e.code < 500
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                return False
        wait_for(answers, timeout, '%s to answer on %s' % (self.name, url))
        log('%s answers on port %d', self.name, self.port)

    def stop(self):
        pid = read_pid(self.pid_file)
        if self.before_stop is not None and pid and alive(pid):
            self.before_stop()
        stop_pid(self.name, pid, self.stop_timeout)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
        if self.proc is not None:
            self.proc.poll()


def stop_pid(name, pid, timeout=30):
    """SIGTERM the service's process group (its session: workers, privsep
    helpers), SIGKILL what is left after ``timeout`` seconds."""
    if pid is None or not alive(pid):
        return
    log('stopping %s (pid %d)', name, pid)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        try:
            wait_for(lambda: not alive(pid), wait, '%s to exit' % name)
            return
        except CloudError:
            continue
    raise CloudError('%s (pid %d) did not exit' % (name, pid))


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(('127.0.0.1', port)) == 0


def wsgi(name, port, app, config_env, workers=1, threads=4, user=None):
    return Service(name, [os.path.join(BIN, 'python'),
                          os.path.join(TOOLS, 'wsgi_server.py'),
                          name, app, str(port), str(workers), str(threads)],
                   env=config_env, port=port, user=user)


class MariaDB(Service):
    def __init__(self):
        self.datadir = os.path.join(DATA, 'mysql')
        self.socket = os.path.join(RUN, 'mysqld.sock')
        super().__init__('mariadb', [
            'mariadbd', '--no-defaults', '--user=mysql',
            '--datadir=%s' % self.datadir, '--socket=%s' % self.socket,
            '--pid-file=%s' % os.path.join(RUN, 'mysqld.pid'),
            '--bind-address=127.0.0.1', '--port=3306',
            '--skip-name-resolve', '--max-connections=1000',
            '--innodb-buffer-pool-size=256M',
            '--character-set-server=utf8mb4'], port=3306)

    def install(self):
        os.makedirs(self.datadir)
        shutil.chown(self.datadir, 'mysql', 'mysql')
        shutil.chown(RUN, 'mysql')
        run(['mariadb-install-db', '--no-defaults', '--user=mysql',
             '--datadir=%s' % self.datadir, '--skip-test-db',
             '--auth-root-authentication-method=socket'], 'mariadb-install-db')

    def wait(self):
        wait_for(lambda: self.check_running() or subprocess.run(
            ['mariadb-admin', '--no-defaults', '-S', self.socket, '-u',
             'root', 'ping'], capture_output=True).returncode == 0,
            60, 'mariadb to answer')

    def sql(self, statements):
        subprocess.run(['mariadb', '--no-defaults', '-S', self.socket,
                        '-u', 'root'], input='\n'.join(statements),
                       text=True, check=True, capture_output=True)


class RabbitMQ(Service):
    def __init__(self):
        home = os.path.join(DATA, 'rabbitmq')
        self.env_vars = {
            'HOME': home,
            'RABBITMQ_NODENAME': 'rabbit@localhost',
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': '5672',
            'RABBITMQ_DIST_PORT': '25672',
            'ERL_EPMD_ADDRESS': '127.0.0.1',
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
                '-kernel inet_dist_use_interface {127,0,0,1}',
            'RABBITMQ_MNESIA_BASE': os.path.join(home, 'mnesia'),
            'RABBITMQ_LOG_BASE': LOGS,
            'RABBITMQ_PID_FILE': os.path.join(RUN, 'rabbitmq-beam.pid'),
            'RABBITMQ_CONFIG_FILE': os.path.join(home, 'rabbitmq'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(home, 'plugins'),
        }
        super().__init__('rabbitmq', ['/usr/lib/rabbitmq/bin/rabbitmq-server'],
                         env=self.env_vars, port=5672)

    def install(self):
        home = self.env_vars['HOME']
        os.makedirs(home, mode=0o700)
        with open(os.path.join(home, 'plugins'), 'w') as f:
            f.write('[].\n')
        open(os.path.join(home, 'rabbitmq.conf'), 'w').close()

    def ctl(self, *args):
        return run(['/usr/lib/rabbitmq/bin/rabbitmqctl'] + list(args),
                   'rabbitmqctl %s' % args[0],
                   env=dict(os.environ, **self.env_vars))

    def wait(self):
        self.ctl('wait', '--timeout', '120', self.env_vars['RABBITMQ_PID_FILE'])

    def stop(self):
        # The broker's own shutdown, then the Erlang port mapper it left.
        if alive(read_pid(self.pid_file) or 0):
            with contextlib.suppress(CloudError, subprocess.TimeoutExpired):
                self.ctl('stop')
        super().stop()
        subprocess.run(['epmd', '-kill'], capture_output=True, check=False)


# --- the cloud -----------------------------------------------------------

class Cloud:

    def __init__(self):
        self.pw = Secrets(os.path.join(DATA, 'secrets.json'))
        self.host_b = computehost.ComputeHost(sys.modules[__name__])
        self.config = Config(self.pw, [self.host_b])
        self.services = []
        self.timings = {}

    @contextlib.contextmanager
    def step(self, name):
        started = time.monotonic()
        yield
        self.timings[name] = round(time.monotonic() - started, 1)

    def start(self, service):
        service.start()
        self.services.append(service)
        return service

    def build(self):
        with self.step('accounts'):
            self.prepare_accounts()
        with self.step('database and queue'):
            self.start_backends()
        self.host_b.prepare()
        self.config.write()
        backend = network.Backend(self, sys.modules[__name__])
        backend.write_config()
        with self.step('keystone'):
            self.start_keystone()
        with self.step('identity'):
            self.register_identity()
        with self.step('schemas'):
            self.sync_schemas()
        with self.step('apis'):
            self.start_apis()
        with self.step('host B'):
            self.host_b.start_hypervisor(self)
        with self.step('network'):
            backend.start()
            self.host_b.start_network(self, backend)
            backend.create_project_networks()
        with self.step('nova services'):
            self.start_nova_services()
        with self.step('flavors and images'):
            self.load_flavors_and_images()
        self.write_clouds_yaml()
        hosts = {'A': host_a_description(),
                 'B': dict(self.host_b.description(), zone=HOST_B_ZONE)}
        with open(HOSTS_JSON, 'w') as f:
            json.dump(hosts, f, indent=2)

    def prepare_accounts(self):
        """The service users (accounts.py), their way to the interpreter,
        nova's sudoers rules for this cloud's privsep helpers, and the
        directories each service writes, its own."""
        accounts.ensure_users(log)
        accounts.grant_interpreter(sorted(accounts.SERVICE_ACCOUNTS), log)
        accounts.install_sudoers(accounts.sudoers(
            VENV, self.config.compute_files()), log)
        for path, user in ((os.path.join(DATA, 'nova'), 'nova'),
                           (INSTANCES, 'nova'),
                           (HOST_A['live_snapshot_dir'], 'nova'),
                           (STAGING, 'nova'), (TEMPLATES, 'nova'),
                           (os.path.join(DATA, 'glance'), 'glance'),
                           (os.path.join(DATA, 'neutron'), 'neutron')):
            # Traversable for the QEMU user (disks, console logs) where
            # nova's.
            os.makedirs(path, mode=0o711, exist_ok=True)
            os.chmod(path, 0o711)
            accounts.chown_tree(path, user)

    def start_backends(self):
        db = MariaDB()
        db.install()
        self.start(db)
        mq = RabbitMQ()
        mq.install()
        self.start(mq)
        db.wait()
        statements = []
        databases = {'keystone': ['keystone'], 'placement': ['placement'],
                     'glance': ['glance'], 'neutron': ['neutron'],
                     'nova': ['nova_api', 'nova', 'nova_cell0']}
        for user, names in databases.items():
            statements.append("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY "
                              "'%s';" % (user, self.pw['db_' + user]))
            for name in names:
                statements.append('CREATE DATABASE %s CHARACTER SET utf8;'
                                  % name)
                statements.append("GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                                  % (name, user))
        db.sql(statements)
        mq.wait()
        mq.ctl('add_user', 'nls', self.pw['rabbit'])
        mq.ctl('set_permissions', 'nls', '.*', '.*', '.*')
        mq.ctl('delete_user', 'guest')

    def start_keystone(self):
        conf = os.path.join(ETC, 'keystone', 'keystone.conf')
        manage = [os.path.join(BIN, 'keystone-manage'), '--config-file', conf]
        for what in ('fernet_setup', 'credential_setup'):
            run(manage + [what, '--keystone-user', 'keystone',
                          '--keystone-group', 'keystone'], 'keystone ' + what)
        run(manage + ['db_sync'], 'keystone db_sync')
        run(manage + ['bootstrap', '--bootstrap-password',
                      self.pw['admin'],
                      '--bootstrap-admin-url', KEYSTONE + '/v3',
                      '--bootstrap-internal-url', KEYSTONE + '/v3',
                      '--bootstrap-public-url', KEYSTONE + '/v3',
                      '--bootstrap-region-id', REGION],
            'keystone bootstrap')
        port, app, _, _ = APIS['keystone']
        ks = self.start(wsgi('keystone', port, app, {
            'OS_KEYSTONE_CONFIG_DIR': os.path.join(ETC, 'keystone')},
            workers=2, threads=2, user='keystone'))
        ks.wait_http('/v3')

    def admin(self):
        import openstack
        return openstack.connect(
            auth_url=KEYSTONE + '/v3', username='admin',
            password=self.pw['admin'], project_name='admin',
            user_domain_name='Default', project_domain_name='Default',
            region_name=REGION)

    def register_identity(self):
        conn = self.admin()
        ident = conn.identity
        service_project = ident.create_project(name='service',
                                               domain_id='default')
        roles = {r.name: r for r in ident.roles()}
        for name in ('service', 'member', 'reader'):
            if name not in roles:
                roles[name] = ident.create_role(name=name)
        for user in SERVICE_USERS:
            u = ident.create_user(name=user, password=self.pw[user],
                                  domain_id='default')
            for role in ('admin', 'service'):
                ident.assign_project_role_to_user(service_project, u,
                                                  roles[role])
        for name in PROJECT_USERS:
            p = ident.create_project(name=name, domain_id='default')
            u = ident.create_user(name=name, password=self.pw[name],
                                  domain_id='default',
                                  default_project_id=p.id)
            ident.assign_project_role_to_user(p, u, roles['member'])
        for name, (port, _, kind, path) in APIS.items():
            if name == 'keystone':
                continue
            svc = ident.create_service(name=name, type=kind)
            for interface in ('public', 'internal'):
                ident.create_endpoint(
                    service_id=svc.id, interface=interface, region_id=REGION,
                    url='http://127.0.0.1:%d%s' % (port, path))

    def sync_schemas(self):
        """The four schema migrations are independent: run them at once."""
        conf = {svc: os.path.join(ETC, svc, name) for svc, name in (
            ('placement', 'placement.conf'), ('glance', 'glance-api.conf'),
            ('neutron', 'neutron.conf'))}
        nova_conf = self.config.nova
        jobs = [
            [os.path.join(BIN, 'placement-manage'), '--config-file',
             conf['placement'], 'db', 'sync'],
            [os.path.join(BIN, 'glance-manage'), '--config-file',
             conf['glance'], 'db_sync'],
            [os.path.join(BIN, 'neutron-db-manage'), '--config-file',
             conf['neutron'], '--config-file',
             os.path.join(ETC, 'neutron', 'plugins', 'ml2', 'ml2_conf.ini'),
             'upgrade',
             'heads'],
            ['/bin/sh', '-ec', ' && '.join(' '.join(a) for a in (
                nova_conf('api_db', 'sync'),
                nova_conf('cell_v2', 'map_cell0', '--database_connection',
                          "'%s'" % self.config.db_url('nova', 'nova_cell0')),
                nova_conf('cell_v2', 'create_cell', '--name', 'cell1'),
                nova_conf('db', 'sync')))],
        ]
        log('running the placement, glance, neutron and nova schema '
            'migrations')
        procs = [(job, subprocess.Popen(job, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
                 for job in jobs]
        errors = []
        for job, proc in procs:
            out, _ = proc.communicate(timeout=900)
            if proc.returncode:
                errors.append('%s (exit %d):\n%s' % (
                    ' '.join(job[:4]), proc.returncode, out[-3000:]))
        if errors:
            raise CloudError('schema migration failed: ' + '\n'.join(errors))

    def start_apis(self):
        apis = []
        for name, env_var, conf_dir in (
                ('placement', 'OS_PLACEMENT_CONFIG_DIR', 'placement'),
                ('glance', 'OS_GLANCE_CONFIG_DIR', 'glance'),
                ('neutron', 'OS_NEUTRON_CONFIG_DIR', 'neutron'),
                ('nova', 'OS_NOVA_CONFIG_DIR', 'nova')):
            port, app, _, _ = APIS[name]
            apis.append(self.start(wsgi(
                name + '-api' if name in ('nova', 'glance') else name,
                port, app, {env_var: os.path.join(ETC, conf_dir)},
                workers=2 if name == 'nova' else 1, user=name)))
        apis.append(self.start(wsgi(
            'nova-api-default', NOVA_DEFAULT_PORT, APIS['nova'][1],
            {'OS_NOVA_CONFIG_DIR': os.path.join(ETC, 'nova-default')},
            user='nova')))
        for api in apis:
            api.wait_http()
        # neutron 29 under a WSGI server: until some query has configured
        # SQLAlchemy's mappers, GET /v2.0/ports fails with "type object
        # 'Port' has no attribute 'port_forwardings'" (get_ports names that
        # backref before querying), and nova-api turns that into a 500 on
        # every server show. Listing networks first configures them; the
        # ports listing proves it.
        conn = self.admin()
        list(conn.network.networks())
        list(conn.network.ports())

    def start_nova_services(self):
        conf = os.path.join(ETC, 'nova', 'nova.conf')
        cpu_conf = os.path.join(ETC, 'nova', 'nova-cpu.conf')
        if not libvirt_socket_admits_group():
            self.start_libvirt_relay()
        # Now, not when ovsdb-server starts: it makes its sockets again
        # (root's, 0750) when the OVS agent sets its manager.
        for sock in (network.OVSDB, self.host_b.ovsdb):
            network.share_ovsdb_socket(sock[len('unix:'):])
        # Every Nova service as nova (accounts.py): nova-compute's root
        # operations go through its privsep helpers, started with sudo.
        services = [Service(name, [os.path.join(BIN, 'nova-' + binary),
                                   '--config-file', conf_file],
                            stop_timeout=60, user=user)
                    for name, binary, conf_file, user in (
                        ('nova-conductor', 'conductor', conf, 'nova'),
                        ('nova-scheduler', 'scheduler', conf, 'nova'),
                        ('nova-compute', 'compute', cpu_conf,
                         None if HOST_A_USER == 'root' else HOST_A_USER),
                        (self.host_b.description()['service'], 'compute',
                         os.path.join(ETC, compute_conf(self.host_b.name)),
                         'nova'))]
        for service in services[:2]:
            self.start(service)
        if SHARED_HYPERVISOR:
            log('NLS_CLOUD_SHARED_HYPERVISOR=1: registering nova-compute in '
                'advance; other guests on this libvirtd are ignored; host '
                'A\'s nova-compute runs as root (Nova\'s resource audit must '
                'read their disks), host B\'s as nova')
            run([os.path.join(BIN, 'python'),
                 os.path.join(TOOLS, 'preregister_compute.py'), conf],
                'preregister_compute.py')
        else:
            wait_for_no_domains()
        computes = [self.start(service) for service in services[2:]]
        conn = self.admin()

        def compute_ready():
            for svc in self.services:
                svc.check_running()
            # nova-compute does not exit when its start-up fails.
            for compute in computes:
                critical = compute.log_lines(r'^\S+ \S+ \d+ CRITICAL ')
                if critical:
                    raise CloudError('%s failed to start: %s'
                                     % (compute.name, critical[0]))
            rps = list(conn.placement.resource_providers())
            if len(rps) < len(computes):
                return None
            for rp in rps:
                traits = conn.placement.get(
                    '/resource_providers/%s/traits' % rp.id,
                    microversion='1.6').json()['traits']
                if 'CUSTOM_LIVE_SNAPSHOT' not in traits:
                    return None
            up = [s for s in conn.compute.services()
                  if s.state == 'up']
            return (len(up) >= 2 + len(computes)
                    and len(list(conn.compute.hypervisors()))
                    == len(computes))
        wait_for(compute_ready, 300, 'both nova-compute services to report '
                 'their hosts with the CUSTOM_LIVE_SNAPSHOT trait',
                 interval=2)
        # The scheduler maps new hosts every 2 s; this makes sure it is
        # done before the first boot.
        run(self.config.nova('cell_v2', 'discover_hosts'),
            'nova-manage cell_v2 discover_hosts')
        # Each host a zone of its own: servers that name no zone land on
        # host A (default_schedule_zone = nova), as the single-host
        # scenarios expect; the two-host ones ask for zone HOST_B_ZONE.
        # Host A's zone must be an aggregate too: Nova maps a requested
        # zone to placement aggregates (map_az_to_placement_aggregate), and
        # a zone no aggregate names filters nothing (seen: a server with
        # zone nova scheduled to host B).
        for host, zone in ((host_a_description()['host'], 'nova'),
                           (self.host_b.name, HOST_B_ZONE)):
            aggregate = conn.compute.create_aggregate(
                name='zone-' + zone, availability_zone=zone)
            conn.compute.add_host_to_aggregate(aggregate, host)
        log('both nova-compute services are up; their hosts carry '
            'CUSTOM_LIVE_SNAPSHOT; %s is zone %s', self.host_b.name,
            HOST_B_ZONE)

    def start_libvirt_relay(self):
        """host_a_libvirt_uri's relay: a socket of group libvirt, 0660,
        joined by root to the machine's libvirtd."""
        log('the machine\'s libvirtd socket does not admit the %s group '
            '(it was started before tools/setup-host.sh configured it): '
            'host A\'s nova-compute reaches it through %s',
            accounts.LIBVIRT_GROUP, LIBVIRT_RELAY_SOCKET)
        os.makedirs(LIBVIRT_RELAY_DIR, exist_ok=True)
        os.chown(LIBVIRT_RELAY_DIR, 0,
                 accounts.grp.getgrnam(accounts.LIBVIRT_GROUP).gr_gid)
        os.chmod(LIBVIRT_RELAY_DIR, 0o750)
        self.start(Service('libvirt-relay', [
            'socat', 'UNIX-LISTEN:%s,fork,unlink-early,mode=660,group=%s'
            % (LIBVIRT_RELAY_SOCKET, accounts.LIBVIRT_GROUP),
            'UNIX-CONNECT:%s' % MACHINE_LIBVIRT_SOCKET]))
        wait_for(lambda: os.path.exists(LIBVIRT_RELAY_SOCKET), 30,
                 'the libvirt relay to listen')

    def load_flavors_and_images(self):
        conn = self.admin()
        for name, (ram, vcpus, disk) in FLAVORS.items():
            conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus,
                                       disk=disk, is_public=True)
        for name, subdir in GUESTS.items():
            guest_dir = os.path.join(CACHE, subdir)
            with open(os.path.join(guest_dir, 'guest.json')) as f:
                spec = json.load(f)
            started = time.monotonic()
            image = conn.image.create_image(
                name=name, filename=os.path.join(guest_dir, spec['disk']),
                disk_format=spec['disk_format'], container_format='bare',
                visibility='public', hw_qemu_guest_agent='yes',
                wait=True, timeout=600, validate_checksum=False)
            log('uploaded %s (%s) in %.1f s', name, image.id,
                time.monotonic() - started)

    def write_clouds_yaml(self):
        def cloud(user, project, **extra):
            entry = {'auth': {'auth_url': KEYSTONE + '/v3', 'username': user,
                              'password': self.pw[user],
                              'project_name': project,
                              'user_domain_name': 'Default',
                              'project_domain_name': 'Default'},
                     'region_name': REGION, 'identity_api_version': 3}
            entry.update(extra)
            return entry
        clouds = {'clouds': {
            'nls-admin': cloud('admin', 'admin'),
            'nls-demo': cloud('demo', 'demo'),
            'nls-alt': cloud('alt', 'alt'),
            # The same cloud through the nova-api whose configuration leaves
            # the feature at its default.
            'nls-demo-default': cloud(
                'demo', 'demo', compute_endpoint_override=(
                    'http://127.0.0.1:%d/v2.1' % NOVA_DEFAULT_PORT)),
        }}
        fd = os.open(CLOUDS_YAML, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, 'w') as f:
            # JSON is YAML: no YAML writer needed.
            json.dump(clouds, f, indent=2)

    def reap(self):
        for service in self.services:
            if (service.proc.poll() is not None
                    and os.path.exists(service.pid_file)):
                log('%s exited with %s', service.name,
                    service.proc.returncode)
                os.unlink(service.pid_file)

    def restart_requested(self):
        """Serve ``cloud.py restart|stop|start``: the request names the
        service, the action and, for restart and stop, whether to SIGKILL
        it (a crash) rather than stop it. Restarting a service restarts
        what depends on its processes too (network.RESTARTS_WITH)."""
        with open(RESTART_REQUEST) as f:
            request = json.load(f)
        os.unlink(RESTART_REQUEST)
        action = request.get('action', 'restart')
        service = next(s for s in self.services
                       if s.name == request['service'])
        pid = service.proc.pid if service.proc.poll() is None else None
        if action in ('restart', 'stop') and pid is not None:
            if request['kill']:
                log('killing %s (pid %d)', service.name, pid)
                os.killpg(pid, signal.SIGKILL)
                wait_for(lambda: service.proc.poll() is not None, 60,
                         '%s to die' % service.name)
            else:
                service.stop()
        started = []
        if action in ('restart', 'start'):
            started.append(service)
            if action == 'restart':
                started += [s for s in self.services if s.name in
                            network.RESTARTS_WITH.get(service.name, ())]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
        try:
            for svc in started:
                if svc is not service:
                    svc.stop()
                svc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        with open(RESTART_DONE % request['id'], 'w') as f:
            json.dump({'old_pid': pid, 'pid': service.proc.pid
                       if action != 'stop' else None}, f)

    def stop_all(self):
        for service in reversed(self.services):
            try:
                service.stop()
            except CloudError as e:
                log('%s', e)


class Stop(BaseException):
    """SIGTERM or SIGINT while the cloud is being built."""


def _raise_stop(signum, frame):
    raise Stop('signal %d' % signum)


def serve():
    """The supervisor: build the cloud, then wait for SIGTERM.

    The signals stay unblocked while services are started (children
    inherit the signal mask, and a service with SIGTERM blocked could not
    be stopped): until the cloud is up they interrupt the build instead.
    """
    os.makedirs(RUN, exist_ok=True)
    with open(SUPERVISOR_PID, 'w') as f:
        f.write('%d\n' % os.getpid())
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    cloud = Cloud()
    started = time.monotonic()
    try:
        try:
            cloud.build()
        except BaseException as e:
            log('the cloud failed to start: %s', e)
            with open(FAILED, 'w') as f:
                f.write('%s\n' % e)
            raise
        with open(READY, 'w') as f:
            json.dump({'seconds': round(time.monotonic() - started, 1),
                       'steps': cloud.timings,
                       'pids': {s.name: s.proc.pid for s in cloud.services}},
                      f, indent=2)
        log('the cloud is up in %.0f s: %s', time.monotonic() - started,
            ', '.join('%s %s s' % kv for kv in cloud.timings.items()))
        signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        while True:
            sig = signal.sigwait(_SUPERVISOR_SIGNALS)
            if sig == signal.SIGUSR1:
                cloud.restart_requested()
            elif sig == signal.SIGCHLD:
                cloud.reap()
            else:
                break
    finally:
        # A second signal must not interrupt the orderly stop.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log('stopping the cloud')
        cloud.stop_all()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(READY)
        log('the cloud is down')


def up():
    pid = read_pid(SUPERVISOR_PID)
    if pid and alive(pid) and os.path.exists(READY):
        log('already up (supervisor pid %d)', pid)
        return 0
    down()
    for path in (ETC, DATA, RUN, INSTANCES, os.path.join(DIR, 'hosts')):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.isdir(LOGS):
        shutil.rmtree(LOGS + '.previous', ignore_errors=True)
        os.rename(LOGS, LOGS + '.previous')
    for path in (DIR, ETC, DATA, LOGS, RUN):
        os.makedirs(path, exist_ok=True)
    os.chmod(DIR, 0o711)
    # Traversable for the mysql and libvirt-qemu users, listable by root
    # only; the secrets in it are 0600.
    os.chmod(DATA, 0o711)
    cloud_log = os.path.join(LOGS, 'cloud.log')
    with open(cloud_log, 'ab') as out:
        supervisor = subprocess.Popen(
            ['tini', '-s', '--', sys.executable, os.path.abspath(__file__),
             'serve'], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    shown = 0

    def settled():
        nonlocal shown
        with open(cloud_log) as f:
            f.seek(shown)
            text = f.read()
            shown += len(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        return (os.path.exists(READY) or os.path.exists(FAILED)
                or supervisor.poll() is not None)
    wait_for(settled, 1800, 'the cloud to start', interval=0.5)
    if not os.path.exists(READY):
        # The supervisor stops what it started; wait for that, then sweep.
        wait_for(lambda: supervisor.poll() is not None, 600,
                 'the supervisor to stop the services it started')
        log('failed; logs in %s', LOGS)
        down()
        return 1
    log('clouds.yaml: %s', CLOUDS_YAML)
    return 0


def down():
    pid = read_pid(SUPERVISOR_PID)
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), 300, 'the supervisor to stop')
    # Whatever a dead supervisor left running.
    if os.path.isdir(RUN):
        for name in sorted(os.listdir(RUN)):
            if name.endswith('.pid') and name not in (
                    'supervisor.pid', 'mysqld.pid', 'rabbitmq-beam.pid'):
                stop_pid(name[:-4], read_pid(os.path.join(RUN, name)))
    remove_domains()
    # Host B's QEMU processes, if its libvirtd died before it could stop
    # them; its namespaces, mounts and veth went with its processes.
    computehost.ComputeHost(sys.modules[__name__]).sweep()
    network.cleanup(DATA, log)
    shutil.rmtree(STAGING, ignore_errors=True)
    shutil.rmtree(TEMPLATES, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SUPERVISOR_PID)
    return 0


def wait_for_no_domains(timeout=None):
    """Wait until libvirtd runs no domain.

    A nova-compute that registers a new service refuses to start when the
    hypervisor already has domains ("My hypervisor has existing instances,
    but I appear to be a new service"): a guard against pointing a compute
    at the wrong database. On a host where other tests run guests, the
    cloud's compute can only be born in a moment without them.
    """
    from nova_live_snapshot import host as host_mod
    if timeout is None:
        timeout = int(os.environ.get('NLS_CLOUD_DOMAIN_WAIT', '900'))
    host = host_mod.Host(MACHINE_LIBVIRT_URI)
    try:
        seen = set()

        def none_left():
            names = set(host.domain_names())
            if names - seen:
                log('waiting for these domains to go before nova-compute '
                    'can register a new host: %s', ', '.join(sorted(names)))
                seen.update(names)
            return not names
        wait_for(none_left, timeout, 'libvirtd to run no domain (set '
                 'NLS_CLOUD_SHARED_HYPERVISOR=1 on a developer machine whose '
                 'libvirtd runs other guests)', interval=0.1)
    finally:
        host.close()


def remove_domains(uri=MACHINE_LIBVIRT_URI,
                   ours=lambda xml: INSTANCES + '/' in xml):
    """Destroy and undefine the cloud's domains on libvirt ``uri``: on the
    machine's libvirtd those whose disks are in INSTANCES (Nova's instances
    live there); ``ours`` tells from a domain's XML."""
    import libvirt
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains():
            if not ours(dom.XMLDesc(0)):
                continue
            log('removing leftover domain %s', dom.name())
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


def status():
    pid = read_pid(SUPERVISOR_PID)
    state = 'up' if pid and alive(pid) and os.path.exists(READY) else 'down'
    print('cloud: %s (supervisor pid %s, state in %s)' % (state, pid, DIR))
    if os.path.isdir(RUN):
        for name in sorted(os.listdir(RUN)):
            if name.endswith('.pid') and name != 'supervisor.pid':
                p = read_pid(os.path.join(RUN, name))
                print('  %-18s pid %-8s %s' % (
                    name[:-4], p, 'running' if p and alive(p) else 'gone'))
    return 0 if state == 'up' else 3


def restart(service, kill=False, action='restart'):
    """Have the supervisor restart, stop or start one service (SIGKILL
    first with ``kill``); returns once it is done."""
    pid = read_pid(SUPERVISOR_PID)
    if not (pid and alive(pid) and os.path.exists(READY)):
        raise CloudError('the cloud is not up')
    with open(READY) as f:
        if service not in json.load(f)['pids']:
            raise CloudError('no service %r in this cloud' % service)
    request_id = secrets.token_hex(4)
    with open(RESTART_REQUEST, 'w') as f:
        json.dump({'service': service, 'kill': kill, 'id': request_id,
                   'action': action}, f)
    os.kill(pid, signal.SIGUSR1)
    done = RESTART_DONE % request_id
    wait_for(lambda: os.path.exists(done), 180,
             'the supervisor to %s %s' % (action, service))
    with open(done) as f:
        result = json.load(f)
    os.unlink(done)
    log('%s %s: pid %s, was %s', service, {'restart': 'restarted',
                                           'stop': 'stopped',
                                           'start': 'started'}[action],
        result['pid'], result['old_pid'])
    return 0


def show_logs(lines=15):
    """The last errors of every service, for a failed run's output."""
    pattern = re.compile(r'^\S+ \S+ \d+ (ERROR|CRITICAL) |Traceback|'
                         r'\[ERROR\]')
    if not os.path.isdir(LOGS):
        return 0
    for name in sorted(os.listdir(LOGS)):
        with open(os.path.join(LOGS, name), errors='replace') as f:
            errors = [line.rstrip() for line in f if pattern.search(line)]
        if errors:
            print('==> %s: %d error lines, the last %d:' % (
                os.path.join(LOGS, name), len(errors),
                min(lines, len(errors))))
            for line in errors[-lines:]:
                print('    ' + line[:400])
    return 0


def env():
    print('export OS_CLIENT_CONFIG_FILE=%s' % CLOUDS_YAML)
    print('export OS_CLOUD=nls-demo')
    return 0


def main(argv):
    commands = {'up': up, 'down': down, 'status': status, 'env': env,
                'logs': show_logs, 'serve': serve}
    if argv[:1] in (['restart'], ['stop']) and len(argv) in (2, 3) and (
            len(argv) == 2 or argv[2] == '--kill'):
        command = lambda: restart(argv[1], kill=len(argv) == 3,  # noqa
                                  action=argv[0])
    elif argv[:1] == ['start'] and len(argv) == 2:
        command = lambda: restart(argv[1], action='start')  # noqa
    elif len(argv) == 1 and argv[0] in commands:
        command = commands[argv[0]]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print('cloud.py: run as root (it starts MariaDB, RabbitMQ and '
              'nova-compute)', file=sys.stderr)
        return 2
    try:
        return command() or 0
    except CloudError as e:
        print('cloud.py: %s' % e, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
