"""The test cloud's network backend: ML2/openvswitch with its agents.

These machines' kernels have no openvswitch module, so Open vSwitch runs
its userspace (``netdev``) datapath; ``ovs-vswitchd`` opens the guests'
taps itself. libvirtd runs in the ``nls-test`` network namespace
(tools/setup-host.sh) and its taps appear there, so ``ovs-vswitchd``, the
OVS agent (the switch's OpenFlow controller, on that namespace's loopback)
and the DHCP agent (whose ``qdhcp-`` namespaces hang off br-int) run in it
too. What stays in the host namespace reaches OVS through its database's
unix socket (nova-compute's os-vif, libvirt's ``ovs-vsctl``), and the
agents reach RabbitMQ through a unix socket that two ``socat`` relays put
between the namespace's loopback and the host's: every packet stays on a
loopback or inside the bridges and namespaces the cloud creates.

OVS uses Debian's compiled-in run directory (``/var/run/openvswitch``), so
that every OVS tool (libvirt's ``ovs-vsctl`` too) finds the switch without
options; its database lives with the cloud's data. Nothing else on these
machines runs Open vSwitch.

Each project of the cloud gets a VLAN network of the provider network
``physnet1`` (VLANs 100-199) with a DHCP subnet: each compute host's OVS
agent maps ``physnet1`` to its ``br-phys`` (host A's here, host B's in
tools/cloud/computehost.py, joined by a veth pair), so a network spans
both hosts; OVS tags and untags in userspace. Its
its default security group lets ICMP and SSH in from that subnet (the
checks ping and connect from the DHCP namespace).
"""

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess

NETNS = os.environ.get('NLS_NETNS', 'nls-test')
OVS_RUNDIR = '/var/run/openvswitch'
OVSDB = 'unix:%s/db.sock' % OVS_RUNDIR
OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'
INTEGRATION_BRIDGE = 'br-int'
#: Each host's bridge of the provider network the project networks are
#: VLANs of (ml2_conf.ini, openvswitch_agent.ini bridge_mappings).
PHYS_BRIDGE = 'br-phys'
#: project: its network's subnet
PROJECT_SUBNETS = {'demo': '10.78.1.0/24', 'alt': '10.78.2.0/24'}
#: service: what must restart after it. On the userspace datapath the DHCP
#: agent's ports are taps of ovs-vswitchd's: they go with the process, and
#: the new one makes them again in its own namespace, not in the qdhcp-
#: ones, until the agent plugs them anew at its start.
RESTARTS_WITH = {'ovs-vswitchd': ('neutron-dhcp-agent',)}
#: the agents the cloud needs alive, by Neutron's agent_type
AGENT_TYPES = ('Open vSwitch agent', 'DHCP agent')


def in_netns(argv):
    """``argv`` in libvirtd's network namespace (only the network one)."""
    return ['nsenter', '--net=/run/netns/%s' % NETNS] + list(argv)


def phys_bridge_args():
    """``ovs-vsctl`` arguments making a host's br-phys: it must exist
    before the host's OVS agent starts (the agent exits on a mapping to a
    missing bridge)."""
    return ['--may-exist', 'add-br', PHYS_BRIDGE, '--', 'set', 'bridge',
            PHYS_BRIDGE, 'datapath_type=netdev']


def network_name(project):
    return '%s-net' % project


def privsep_sections(venv, config_files):
    """Every privsep context of neutron's agents starts its helper directly
    (root already; sudo's secure_path would not find the virtualenv's)."""
    helper = ' '.join([os.path.join(venv, 'bin', 'privsep-helper')] + [
        '--config-file %s' % f for f in config_files])
    return '\n\n'.join('[%s]\nhelper_command = %s' % (section, helper)
                       for section in (
                           'privsep', 'privsep_dhcp_release',
                           'privsep_ovs_vsctl', 'privsep_namespace',
                           'privsep_conntrack', 'privsep_link'))


