"""Re-identify a clone through the QEMU guest agent.

A clone is a copy of a live machine: it wakes up with its source's MAC in
the guest, its CRNG state, hostname, SSH host keys, machine-id and a clock
stopped at capture time. Every clone gets, in this order, while its NIC's
link is still down (so its workload cannot use the network with the old
identity):

1. ``mac``: the new MAC set on the guest interface that still carries the
   image's MAC (virtio-net's MAC is migration state: the XML alone does not
   change what the guest uses); checked from inside.
2. ``entropy``: the new VM generation ID is already there (kernels with
   CONFIG_VMGENID reseed on it); fresh host randomness is credited to the
   guest's pool and the CRNG reseeded (``nls-reseed`` or python3), or at
   least mixed in through ``/dev/urandom``.
3. ``hostname``: the clone's name, also in ``/etc/hostname`` and
   ``/etc/hosts``.
4. ``ssh_host_keys``: old keys removed, new ones generated, sshd restarted.
5. ``machine_id``: a new random ``/etc/machine-id``.
6. ``clock``: set to the host's time (``guest-set-time``).
7. ``network``: link up, DHCP lease renewed with the new MAC.
8. ``hooks``: executables in ``/etc/nova-live-snapshot/clone.d`` run last
   with the clone's name and UUID.

Each step reports ``done``, ``skipped`` (the guest lacks what it acts on) or
``failed``, with a detail, in an :class:`IdentityReport`.
"""

import base64
import dataclasses
import enum
import logging
import os
import re
import subprocess
import tempfile
import time
import uuid as uuidlib

from nova_live_snapshot import exception

LOG = logging.getLogger(__name__)

__all__ = ['Status', 'StepReport', 'IdentityReport', 'NewIdentity',
           'reset', 'not_reset', 'hostname_for']

HOOKS_DIR = '/etc/nova-live-snapshot/clone.d'
_SKIP = 3           # exit code of a guest script: "not applicable here"


class Status(str, enum.Enum):
    DONE = 'done'
    SKIPPED = 'skipped'
    FAILED = 'failed'


@dataclasses.dataclass(frozen=True)
class StepReport:
    step: str
    status: Status
    detail: str = ''
    seconds: float = None


@dataclasses.dataclass(frozen=True)
class IdentityReport:
    """What re-identification did to one clone."""

    agent: bool
    steps: tuple = ()
    facts: dict = dataclasses.field(default_factory=dict)

    @property
    def reset(self):
        """True when the agent answered and no step failed."""
        return self.agent and all(s.status != Status.FAILED
                                  for s in self.steps)

    def to_dict(self):
        return {'agent': self.agent, 'reset': self.reset,
                'steps': [{'step': s.step, 'status': s.status.value,
                           'detail': s.detail, 'seconds': s.seconds}
                          for s in self.steps],
                'facts': dict(self.facts)}


@dataclasses.dataclass(frozen=True)
class NewIdentity:
    """What the engine decided the clone is."""

    name: str
    uuid: str
    mac: str
    old_mac: str
    hostname: str
    machine_id: str = dataclasses.field(
        default_factory=lambda: uuidlib.uuid4().hex)


def hostname_for(name):
    """A valid hostname label from a domain name."""
    label = re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')[:63]
    return label.strip('-') or 'clone'


def not_reset(reason):
    """The report of a clone whose identity could not be touched."""
    return IdentityReport(agent=False, steps=(StepReport(
        'agent', Status.FAILED, reason),))


# Guest-side scripts: POSIX sh, for busybox and full distributions alike.
# Arguments arrive as $1, $2...; they are engine-generated (MACs, hex ids,
# hostname labels), never taken from the image.

_MAC_SCRIPT = r'''
ifc=
for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && ifc=${d##*/}
done
[ -n "$ifc" ] || exit 3
ip link set dev "$ifc" address "$2" || exit 1
[ "$(cat "/sys/class/net/$ifc/address")" = "$2" ] || exit 1
# The source's addresses must not be used with the new MAC, not even for
# the moment between link up and the new lease: neighbours would map the
# source's address to this clone.
ip addr flush dev "$ifc" scope global
echo "$ifc"
'''

