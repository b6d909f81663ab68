"""A second compute host on the same machine, in namespaces of its own.

A real cloud has many compute hosts; this machine has one libvirtd (the
machine's, in the ``nls-test`` network namespace). Host B is a second,
independent one: ``virtlogd``, ``libvirtd`` and an Open vSwitch of its own
(``ovsdb-server``, ``ovs-vswitchd`` and a ``neutron-openvswitch-agent``
reporting ``host = nls-host-b``) run in new mount, UTS and network
namespaces. Per-host directories are bind-mounted over ``/etc/libvirt``,
``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt``,
``/var/cache/libvirt``, ``/run/openvswitch`` and ``/etc/hosts`` inside them,
so every tool there finds its own host's daemons on the default paths, and
the main libvirtd sees nothing of host B (its own domains, sockets, taps).

Its nova-compute stays in the host's namespaces next to RabbitMQ and the
APIs, as the first one does, with its own ``host``, ``state_path``,
``instances_path``, ``lock_path``, the driver's directories, ``[libvirt]
connection_uri = qemu:///system?socket=<root>/run/libvirt/libvirt-sock`` and
``[os_vif_ovs] ovsdb_connection`` on host B's switch.

The network: a guest's tap appears in its libvirtd's network namespace, and
Open vSwitch's userspace datapath opens taps by name in its own, so host A's
switch (in ``nls-test``) can never take host B's taps: host B needs its own
switch and OVS agent, as a real compute host has. The project networks are
VLANs of the provider network ``physnet1`` (tools/cloud/network.py); each
host's agent maps it to its ``br-phys``, and a veth pair, one end in
``nls-test`` on host A's ``br-phys``, the other in host B's namespace on
its ``br-phys``, is the wire between the hosts (VLAN tags are pushed and
popped by OVS in userspace: the kernel needs no VLAN devices).

Everything dies with the namespaces: the anchor process (``virtlogd``, run
by ``unshare`` itself) holds them; the daemons entered into them are
services of the supervisor, stopped by PID in reverse order (host B's
domains are destroyed before its libvirtd stops); the veth pair goes with
host B's network namespace and the private mounts with its mount namespace.
"""

import glob
import os
import shutil
import signal
import uuid

import network

#: The second host's name: its hostname (UTS namespace), Nova's and the OVS
#: agent's ``host``, and the compute node's name.
HOST_B = 'nls-host-b'
#: The wire between the hosts' br-phys: (host A's end in nls-test, host B's).
TRUNK = ('nls-trunk-a', 'nls-trunk-b')
#: libvirtd.conf lines giving the libvirt group the read-write socket
#: (tools/setup-host.sh writes the same for the machine's libvirtd).
LIBVIRTD_SOCKET_CONF = '''unix_sock_group = "libvirt"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
'''
#: Where each per-host directory is mounted inside the namespaces.
BIND_MOUNTS = (
    ('etc/libvirt', '/etc/libvirt'),
    ('run/libvirt', '/run/libvirt'),
    ('lib/libvirt', '/var/lib/libvirt'),
    ('log/libvirt', '/var/log/libvirt'),
    ('cache/libvirt', '/var/cache/libvirt'),
    ('run/openvswitch', '/run/openvswitch'),
)

# Runs as the anchor: unshare has made the namespaces; refuse to mount
# anything unless they really are new ones (a bind mount over /etc/libvirt
# in the machine's own mount namespace would take the main libvirtd's
# configuration away), then the mounts, the hostname, loopback up, and
# virtlogd in the foreground holding it all.
_ANCHOR = r'''
set -eu
root=$1; host=$2; outer_mnt=$3; outer_uts=$4; outer_net=$5
for ns in mnt:$outer_mnt uts:$outer_uts net:$outer_net; do
    if [ "$(readlink /proc/self/ns/${ns%%:*})" = "${ns#*:}" ]; then
        echo "computehost: not in a new ${ns%%:*} namespace" >&2; exit 1
    fi
done
while read -r src dest; do
    mount --bind "$root/$src" "$dest"
done <<EOF
%s
EOF
mount --bind "$root/etc/hosts" /etc/hosts
hostname "$host"
ip link set lo up
exec virtlogd -p /run/libvirt/virtlogd.pid
''' % '\n'.join('%s %s' % pair for pair in BIND_MOUNTS)