class Backend:
    """Builds and starts the backend as part of a cloud.

    :param cloud: the ``Cloud`` being built (its ``start``, ``pw`` and
        ``admin``)
    :param ctx: the cloud module (Service, run, wait_for, paths)
    """

    def __init__(self, cloud, ctx):
        self.cloud = cloud
        self.ctx = ctx
        self.neutron_etc = os.path.join(ctx.ETC, 'neutron')
        self.ovs_data = os.path.join(ctx.DATA, 'ovs')
        self.rabbit_socket = os.path.join(ctx.RUN, 'rabbit.sock')

    def conf(self, name):
        return os.path.join(self.neutron_etc, name)

    def write_config(self):
        ctx = self.ctx
        neutron = self.conf('neutron.conf')
        for name in ('openvswitch_agent.ini', 'dhcp_agent.ini'):
            path = self.conf(name)
            ctx.render(name, path, ovsdb=OVSDB,
                       privsep=privsep_sections(ctx.VENV, [neutron, path]))
            # The agents still run as root: their locks apart from
            # neutron-server's (which runs as neutron), which could not
            # open a lock file root made.
            with open(path, 'a') as f:
                f.write('\n[oslo_concurrency]\nlock_path = %s\n'
                        % os.path.join(ctx.DATA, 'neutron-agents', 'locks'))

    def service(self, name, argv, netns=True, **kw):
        return self.ctx.Service(name, in_netns(argv) if netns else argv,
                                **kw)

    def start(self):
        """OVS, the RPC relay and both agents, once neutron-server runs;
        returns when the agents report alive and br-int exists."""
        ctx = self.ctx
        start = self.cloud.start
        # Under a WSGI server neutron serves only its API: the agents' RPC
        # (their reports, DHCP and port wiring) is a process of its own.
        start(self.service('neutron-rpc-server', [
            os.path.join(ctx.BIN, 'neutron-rpc-server'), '--config-file',
            self.conf('neutron.conf'), '--config-file',
            self.conf('plugins/ml2/ml2_conf.ini')], netns=False,
            user='neutron'))
        if not os.path.exists('/run/netns/%s' % NETNS):
            raise ctx.CloudError('network namespace %s is missing (run '
                                 'tools/setup-host.sh)' % NETNS)
        os.makedirs(self.ovs_data)
        os.makedirs(OVS_RUNDIR, exist_ok=True)
        db = os.path.join(self.ovs_data, 'conf.db')
        ctx.run(['ovsdb-tool', 'create', db, OVS_SCHEMA], 'ovsdb-tool create')
        start(self.service('ovsdb-server', [
            'ovsdb-server', db, '--remote=punix:%s/db.sock' % OVS_RUNDIR,
            '--remote=db:Open_vSwitch,Open_vSwitch,manager_options',
            '--no-chdir', '-vconsole:info'], netns=False))
        ctx.wait_for(lambda: os.path.exists('%s/db.sock' % OVS_RUNDIR), 30,
                     'ovsdb-server to listen')
        ctx.run(['ovs-vsctl', '--no-wait', 'init'], 'ovs-vsctl init')
        start(self.service('ovs-vswitchd', [
            'ovs-vswitchd', OVSDB, '--no-chdir', '-vconsole:info']))
        ctx.wait_for(lambda: glob.glob('%s/ovs-vswitchd.*.ctl' % OVS_RUNDIR),
                     30, 'ovs-vswitchd to start')
        ctx.run(['ovs-vsctl', '--timeout=30'] + phys_bridge_args(),
                'ovs-vsctl add-br %s' % PHYS_BRIDGE)
        # The agents' RPC: the namespace's 127.0.0.1:5672 leads to the
        # host's through a unix socket only root can open.
        start(self.service('rabbit-relay-host', [
            'socat', 'UNIX-LISTEN:%s,fork,mode=600' % self.rabbit_socket,
            'TCP:127.0.0.1:5672'], netns=False))
        ctx.wait_for(lambda: os.path.exists(self.rabbit_socket), 30,
                     'the RPC relay to listen')
        start(self.service('rabbit-relay-netns', [
            'socat', 'TCP-LISTEN:5672,bind=127.0.0.1,reuseaddr,fork',
            'UNIX-CONNECT:%s' % self.rabbit_socket]))
        neutron = self.conf('neutron.conf')
        for name, ini, stop_timeout in (
                # The OVS agent ignores SIGTERM: a short wait, then KILL.
                ('neutron-openvswitch-agent', 'openvswitch_agent.ini', 5),
                ('neutron-dhcp-agent', 'dhcp_agent.ini', 30)):
            start(self.service(name, [
                os.path.join(ctx.BIN, name), '--config-file', neutron,
                '--config-file', self.conf(ini)], stop_timeout=stop_timeout))
        conn = self.cloud.admin()

        def agents_alive():
            for svc in self.cloud.services:
                svc.check_running()
            alive = {a.agent_type for a in conn.network.agents()
                     if a.is_alive}
            return alive.issuperset(AGENT_TYPES) and bridge_exists()
        ctx.wait_for(agents_alive, 180, 'the OVS and DHCP agents to report '
                     'alive and br-int to exist', interval=1)
        ctx.log('the OVS and DHCP agents are alive')

    def create_project_networks(self):
        """A network and DHCP subnet per project, made by the admin as an
        operator would; each project's default security group admits ICMP
        and SSH from its subnet."""
        import openstack
        conn = self.cloud.admin()
        for project, cidr in PROJECT_SUBNETS.items():
            project_id = conn.identity.find_project(project).id
            net = conn.network.create_network(
                name=network_name(project), project_id=project_id)
            conn.network.create_subnet(
                name='%s-subnet' % project, network_id=net.id,
                project_id=project_id, ip_version=4, cidr=cidr,
                gateway_ip=None, enable_dhcp=True)
            # As the project's user: its default group is made on its first
            # request.
            user = openstack.connect(
                auth_url=self.ctx.KEYSTONE + '/v3', username=project,
                password=self.cloud.pw[project], project_name=project,
                user_domain_name='Default', project_domain_name='Default',
                region_name=self.ctx.REGION)
            default = next(g for g in user.network.security_groups()
                           if g.name == 'default')
            for protocol, port in (('icmp', None), ('tcp', 22)):
                user.network.create_security_group_rule(
                    security_group_id=default.id, direction='ingress',
                    ethertype='IPv4', protocol=protocol,
                    port_range_min=port, port_range_max=port,
                    remote_ip_prefix=cidr)
            self.ctx.log('network %s (%s) for project %s',
                         network_name(project), cidr, project)