_RESEED_SCRIPT = r'''
if [ -x /usr/sbin/nls-reseed ]; then
    exec /usr/sbin/nls-reseed
elif command -v python3 >/dev/null 2>&1; then
    exec python3 -c '
import fcntl, os, struct, sys
seed = sys.stdin.buffer.read(512)
fd = os.open("/dev/random", os.O_WRONLY)
fcntl.ioctl(fd, 0x40085203, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
fcntl.ioctl(fd, 0x5207)
print("credited %d bytes and reseeded the CRNG" % len(seed))'
fi
exit 3
'''

_HOSTNAME_SCRIPT = r'''
old=$(hostname)
hostname "$1" || exit 1
[ -f /etc/hostname ] && echo "$1" > /etc/hostname
if [ -n "$old" ] && [ -f /etc/hosts ] && grep -q "$old" /etc/hosts; then
    sed -i "s/$old/$1/g" /etc/hosts
fi
if command -v hostnamectl >/dev/null 2>&1; then
    hostnamectl set-hostname "$1" >/dev/null 2>&1 || true
fi
echo "$old -> $(hostname)"
'''

_SSH_TYPES_SCRIPT = r'''
command -v ssh-keygen >/dev/null 2>&1 || exit 3
[ -d /etc/ssh ] || exit 3
for f in /etc/ssh/ssh_host_*_key; do
    [ -f "$f" ] && t=${f#/etc/ssh/ssh_host_} && echo "${t%_key}"
done
true
'''

# Installs the keys staged as /etc/ssh/.nls-new-*: old keys go, new keys
# take their place with sshd's modes, sshd restarts with them. With no
# staged keys (no ssh-keygen on the host) the guest makes its own.
_SSH_INSTALL_SCRIPT = r'''
cd /etc/ssh || exit 1
rm -f ssh_host_*key ssh_host_*key.pub
staged=
for f in .nls-new-ssh_host_*; do
    [ -f "$f" ] || continue
    staged=1
    mv "$f" "${f#.nls-new-}"
done
if [ -z "$staged" ]; then
    ssh-keygen -A >/dev/null || exit 1
fi
chmod 600 ssh_host_*key
chmod 644 ssh_host_*key.pub
if command -v systemctl >/dev/null 2>&1; then
    systemctl try-restart ssh.service sshd.service >/dev/null 2>&1 || true
fi
for f in ssh_host_*_key.pub; do ssh-keygen -lf "$f"; done
'''

_MACHINE_ID_SCRIPT = r'''
[ -f /etc/machine-id ] || exit 3
echo "$1" > /etc/machine-id || exit 1
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    echo "$1" > /var/lib/dbus/machine-id
fi
cat /etc/machine-id
'''

_DHCP_SCRIPT = r'''
ifc=$1
ip link set dev "$ifc" up
if command -v networkctl >/dev/null 2>&1 && \
        networkctl status "$ifc" 2>/dev/null | grep -q 'Network File: /'; then
    # networkd's DHCP client identifier derives from the machine-id, which
    # it read at start: restart it so the lease follows the new identity.
    systemctl restart systemd-networkd.service || exit 1
    networkctl reconfigure "$ifc" || exit 1
elif command -v dhclient >/dev/null 2>&1; then
    dhclient -r "$ifc" >/dev/null 2>&1
    dhclient -1 "$ifc" || exit 1
elif pid=$(pidof udhcpc); then
    # A fresh client asks for a lease with the new MAC; signalling the old
    # one (release, renew) raced with its own state machine.
    kill $pid
    udhcpc -b -i "$ifc" -s /usr/share/udhcpc/default.script >/dev/null 2>&1 \
        || exit 1
else
    exit 3
fi
i=0
while [ $i -lt 150 ]; do
    addr=$(ip -o -4 addr show dev "$ifc" | awk '{print $4}' | head -n 1)
    [ -n "$addr" ] && { echo "$addr"; exit 0; }
    i=$((i + 1)); sleep 0.2
done
exit 1
'''

