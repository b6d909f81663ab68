"""The small test guest: boot source domains from it and read its workload.

``tools/build-test-guest.sh`` builds a busybox guest whose workload keeps a
counter and a random token in memory and reports them on the serial console
and in ``/run/workload.state`` (``counter=<N> token=<hex>``). A clone that
resumed the captured memory carries on with the source's token and a counter
at or above the capture point; a guest that booted afresh would have a new
token and a counter from 0. The demo and the live tests use this module.
"""

import dataclasses
import json
import os
import re
import shutil

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import qemuimg
from nova_live_snapshot import waiting

__all__ = ['TestGuest', 'WorkloadState', 'read_identity', 'read_workload',
           'wait_ready', 'wait_counter']

STATE_FILE = '/run/workload.state'
READY_FILE = '/run/workload.ready'
_STATE_RE = re.compile(r'^counter=(\d+) token=([0-9a-f]{32})$')


@dataclasses.dataclass(frozen=True)
class WorkloadState:
    counter: int
    token: str


def parse_workload(text):
    m = _STATE_RE.match(text.strip())
    if not m:
        raise ValueError('unexpected workload state %r' % text)
    return WorkloadState(counter=int(m.group(1)), token=m.group(2))


def read_workload(guest, path=STATE_FILE):
    """The workload's state, read through the guest agent."""
    return parse_workload(guest.agent_read_file(path).decode())


def wait_counter(guest, at_least, timeout=30):
    """Wait until the workload's counter reaches ``at_least``; its state."""
    def reached():
        state = read_workload(guest)
        return state if state.counter >= at_least else None
    return waiting.wait_for(reached, timeout,
                            what='the workload counter of %s to reach %d'
                            % (guest.name, at_least))


def wait_ready(guest, timeout=120):
    """Wait until the guest agent answers and the workload reported ready."""
    def ready():
        if not guest.agent_ping(timeout=2):
            return None
        try:
            return read_workload(guest, READY_FILE)
        except (exception.GuestAgentError, ValueError):
            return None
    return waiting.wait_for(ready, timeout,
                            what='workload of %s to be ready' % guest.name)


# What makes a Debian guest itself, as the re-identification tests compare
# it between a source and its clones (empty values where the guest has no
# NIC).
_IDENTITY_SCRIPT = r'''
nic=/sys/class/net/eth0
echo "mac=$(cat $nic/address 2>/dev/null)"
echo "hostname=$(hostname)"
echo "machine_id=$(cat /etc/machine-id)"
for t in ed25519 ecdsa rsa; do
    echo "ssh_$t=$(ssh-keygen -lf /etc/ssh/ssh_host_${t}_key.pub | cut -d' ' -f2)"
done
echo "ipv4=$(ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')"
echo "sshd=$(ss -Hltn 'sport = :22' | wc -l)"
echo "forked=$(dmesg | grep -c 'crng reseeded due to virtual machine fork')"
'''


def read_identity(guest, timeout=30):
    """The Debian guest's identity facts, read through its agent: mac,
    hostname, machine_id, ssh_<type> fingerprints, ipv4, sshd (listening
    sockets on port 22) and forked (how often the kernel reseeded its RNG
    on a VM generation ID change)."""
    rc, out, err = guest.agent_exec(['/bin/sh', '-c', _IDENTITY_SCRIPT],
                                    timeout=timeout)
    if rc:
        raise exception.GuestAgentError(
            domain=guest.name, reason='identity script failed: %s'
            % err.decode(errors='replace'))
    return dict(line.split('=', 1) for line in out.decode().splitlines())


class TestGuest:
    """The built test guest in ``guest_dir`` and source domains booted from it.

    Each source gets a directory under ``work_dir`` with a qcow2 overlay on
    the guest's disk and a console log.
    """

    __test__ = False    # not a pytest class

    def __init__(self, guest_dir, work_dir, network=None):
        self.guest_dir = guest_dir
        self.network = network
        self.work_dir = work_dir
        meta = os.path.join(guest_dir, 'guest.json')
        if not os.path.exists(meta):
            raise exception.TestGuestMissing(path=guest_dir)
        with open(meta) as f:
            self.meta = json.load(f)
        self.disk = os.path.join(guest_dir, self.meta['disk'])
        os.makedirs(work_dir, mode=0o711, exist_ok=True)

    _DEFAULT = object()

    def spec(self, name, network=_DEFAULT, memory_mib=None):
        path = os.path.join(self.work_dir, name)
        return domainxml.DomainSpec(
            name=name,
            disk_path=os.path.join(path, 'disk.qcow2'),
            # The guest cache is shared by every source: libvirt must not
            # hand it to the QEMU user (it would keep it).
            backing_path=self.disk,
            console_log=os.path.join(path, 'console.log'),
            memory_mib=memory_mib or int(self.meta.get('memory_mib', 128)),
            vcpus=int(self.meta.get('vcpus', 1)),
            network=self.network if network is self._DEFAULT else network)

    def boot(self, host, name, paused=False, network=_DEFAULT,
             memory_mib=None):
        """Start a transient source domain ``name``; returns its Guest.

        ``network`` overrides the guest's network (None: user-mode),
        ``memory_mib`` its RAM.
        """
        spec = self.spec(name, network, memory_mib)
        path = os.path.dirname(spec.disk_path)
        os.makedirs(path, mode=0o711, exist_ok=True)
        qemuimg.create_overlay(self.disk, spec.disk_path)
        return host.create(domainxml.render(spec), paused=paused)

    def remove(self, host, name):
        """Destroy source ``name`` and remove its files."""
        guest = host.find(name)
        if guest is not None:
            guest.remove()
        shutil.rmtree(os.path.join(self.work_dir, name), ignore_errors=True)


QEMU_USER = 'libvirt-qemu'
# Run as the QEMU user by qemu_user_can_write: for each path, whether it can
# be opened for writing, or have its mode changed (which an owner can).
_PROBE = r'''
import json, os, sys
out = {}
for path in sys.argv[1:]:
    verdict = []
    try:
        os.close(os.open(path, os.O_WRONLY))
        verdict.append('open for writing')
    except OSError:
        pass
    try:
        os.chmod(path, os.stat(path).st_mode & 0o7777)
        verdict.append('chmod')
    except OSError:
        pass
    out[path] = verdict
print(json.dumps(out))
'''


def qemu_user_can_write(*paths):
    """{path: [what the QEMU user could do to it]} for those of ``paths`` it
    could change, asked as that user with its supplementary groups (with the
    system Python: the caller's may live where that user cannot go)."""
    import grp
    import pwd
    import subprocess
    user = pwd.getpwnam(QEMU_USER)
    groups = [g.gr_gid for g in grp.getgrall() if QEMU_USER in g.gr_mem]
    proc = subprocess.run(
        ['/usr/bin/python3', '-I', '-c', _PROBE] + list(paths),
        user=user.pw_uid, group=user.pw_gid, extra_groups=groups,
        capture_output=True, text=True, check=True, cwd='/')
    return {p: v for p, v in json.loads(proc.stdout).items() if v}