class ComputeHost:
    """Host B of the cloud: its directories, its namespaces' services and
    its nova-compute's configuration values.

    :param ctx: the cloud module (Service, run, wait_for, paths, log)
    """

    def __init__(self, ctx, name=HOST_B):
        self.ctx = ctx
        self.name = name
        self.root = os.path.join(ctx.DIR, 'hosts', name)
        self.data = os.path.join(self.root, 'data')
        self.instances = os.path.join(self.root, 'instances')
        self.socket = os.path.join(self.root, 'run', 'libvirt',
                                   'libvirt-sock')
        self.uri = 'qemu:///system?socket=%s' % self.socket
        self.ovsdb = 'unix:%s' % os.path.join(self.root, 'run',
                                              'openvswitch', 'db.sock')
        self.staging = '/dev/shm/nls-cloud-staging-%s' % name
        self.templates = '/dev/shm/nls-cloud-templates-%s' % name
        self.anchor = None

    # The nova-compute of this host --------------------------------------

    def nova_values(self):
        """What tools/cloud/etc/nova.conf needs for this host's
        nova-compute."""
        return dict(host_option='host = %s' % self.name,
                    state_path=os.path.join(self.data, 'nova'),
                    instances=self.instances, connection_uri=self.uri,
                    ovsdb=self.ovsdb,
                    live_snapshot_dir=os.path.join(self.data,
                                                   'live-snapshot'),
                    staging=self.staging, templates=self.templates)

    def description(self):
        """The host as the end-to-end tests see it (cloud.HOSTS_JSON)."""
        values = self.nova_values()
        return {'host': self.name, 'uri': self.uri,
                'instances': self.instances,
                'data': self.data,
                'image_dir': os.path.join(values['live_snapshot_dir'],
                                          'images'),
                'cache_dir': os.path.join(values['live_snapshot_dir'],
                                          'cache'),
                'staging': self.staging,
                'log': os.path.join(self.ctx.LOGS,
                                    'nova-compute-%s.log' % self.name),
                'service': 'nova-compute-%s' % self.name,
                'user': 'nova', 'shared_hypervisor': False,
                'netns': '/proc/%d/ns/net' % self.anchor.proc.pid
                if self.anchor else None}

    # Building it --------------------------------------------------------

    def prepare(self):
        """The per-host directories and configuration, before anything
        starts."""
        ctx = self.ctx
        for sub, _ in BIND_MOUNTS:
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        for sub in ('log/libvirt/qemu', 'lib/libvirt/qemu',
                    'etc/libvirt/qemu/networks', 'data/nova',
                    'data/neutron'):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        # Traversable for the QEMU user (disks, console logs), as the
        # cloud's own directories are.
        for path in (self.root, self.data, self.instances,
                     os.path.join(self.data, 'nova'),
                     os.path.join(self.data, 'live-snapshot'),
                     self.staging, self.templates):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o711)
        os.chmod(os.path.dirname(self.root), 0o711)
        # What its nova-compute writes is nova's (it runs as nova).
        for path in (self.instances, os.path.join(self.data, 'nova'),
                     os.path.join(self.data, 'live-snapshot'),
                     self.staging, self.templates):
            ctx.accounts.chown_tree(path, 'nova')
        # The machine's nwfilters (Nova's libvirt driver uses none, libvirtd
        # loads them), never its domain or network definitions.
        etc = os.path.join(self.root, 'etc', 'libvirt')
        if os.path.isdir('/etc/libvirt/nwfilter'):
            shutil.copytree('/etc/libvirt/nwfilter',
                            os.path.join(etc, 'nwfilter'), dirs_exist_ok=True)
        # No DMI here and the main daemon's UUID is random: a UUID of its
        # own, or both hosts would claim one.
        # Its read-write socket for the libvirt group, which Debian's
        # libvirt-daemon-system admits through polkit; no polkit daemon
        # runs here, so the socket's mode and group are the access check:
        # host B's nova-compute runs as nova.
        with open(os.path.join(etc, 'libvirtd.conf'), 'w') as f:
            f.write('host_uuid = "%s"\n' % uuid.uuid4())
            f.write(LIBVIRTD_SOCKET_CONF)
        with open(os.path.join(self.root, 'etc', 'hosts'), 'w') as f:
            f.write('127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' % self.name)
        # The mount point must exist in the machine's namespace.
        os.makedirs(network.OVS_RUNDIR, exist_ok=True)

    def enter(self, argv):
        """``argv`` inside this host's mount, UTS and network namespaces."""
        return ['nsenter', '--target', str(self.anchor.proc.pid), '--mount',
                '--uts', '--net', '--'] + list(argv)

    def start_hypervisor(self, cloud):
        """The namespaces (held by virtlogd) and libvirtd; returns when
        libvirtd answers on its socket from the machine's namespace."""
        ctx = self.ctx
        outer = [os.readlink('/proc/self/ns/%s' % ns)
                 for ns in ('mnt', 'uts', 'net')]
        self.anchor = cloud.start(ctx.Service(
            '%s-virtlogd' % self.name,
            ['unshare', '--mount', '--propagation', 'private', '--uts',
             '--net', '--', '/bin/sh', '-c', _ANCHOR, 'anchor', self.root,
             self.name] + outer))
        pid_file = os.path.join(self.root, 'run', 'libvirt', 'virtlogd.pid')
        ctx.wait_for(lambda: self.anchor.check_running()
                     or os.path.exists(pid_file), 30,
                     'virtlogd of %s to start' % self.name)
        # Its domains go before it stops: nothing else would stop their
        # QEMU processes.
        cloud.start(ctx.Service(
            '%s-libvirtd' % self.name,
            self.enter(['libvirtd', '-p', '/run/libvirt/libvirtd.pid']),
            before_stop=self.destroy_domains))
        ctx.wait_for(lambda: _answers(self.uri), 60,
                     'libvirtd of %s to answer on %s'
                     % (self.name, self.socket))
        import libvirt
        conn = libvirt.open(self.uri)
        try:
            hostname = conn.getHostname()
        finally:
            conn.close()
        if hostname != self.name:
            raise ctx.CloudError('libvirtd of %s reports hostname %r'
                                 % (self.name, hostname))
        ctx.log('%s: libvirtd answers on %s', self.name, self.uri)

    def start_network(self, cloud, backend):
        """Host B's switch, its OVS agent and RPC relay, and the wire to
        host A's br-phys; returns when its agent reports alive."""
        ctx = self.ctx
        ovs_data = os.path.join(self.data, 'ovs')
        os.makedirs(ovs_data, exist_ok=True)
        db = os.path.join(ovs_data, 'conf.db')
        ctx.run(['ovsdb-tool', 'create', db, network.OVS_SCHEMA],
                'ovsdb-tool create (%s)' % self.name)
        rundir = os.path.join(self.root, 'run', 'openvswitch')
        # Inside the mount namespace /run/openvswitch is host B's: OVS's
        # compiled-in paths are right there.
        cloud.start(ctx.Service('%s-ovsdb-server' % self.name, self.enter([
            'ovsdb-server', db,
            '--remote=punix:%s/db.sock' % network.OVS_RUNDIR,
            '--remote=db:Open_vSwitch,Open_vSwitch,manager_options',
            '--no-chdir', '-vconsole:info'])))
        ctx.wait_for(lambda: os.path.exists(os.path.join(rundir, 'db.sock')),
                     30, 'ovsdb-server of %s to listen' % self.name)
        self.vsctl('--no-wait', 'init')
        cloud.start(ctx.Service('%s-ovs-vswitchd' % self.name, self.enter([
            'ovs-vswitchd', network.OVSDB, '--no-chdir', '-vconsole:info'])))
        ctx.wait_for(lambda: glob.glob(os.path.join(rundir,
                                                    'ovs-vswitchd.*.ctl')),
                     30, 'ovs-vswitchd of %s to start' % self.name)
        self.vsctl(*network.phys_bridge_args())
        self.wire()
        cloud.start(ctx.Service('%s-rabbit-relay' % self.name, self.enter([
            'socat', 'TCP-LISTEN:5672,bind=127.0.0.1,reuseaddr,fork',
            'UNIX-CONNECT:%s' % backend.rabbit_socket])))
        ini = backend.conf('openvswitch_agent-%s.ini' % self.name)
        neutron = backend.conf('neutron.conf')
        ctx.render('openvswitch_agent.ini', ini, ovsdb=network.OVSDB,
                   privsep=network.privsep_sections(ctx.VENV, [neutron, ini]))
        with open(ini, 'a') as f:
            # Its own host name and state: neutron.conf's state_path holds
            # host A's agent's locks.
            f.write('\n[DEFAULT]\nhost = %s\nstate_path = %s\n'
                    '\n[oslo_concurrency]\nlock_path = %s\n' % (
                        self.name, os.path.join(self.data, 'neutron'),
                        os.path.join(self.data, 'neutron', 'locks')))
        cloud.start(ctx.Service(
            '%s-neutron-openvswitch-agent' % self.name,
            self.enter([os.path.join(ctx.BIN, 'neutron-openvswitch-agent'),
                        '--config-file', neutron, '--config-file', ini]),
            stop_timeout=5))
        conn = cloud.admin()

        def agent_alive():
            for svc in cloud.services:
                svc.check_running()
            return any(a.host == self.name and a.is_alive
                       and a.agent_type == 'Open vSwitch agent'
                       for a in conn.network.agents())
        ctx.wait_for(agent_alive, 180, 'the OVS agent of %s to report alive'
                     % self.name, interval=1)
        ctx.log('%s: its OVS agent is alive, br-phys wired to host A',
                self.name)

    def vsctl(self, *args):
        return self.ctx.run(['ovs-vsctl', '--db=%s' % self.ovsdb,
                             '--timeout=30'] + list(args),
                            'ovs-vsctl %s (%s)' % (args[0], self.name))

    def wire(self):
        """The veth pair between the hosts' br-phys: one end in host A's
        namespace (nls-test), the other in host B's; each on its br-phys."""
        ctx = self.ctx
        a, b = TRUNK
        ctx.run(['ip', 'link', 'add', a, 'netns', network.NETNS, 'type',
                 'veth', 'peer', 'name', b, 'netns',
                 str(self.anchor.proc.pid)], 'ip link add %s' % a)
        ctx.run(network.in_netns(['ip', 'link', 'set', a, 'up']),
                'ip link set %s up' % a)
        ctx.run(self.enter(['ip', 'link', 'set', b, 'up']),
                'ip link set %s up' % b)
        ctx.run(['ovs-vsctl', '--timeout=30', '--may-exist', 'add-port',
                 network.PHYS_BRIDGE, a], 'ovs-vsctl add-port %s' % a)
        self.vsctl('--may-exist', 'add-port', network.PHYS_BRIDGE, b)

    # Taking it down -----------------------------------------------------

    def destroy_domains(self):
        """Destroy and undefine every domain of host B's libvirtd (all of
        them are the cloud's); QEMU processes it started would otherwise
        outlive it."""
        if _answers(self.uri):
            self.ctx.remove_domains(self.uri, lambda xml: True)

    def sweep(self):
        """After the services stopped (or died with the supervisor): QEMU
        processes host B's libvirtd left (its pid files), and the tmpfs
        directories."""
        for pid_file in glob.glob(os.path.join(self.root, 'run', 'libvirt',
                                               'qemu', '*.pid')):
            pid = network.signal_pid_file(pid_file, b'qemu', signal.SIGKILL)
            if pid:
                self.ctx.log('killed QEMU %d left by %s', pid, self.name)
        for path in (self.staging, self.templates):
            shutil.rmtree(path, ignore_errors=True)


def _answers(uri):
    import libvirt
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True