_HOOKS_SCRIPT = r'''
[ -d "$3" ] || exit 3
ran=
for f in "$3"/*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    "$f" "$1" "$2" || { echo "$f exited $?"; exit 1; }
    ran="$ran ${f##*/}"
done
echo "ran:${ran:- none}"
'''


def _host_keys(types, hostname):
    """Generate SSH host keys on this host: ``[(file name, bytes), ...]``."""
    keys = []
    with tempfile.TemporaryDirectory(prefix='nls-ssh-') as tmp:
        for key_type in types:
            path = os.path.join(tmp, 'ssh_host_%s_key' % key_type)
            subprocess.run(['ssh-keygen', '-q', '-t', key_type, '-N', '',
                            '-C', 'root@%s' % hostname, '-f', path],
                           check=True, capture_output=True)
            for suffix in ('', '.pub'):
                with open(path + suffix, 'rb') as f:
                    keys.append((os.path.basename(path) + suffix, f.read()))
    return keys


class _Steps:
    """Runs the steps on one guest and collects their reports."""

    def __init__(self, guest, identity, timeout):
        self.guest = guest
        self.identity = identity
        self.timeout = timeout
        self.reports = []
        self.facts = {}

    def script(self, step, script, *args, stdin=None):
        """Run ``script`` with ``args``; record and return its report."""
        try:
            rc, out, err = self.guest.agent_exec(
                ['/bin/sh', '-c', script, 'sh'] + list(args),
                timeout=self.timeout, stdin=stdin)
        except exception.GuestAgentError as e:
            return self.record(step, Status.FAILED, str(e))
        text = out.decode(errors='replace').strip()
        if rc == 0:
            return self.record(step, Status.DONE, text)
        if rc == _SKIP:
            return self.record(step, Status.SKIPPED,
                               'not applicable in this guest')
        return self.record(step, Status.FAILED, 'exit %s: %s' % (
            rc, (err.decode(errors='replace') or text).strip()[-300:]))

    def record(self, step, status, detail):
        report = StepReport(step, status, detail)
        self.reports.append(report)
        log = LOG.warning if status == Status.FAILED else LOG.debug
        log('Clone %s: %s %s: %s', self.identity.name, step, status.value,
            detail)
        return report

    def mac(self):
        if not (self.identity.old_mac and self.identity.mac):
            self.record('mac', Status.SKIPPED, 'the clone has no NIC')
            return
        r = self.script('mac', _MAC_SCRIPT, self.identity.old_mac,
                        self.identity.mac)
        if r.status == Status.DONE:
            self.facts['interface'] = r.detail
            self.facts['mac'] = self.identity.mac

    def entropy(self):
        seed = os.urandom(64)
        try:
            handle = self.guest.agent_command(
                'guest-file-open', {'path': '/dev/urandom', 'mode': 'w'})
            try:
                self.guest.agent_command('guest-file-write', {
                    'handle': handle,
                    'buf-b64': base64.b64encode(seed).decode()})
            finally:
                self.guest.agent_command('guest-file-close',
                                         {'handle': handle})
        except exception.GuestAgentError as e:
            self.record('entropy', Status.FAILED, str(e))
            return
        genid = self.guest.genid()
        r = self.script('entropy', _RESEED_SCRIPT, stdin=os.urandom(64))
        if r.status == Status.SKIPPED:
            # Mixed in, not credited: the CRNG uses it at its next reseed.
            self.reports[-1] = StepReport(
                'entropy', Status.DONE, 'new generation ID %s; 64 bytes mixed '
                'into the pool (no tool to reseed the CRNG at once)' % genid)
        elif r.status == Status.DONE:
            self.reports[-1] = StepReport(
                'entropy', Status.DONE, 'new generation ID %s; %s'
                % (genid, r.detail))
        self.facts['genid'] = genid

    def hostname(self):
        r = self.script('hostname', _HOSTNAME_SCRIPT, self.identity.hostname)
        if r.status == Status.DONE:
            self.facts['hostname'] = self.identity.hostname

    def ssh_host_keys(self):
        """New host keys of the types the guest had.

        They are made on the host, where ssh-keygen runs natively (an RSA
        key takes seconds under TCG) from the host's entropy, and written
        through the agent; the guest makes its own when the host cannot.
        """
        r = self.script('ssh_host_keys', _SSH_TYPES_SCRIPT)
        if r.status != Status.DONE:
            return
        self.reports.pop()
        types = [t for t in r.detail.split() if re.fullmatch(r'[a-z0-9]+', t)]
        try:
            for name, data in _host_keys(types or ['ed25519'],
                                         self.identity.hostname):
                self.guest.agent_write_file('/etc/ssh/.nls-new-' + name, data)
        except (OSError, subprocess.CalledProcessError) as e:
            LOG.info('Host-side SSH key generation failed (%s); the guest '
                     'generates its own', e)
        except exception.GuestAgentError as e:
            self.record('ssh_host_keys', Status.FAILED, str(e))
            return
        r = self.script('ssh_host_keys', _SSH_INSTALL_SCRIPT)
        if r.status == Status.DONE:
            self.facts['ssh_host_keys'] = r.detail.splitlines()

    def machine_id(self):
        r = self.script('machine_id', _MACHINE_ID_SCRIPT,
                        self.identity.machine_id)
        if r.status == Status.DONE:
            self.facts['machine_id'] = r.detail

    def clock(self):
        try:
            self.guest.agent_command('guest-set-time',
                                     {'time': time.time_ns()},
                                     timeout=self.timeout)
            guest_ns = self.guest.agent_command('guest-get-time')
        except exception.GuestAgentError as e:
            self.record('clock', Status.FAILED, str(e))
            return
        skew = abs(guest_ns - time.time_ns()) / 1e9
        self.record('clock', Status.DONE, 'set; %.3f s from the host' % skew)

    def network(self, set_link_up):
        try:
            set_link_up()
        except exception.LiveSnapshotError as e:
            self.record('network', Status.FAILED, 'link up: %s' % e)
            return
        ifc = self.facts.get('interface')
        if not ifc:
            self.record('network', Status.SKIPPED, 'no interface with the '
                        "image's MAC was found in the guest")
            return
        r = self.script('network', _DHCP_SCRIPT, ifc)
        if r.status == Status.DONE:
            self.facts['ipv4'] = r.detail

    def hooks(self, hooks_dir):
        self.script('hooks', _HOOKS_SCRIPT, self.identity.name,
                    self.identity.uuid, hooks_dir)