#: The group that may use an OVS database socket: nova-compute's os-vif
#: adds ports through it, unprivileged.
OVSDB_GROUP = 'nova'


def share_ovsdb_socket(path):
    """ovsdb-server makes its unix socket root's, 0750 (connecting takes
    write permission), and makes it again when its remotes change (the OVS
    agent setting a manager): give OVSDB_GROUP read-write on it once the
    agents run. Distributions
    reach OVS over ``tcp:127.0.0.1:6640`` instead; host B's switch is in a
    network namespace of its own, where the host's loopback is not, and
    its socket is the one way in."""
    import grp
    os.chown(path, 0, grp.getgrnam(OVSDB_GROUP).gr_gid)
    os.chmod(path, 0o770)


def bridge_exists():
    return subprocess.run(['ovs-vsctl', '--timeout=5', 'br-exists',
                           INTEGRATION_BRIDGE], capture_output=True,
                          check=False).returncode == 0


def signal_pid_file(pid_file, program, sig):
    """Send ``sig`` to the process ``pid_file`` names if its command line
    contains ``program`` (a PID is reused once its process is gone); its
    PID, or None when there was no such process."""
    with contextlib.suppress(FileNotFoundError, ValueError,
                             ProcessLookupError):
        with open(pid_file) as f:
            pid = int(f.read().strip())
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            if program in f.read():
                os.kill(pid, sig)
                return pid
    return None


def cleanup(data_dir, log):
    """What the backend leaves after its daemons stop: the DHCP agent's
    dnsmasq processes (daemons of their own) and ``qdhcp-`` namespaces, for
    the networks this cloud's agent served (its state directory names
    them), and OVS's run directory."""
    for net_dir in glob.glob(os.path.join(data_dir, 'neutron', 'dhcp',
                                          '*-*-*-*-*')):
        net_id = os.path.basename(net_dir)
        pid = signal_pid_file(os.path.join(net_dir, 'pid'), b'dnsmasq',
                              signal.SIGTERM)
        if pid:
            log('stopped dnsmasq of network %s (pid %d)', net_id, pid)
        ns = 'qdhcp-%s' % net_id
        if os.path.exists('/run/netns/%s' % ns):
            log('removing namespace %s', ns)
            subprocess.run(['ip', 'netns', 'delete', ns], check=False,
                           capture_output=True)
    if not _ovs_running():
        _remove_datapath_devices(log)
        if os.path.isdir(OVS_RUNDIR):
            shutil.rmtree(OVS_RUNDIR, ignore_errors=True)


# The devices OVS's userspace datapath makes as kernel taps in libvirtd's
# namespace and leaves when ovs-vswitchd stops: its own ``ovs-netdev``, the
# bridges' internal ports, and the ports Neutron names ``tap`` + the first 11
# characters of a port id (the DHCP agent's, and any left by an
# ovs-vswitchd restart before the agent moved them into ``qdhcp-``). Nova's
# instance taps carry the same names but are gone with their domains;
# libvirt's own networks use ``vnetN`` and their bridge, never these names.
# The provider bridge and host A's end of the wire to host B
# (computehost.TRUNK) go too.
_DATAPATH_DEVICE = re.compile(
    r'(ovs-netdev|%s|%s|nls-trunk-a|tap[0-9a-f]{8}-[0-9a-f]{2})\Z'
    % (INTEGRATION_BRIDGE, PHYS_BRIDGE))


def _remove_datapath_devices(log):
    out = subprocess.run(in_netns(['ip', '-o', 'link', 'show']),
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        name = line.split(':')[1].strip().split('@')[0]
        if _DATAPATH_DEVICE.match(name):
            log('removing %s left by the userspace datapath', name)
            subprocess.run(in_netns(['ip', 'link', 'delete', name]),
                           capture_output=True, check=False)


def _ovs_running():
    return subprocess.run(['pgrep', '-x', 'ovs-vswitchd|ovsdb-server'],
                          capture_output=True, check=False).returncode == 0
