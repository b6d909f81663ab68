"""The test cloud's network as an operator sees it from the host.

A project's network (tools/cloud/network.py) has its DHCP server in a
``qdhcp-<network id>`` namespace: the checks ping and connect to servers
from there, and read dnsmasq's leases from the agent's state directory. A
:class:`TapWatch` records what guests send into their taps in libvirtd's
network namespace.
"""

import json
import os
import signal
import subprocess
import sys

from nova_live_snapshot import host as host_mod

CLOUD_DIR = os.environ.get('NLS_CLOUD_DIR', '/var/tmp/nls-cloud')
NETNS = os.environ.get('NLS_NETNS', 'nls-test')
TAPWATCH = os.path.join(os.path.dirname(__file__), 'tapwatch.py')


def tap_name(port_id):
    """The tap Nova names after a port (nova.network.model.VIF)."""
    return ('tap' + port_id)[:14]


class ProjectNetwork:
    """One project network's DHCP side."""

    def __init__(self, network_id):
        self.id = network_id
        self.netns = 'qdhcp-%s' % network_id
        self.state = os.path.join(CLOUD_DIR, 'data', 'neutron', 'dhcp',
                                  network_id)

    def run(self, *argv, timeout=30):
        return subprocess.run(['ip', 'netns', 'exec', self.netns] +
                              list(argv), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def answers_ping(self, ip):
        return self.run('ping', '-c', '1', '-W', '1', ip).returncode == 0

    def wait_ping(self, ip, answers=True, timeout=60):
        """Wait until ``ip`` answers (or, with ``answers=False``, stops
        answering) a ping from the DHCP namespace."""
        host_mod.wait_for(lambda: self.answers_ping(ip) == answers, timeout,
                          interval=0.5, what='%s %s ping from %s' % (
                              ip, 'to answer' if answers else 'to stop '
                              'answering', self.netns))

    def ssh_open(self, ip):
        """True when TCP port 22 of ``ip`` accepts a connection within 2 s."""
        return self.run('timeout', '2', 'bash', '-c',
                        'exec 3<>/dev/tcp/%s/22' % ip).returncode == 0

    def ssh_ed25519(self, ip):
        """The ED25519 host key fingerprint sshd at ``ip`` presents (TCP to
        port 22 of that address), or None."""
        # sshd re-executes itself for every connection: seconds under TCG.
        scan = self.run('ssh-keyscan', '-T', '30', '-t', 'ed25519', ip,
                        timeout=60)
        if not scan.stdout.strip():
            return None
        fp = subprocess.run(['ssh-keygen', '-lf', '-'], input=scan.stdout,
                            capture_output=True, text=True, check=True)
        return fp.stdout.split()[1]

    def leases(self):
        """dnsmasq's leases: {mac: ip}."""
        try:
            with open(os.path.join(self.state, 'leases')) as f:
                return {line.split()[1]: line.split()[2]
                        for line in f if line.strip()}
        except FileNotFoundError:
            return {}


class TapWatch:
    """Every frame received on a ``tap*`` interface of a network namespace
    (by default libvirtd's, where what guests send arrives), from
    :meth:`start` to :meth:`stop` (tapwatch.py in that namespace)."""

    def __init__(self, work_dir, netns=NETNS):
        self.netns = netns
        self.out = os.path.join(work_dir, 'tapwatch-%s.jsonl' % netns)
        self.ready = os.path.join(work_dir, 'tapwatch-%s.ready' % netns)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ['nsenter', '--net=/run/netns/%s' % self.netns, sys.executable,
             TAPWATCH, self.out, self.ready], stdin=subprocess.DEVNULL)
        host_mod.wait_for(lambda: os.path.exists(self.ready)
                          or self.proc.poll() is not None, 30,
                          what='the tap watch to start')
        if self.proc.poll() is not None:
            raise AssertionError('tapwatch.py exited %s' % self.proc.returncode)
        return self

    def frames_so_far(self):
        with open(self.out) as f:
            return [json.loads(line) for line in f if line.endswith('\n')]

    def stop(self):
        """Stop watching; the frames seen, per tap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        frames = {}
        for frame in self.frames_so_far():
            frames.setdefault(frame['if'], []).append(frame)
        return frames