def reset(guest, identity, set_link_up, *, agent_timeout=30,
          step_timeout=60, hooks_dir=HOOKS_DIR):
    """Give a freshly restored clone its own identity.

    :param guest: the clone's :class:`nova_live_snapshot.guest.Guest`
    :param identity: :class:`NewIdentity`
    :param set_link_up: callable that sets the clone's NIC link up (the clone
        is restored with its link down)
    :returns: :class:`IdentityReport`; when the agent never answers, the
        report says so (``agent`` False) and nothing was changed.
    """
    deadline = time.monotonic() + agent_timeout
    while not guest.agent_ping(timeout=2):
        if time.monotonic() >= deadline:
            return not_reset('the guest agent did not answer within %d s'
                             % agent_timeout)
        time.sleep(0.1)
    steps = _Steps(guest, identity, step_timeout)
    for run in (steps.mac, steps.entropy, steps.hostname,
                steps.ssh_host_keys, steps.machine_id, steps.clock,
                lambda: steps.network(set_link_up),
                lambda: steps.hooks(hooks_dir)):
        started = time.monotonic()
        run()
        steps.reports[-1] = dataclasses.replace(
            steps.reports[-1], seconds=round(time.monotonic() - started, 3))
    return IdentityReport(agent=True, steps=tuple(steps.reports),
                          facts=steps.facts)
