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
   guest's pool and the CRNG reseeded (``nls-reseed``, perl or python3), or
   at least mixed in through ``/dev/urandom``. Before anything that starts
   a process that talks on the network.
3. ``hostname``: the clone's name, also in ``/etc/hostname`` and
   ``/etc/hosts``.
4. ``ssh_host_keys``: old keys removed, new ones of the same types put in
   their place (made on the host while the clone was restored), a running
   sshd reloaded (SIGHUP: it re-executes and reads the new keys before it
   listens again) and its old listening sockets seen closed; after link up,
   its new listening sockets checked.
5. ``machine_id``: a new random ``/etc/machine-id``.
6. ``clock``: set to the host's time: moved by the host-guest offset
   measured with ``guest-get-time`` (``date``), checked, and set with
   ``guest-set-time`` where that did not work.
7. ``network``: the DHCP client that holds the source's lease stopped
   (networkd: restarted, for the new machine-id's client identifier) and
   seen gone, and the source's addresses flushed, while the link is still
   down; then, only if no step failed, link up and a lease asked for with
   the new MAC and identity.
8. ``hooks``: executables in ``/etc/nova-live-snapshot/clone.d`` run last
   with the clone's name and UUID.

Each step reports ``done``, ``skipped`` (the guest lacks what it acts on,
or, for the network and hooks, an earlier step failed) or ``failed``, with
a detail, in an :class:`IdentityReport`.

Under TCG every agent round trip and every process the guest starts costs
0.05-1 s in a freshly restored clone (its translated code is cold), so the
guest does the minimum in two guest scripts (one ``guest-exec`` each):
steps 1-6 and the first half of 7 with the link down (7's half right
after 5, so that a restarted networkd starts while 4 and 6 run), then,
link up, the second halves of 7 and 4, and 8. The scripts read and write ``/proc`` and
``/sys`` with shell built-ins rather than start ``hostname``, ``cat``,
``grep`` or ``systemctl`` where they can, and restart nothing that a
signal reloads. What can be made on the host is made there beforehand
(:func:`prepare`). Seeds and keys reach the first script on its stdin,
never on a command line.
"""

import concurrent.futures
import dataclasses
import enum
import importlib.resources
import io
import logging
import os
import re
import tarfile
import tempfile
import time
import uuid as uuidlib

from oslo_concurrency import processutils

from nova_live_snapshot import exception
from nova_live_snapshot import waiting

LOG = logging.getLogger(__name__)

__all__ = ['Status', 'StepReport', 'IdentityReport', 'NewIdentity',
           'prepare', 'reset', 'not_reset', 'hostname_for']

HOOKS_DIR = '/etc/nova-live-snapshot/clone.d'
_SKIP = 3           # exit code of a guest script: "not applicable here"
#: What dhcp-stop.sh may answer it stopped (the first line of its output).
DHCP_CLIENTS = ('networkd', 'dhclient', 'udhcpc', 'none')


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


# Guest-side scripts: POSIX sh files in guest_scripts/ (package data, checked
# by shellcheck in tests/unit/test_guest_scripts.py), one a step or half
# step; each file's header says what its arguments are.


def guest_script(name):
    """The body of ``guest_scripts/<name>.sh``, without its leading comment
    block (documentation for readers, not for the guest).

    The scripts live in files so that a shell linter reads them; each is
    run as a function body inside a batch (:class:`_Batch`).
    """
    text = importlib.resources.files(__package__).joinpath(
        'guest_scripts', name + '.sh').read_text()
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith('#') or not lines[0].strip()):
        lines.pop(0)
    return '\n' + ''.join(lines)


# A function mac.sh and dhcp-stop.sh use, prepended to each.
_IFACE_SCRIPT = guest_script('iface-with-mac')
_MAC_SCRIPT = guest_script('mac')
_RESEED_SCRIPT = guest_script('reseed')
_HOSTNAME_SCRIPT = guest_script('hostname')
# A function both ssh scripts use, prepended to each.
_SSHD_LISTENERS_SCRIPT = guest_script('sshd-listeners')
_SSH_INSTALL_SCRIPT = guest_script('ssh-install-keys')
_SSH_CHECK_SCRIPT = guest_script('ssh-check')
_MACHINE_ID_SCRIPT = guest_script('machine-id')
_CLOCK_SCRIPT = guest_script('clock')
_DHCP_STOP_SCRIPT = guest_script('dhcp-stop')
_DHCP_SCRIPT = guest_script('dhcp')
_HOOKS_SCRIPT = guest_script('hooks')

# The SSH host key types the host makes for every clone before it knows the
# guest's (OpenSSH's defaults since 7.0); a type the guest has beyond these,
# the guest makes itself.
HOST_KEY_TYPES = ('ed25519', 'ecdsa', 'rsa')


#: What one ``ssh-keygen`` may use (an RSA key takes well under a second
#: of CPU natively): a stuck or runaway one ends instead of holding a clone.
SSH_KEYGEN_LIMITS = processutils.ProcessLimits(cpu_time=60,
                                               address_space=1 << 30)


def _host_key(key_type, hostname):
    """One SSH host key made on this host: ``(type, {file name: (bytes,
    mode)}, fingerprint line)``."""
    with tempfile.TemporaryDirectory(prefix='nls-ssh-') as tmp:
        name = 'ssh_host_%s_key' % key_type
        path = os.path.join(tmp, name)
        processutils.execute('ssh-keygen', '-q', '-t', key_type, '-N', '',
                             '-C', 'root@%s' % hostname, '-f', path,
                             prlimit=SSH_KEYGEN_LIMITS)
        fingerprint, _err = processutils.execute(
            'ssh-keygen', '-lf', path + '.pub', prlimit=SSH_KEYGEN_LIMITS)
        fingerprint = fingerprint.strip()
        files = {}
        for suffix, mode in (('', 0o600), ('.pub', 0o644)):
            with open(path + suffix, 'rb') as f:
                files[name + suffix] = (f.read(), mode)
    return key_type, files, fingerprint


class Prepared:
    """What the host makes for one clone before its guest answers: SSH host
    keys of :data:`HOST_KEY_TYPES` (an RSA key takes seconds under TCG and
    a few tenths natively), made concurrently in the background from the
    moment :func:`prepare` is called, so that they are ready when the
    guest script needs them. The caller starts it before the restore."""

    def __init__(self, hostname):
        self.hostname = hostname
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(HOST_KEY_TYPES), thread_name_prefix='nls-keys')
        self._keys = [pool.submit(_host_key, t, hostname)
                      for t in HOST_KEY_TYPES]
        # The threads end with their key; nothing waits for them here.
        pool.shutdown(wait=False)

    def host_keys(self):
        """``({file name: (bytes, mode)}, {type: fingerprint line})`` of the
        keys made; a type whose generation failed is left out (the guest
        makes it), and said so in the log."""
        files, fingerprints = {}, {}
        for future in self._keys:
            try:
                key_type, key_files, fingerprint = future.result()
            except (OSError, processutils.ProcessExecutionError) as e:
                LOG.info('Host-side SSH key generation failed (%s); the '
                         'guest makes its own', e)
                continue
            files.update(key_files)
            fingerprints[key_type] = fingerprint
        return files, fingerprints


def prepare(hostname):
    """Start making what re-identifying a clone called ``hostname`` needs
    from the host (:class:`Prepared`); pass it to :func:`reset`."""
    return Prepared(hostname)


# The staging directory of a batch, as a step argument.
_STAGED = object()

# Steps in the order they happen and are reported.
STEPS = ('mac', 'entropy', 'hostname', 'ssh_host_keys', 'machine_id',
         'clock', 'network', 'hooks')

# A clock set from an offset within this of the host's is kept; otherwise
# the engine sets it with guest-set-time.
_CLOCK_TOLERANCE_S = 0.1


class _Batch:
    """Guest-side steps run by one guest-exec.

    One shell script holds each step's script as a function whose body runs
    in a subshell (its ``exit`` ends the step, not the batch) and reports,
    after a marker line, the step's exit code, the guest's uptime around it
    and its output. Files the steps need (seeds, keys) travel as a tar
    archive on stdin into a private directory on /run, removed at the end.

    A step's standard output is its answer (an interface name, the DHCP
    client it stopped, fingerprints) and is read as data; its standard
    error is kept apart, after a second marker, and only ever shown in a
    failed step's detail. Merged, a stray message (the shell failing to
    open ``/proc/PID/stat`` of a process that had just ended) became the
    first line of an answer: the DHCP client's name, so no client was
    started and the clone never leased.
    """

    def __init__(self):
        self.steps = []     # (step, script, args)
        self.files = {}     # name in the staging directory: bytes or
        #                     (bytes, mode); mode 0600 by default

    def add(self, step, script, *args):
        self.steps.append((step, script, args))

    def __bool__(self):
        return bool(self.steps)

    def argv(self, marker):
        """The command line: the script and its arguments."""
        args = [marker]
        body = ['m=$1',
                'd=$(mktemp -d /run/nls-id.XXXXXX 2>/dev/null || mktemp -d)'
                ' || exit 1',
                # Each step's stderr; a dot file, so no step's glob of the
                # staged files sees it.
                'e=$d/.stderr']
        if self.files:
            body.append('tar -x -C "$d" || { rm -rf "$d"; exit 1; }')
        for i, (step, script, step_args) in enumerate(self.steps):
            refs = []
            for arg in step_args:
                if arg is _STAGED:
                    refs.append('"$d"')
                else:
                    args.append(arg)
                    refs.append('"${%d}"' % len(args))
            body += ['_s%d() (%s)' % (i, script),
                     'read t0 _ < /proc/uptime',
                     'o=$(_s%d %s 2>"$e"); r=$?' % (i, ' '.join(refs)),
                     'read t1 _ < /proc/uptime',
                     'printf "%%s %%s %%s %%s %%s\\n%%s\\n%%s-stderr\\n" "$m" %s'
                     ' "$r" "$t0" "$t1" "$o" "$m"' % step,
                     'while IFS= read -r l || [ -n "$l" ]; do'
                     ' printf "%s\\n" "$l"; done < "$e"']
        body.append('rm -rf "$d"')
        return ['/bin/sh', '-c', '\n'.join(body), 'sh'] + args

    def stdin(self):
        if not self.files:
            return None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w') as tar:
            for name, data in self.files.items():
                data, mode = data if isinstance(data, tuple) else (data, 0o600)
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    @staticmethod
    def parse(marker, out):
        """``{step: (exit code, stdout, stderr, guest seconds)}`` from the
        output."""
        results, current, stream = {}, None, None
        for line in out.decode(errors='replace').split('\n'):
            head = line.split(' ')
            if head[0] == marker and len(head) == 5:
                current, stream = head[1], 1
                results[current] = [int(head[2]), [], [],
                                    float(head[4]) - float(head[3])]
            elif current is not None and line == marker + '-stderr':
                stream = 2
            elif current is not None:
                results[current][stream].append(line)
        return {step: (rc, '\n'.join(out).strip(), '\n'.join(err).strip(),
                       seconds)
                for step, (rc, out, err, seconds) in results.items()}


class _Steps:
    """Runs the steps on one guest and collects their reports."""

    def __init__(self, guest, identity, timeout):
        self.guest = guest
        self.identity = identity
        self.timeout = timeout
        self.reports = {}
        self.facts = {}
        self.dhcp_stop = None   # the report of stopping the DHCP client
        self.sshd = None        # [PID, old listening inodes] after a SIGHUP
        self.ssh = None         # the first half's report of ssh_host_keys

    def record(self, step, status, detail, seconds=None):
        report = StepReport(step, status, detail,
                            None if seconds is None else round(seconds, 3))
        self.reports[step] = report
        log = LOG.warning if status == Status.FAILED else LOG.debug
        log('Clone %s: %s %s: %s', self.identity.name, step, status.value,
            detail)
        return report

    def ordered(self):
        """The reports in the order of :data:`STEPS`."""
        return tuple(self.reports[step] for step in STEPS
                     if step in self.reports)

    def failed(self):
        return [r.step for r in self.reports.values()
                if r.status == Status.FAILED]

    def run(self, batch):
        """Run ``batch``; ``{step: StepReport}`` (not yet recorded)."""
        if not batch:
            return {}
        marker = '@nls-%s' % uuidlib.uuid4().hex
        try:
            rc, out, err = self.guest.agent_exec(
                batch.argv(marker), timeout=self.timeout * len(batch.steps),
                stdin=batch.stdin())
        except exception.GuestAgentError as e:
            return {step: StepReport(step, Status.FAILED, str(e))
                    for step, _, _ in batch.steps}
        results = _Batch.parse(marker, out)
        reports = {}
        for step, _, _ in batch.steps:
            if step not in results:
                reports[step] = StepReport(step, Status.FAILED, (
                    'the guest script ended (exit %s) before this step: %s'
                    % (rc, err.decode(errors='replace').strip()[-300:])))
                continue
            code, text, err, seconds = results[step]
            if code == 0:
                status = Status.DONE
                if err:
                    LOG.debug('Clone %s: %s wrote to stderr: %s',
                              self.identity.name, step, err[-300:])
            elif code == _SKIP:
                status, text = Status.SKIPPED, 'not applicable in this guest'
            else:
                text = '\n'.join(t for t in (text, err) if t)
                status, text = Status.FAILED, 'exit %s: %s' % (code,
                                                               text[-300:])
            reports[step] = StepReport(step, status, text, seconds)
        return reports

    def keep(self, report, detail=None, extra_s=0.0):
        """Record a batch's report for a step, optionally reworded."""
        return self.record(report.step, report.status,
                           report.detail if detail is None else detail,
                           (report.seconds or 0.0) + extra_s)

    def clock_offset_ns(self):
        """Host time minus guest time, from one guest-get-time."""
        before = time.time_ns()
        guest_ns = self.guest.agent_time_ns()
        return (before + time.time_ns()) // 2 - guest_ns

    # Link down: steps 1-6 and the first half of 7 ----------------------------

    def identify(self, prepared):
        """mac, entropy, hostname, machine_id, stopping the DHCP client,
        ssh_host_keys (install, sshd reload) and clock, in this order, in
        one guest script: the guest's whole new identity while its link is
        still down.

        The DHCP client is stopped (networkd restarted, without waiting
        for its start) as soon as what it sends is new (MAC, CRNG,
        hostname, machine-id), so that the new networkd starts while the
        other steps run; the link still comes up only after all of them.
        """
        batch = _Batch()
        nic = self.identity.old_mac and self.identity.mac
        if nic:
            batch.add('mac', _IFACE_SCRIPT + _MAC_SCRIPT,
                      self.identity.old_mac, self.identity.mac)
        # Before anything that starts a process that draws random numbers
        # for the network (sshd, the DHCP client).
        batch.add('entropy', _RESEED_SCRIPT, _STAGED)
        batch.files = {'mix': os.urandom(64), 'credit': os.urandom(64)}
        batch.add('hostname', _HOSTNAME_SCRIPT, self.identity.hostname)
        batch.add('machine_id', _MACHINE_ID_SCRIPT, self.identity.machine_id)
        if nic:
            batch.add('network', _IFACE_SCRIPT + _DHCP_STOP_SCRIPT,
                      self.identity.mac)
        key_files, fingerprints = prepared.host_keys()
        batch.files.update(key_files)
        batch.add('ssh_host_keys',
                  _SSHD_LISTENERS_SCRIPT + _SSH_INSTALL_SCRIPT, _STAGED,
                  self.identity.hostname)
        try:
            offset = self.clock_offset_ns()
        except exception.GuestAgentError:
            offset = None
        else:
            batch.add('clock', _CLOCK_SCRIPT, '%s%d.%09d' % (
                '-' if offset < 0 else '+', *divmod(abs(offset), 10 ** 9)))
        got = self.run(batch)

        if not nic:
            self.record('mac', Status.SKIPPED, 'the clone has no NIC')
        else:
            r = self.keep(got['mac'])
            if r.status == Status.DONE:
                self.facts['interface'] = r.detail
                self.facts['mac'] = self.identity.mac
            self.dhcp_stop = got['network']
        r = got['entropy']
        if r.status != Status.FAILED:
            genid = self.guest.genid()
            self.facts['genid'] = genid
            # Skipped: mixed in, not credited; the CRNG uses it at its next
            # reseed.
            r = dataclasses.replace(r, status=Status.DONE, detail=(
                'new generation ID %s; %s' % (genid, r.detail)
                if r.status == Status.DONE else
                'new generation ID %s; 64 bytes mixed into the pool (no tool '
                'to reseed the CRNG at once)' % genid))
        self.keep(r)
        r = self.keep(got['hostname'])
        if r.status == Status.DONE:
            self.facts['hostname'] = self.identity.hostname
        self.ssh_keys(got['ssh_host_keys'], fingerprints)
        r = self.keep(got['machine_id'])
        if r.status == Status.DONE:
            self.facts['machine_id'] = r.detail
        self.clock(got.get('clock'))

    def ssh_keys(self, report, fingerprints):
        """Read the first half of ssh_host_keys; recorded now, completed
        by :meth:`connect` when sshd was sent SIGHUP."""
        self.ssh = report
        if report.status != Status.DONE:
            self.record('ssh_host_keys', report.status, report.detail,
                        report.seconds)
            return
        lines = report.detail.splitlines()
        fields = {line.split(' ', 1)[0]: line.split()[1:]
                  for line in lines if line.split(' ', 1)[0] in
                  ('types', 'made', 'sshd')}
        made = fields.get('made', [])
        keys = [fingerprints[t] for t in fields.get('types', [])
                if t not in made]
        keys += [line for line in lines
                 if line.split(' ', 1)[0] not in ('types', 'made', 'sshd')]
        sshd = fields.get('sshd', ['none'])
        if sshd[0] == 'hup':
            self.sshd = sshd[1:]
            how = 'sshd %s reloaded (SIGHUP) with them' % sshd[1]
        elif sshd[0] == 'restarted':
            how = 'sshd restarted with them'
        else:
            how = 'no sshd running'
        self.facts['ssh_host_keys'] = keys
        self.record('ssh_host_keys', Status.DONE, '%s new (%s made in the '
                    'guest); %s\n%s' % (' '.join(fields.get('types', [])),
                                        ' '.join(made) or 'none', how,
                                        '\n'.join(keys)), report.seconds)

    def skew_s(self, looks=3):
        """How far the guest's clock is from the host's, in seconds: the
        smallest of up to ``looks`` measurements, stopping at the first
        within tolerance. A guest busy starting services (the restarted
        networkd, the reloaded sshd) may answer guest-get-time late, and
        one late answer looks like a skewed clock; one more round trip is
        cheaper than guest-set-time's hwclock (1-4 s under TCG)."""
        skew = None
        for _ in range(looks):
            look = abs(self.clock_offset_ns()) / 1e9
            skew = look if skew is None else min(skew, look)
            if skew <= _CLOCK_TOLERANCE_S:
                break
        return skew

    def clock(self, offset_report):
        """Keep the clock the script set when it is within tolerance of the
        host's; otherwise set it with guest-set-time."""
        started = time.monotonic()
        try:
            if offset_report is not None and \
                    offset_report.status == Status.DONE:
                skew = self.skew_s()
                if skew <= _CLOCK_TOLERANCE_S:
                    self.keep(offset_report, 'set from an offset; %.3f s '
                              'from the host' % skew,
                              time.monotonic() - started)
                    return
            self.guest.agent_command('guest-set-time',
                                     {'time': time.time_ns()},
                                     timeout=self.timeout)
            skew = abs(self.clock_offset_ns()) / 1e9
        except exception.GuestAgentError as e:
            self.record('clock', Status.FAILED, str(e),
                        time.monotonic() - started)
            return
        self.record('clock', Status.DONE, 'set with guest-set-time; %.3f s '
                    'from the host' % skew, time.monotonic() - started)

    # Link up: the second half of 7, the sshd check, 8 ----------------------

    def connect(self, set_link_up, hooks_dir):
        """Link up, then network, the reloaded sshd's check and hooks in one
        script.

        The link stays down, and the hooks do not run, when any step so far
        failed: the clone fails, and it must not reach the network with
        part of its source's identity (the DHCP client not stopped, the
        source's MAC, its CRNG state...).
        """
        started = time.monotonic()
        ifc = self.facts.get('interface')
        stop = self.dhcp_stop
        client = None
        if stop is not None and stop.status == Status.DONE:
            client = stop.detail.split('\n', 1)[0]
            if client not in DHCP_CLIENTS:
                stop = dataclasses.replace(stop, status=Status.FAILED, detail=(
                    'it named no DHCP client this step knows: %r'
                    % client[:80]))
        failed = self.failed()
        stop_failed = stop is not None and stop.status == Status.FAILED
        if failed or stop_failed:
            # A client that was not seen to end may still hold the
            # source's lease: the link stays down for it too.
            if stop_failed:
                detail = ('stopping the DHCP client, link left down: %s'
                          % stop.detail)
                failed = failed + ['network']
            else:
                detail = 'link left down: %s failed' % ', '.join(failed)
            self.keep(StepReport('network', Status.FAILED, detail))
            self.record('hooks', Status.SKIPPED, 'not run: %s failed'
                        % ', '.join(failed))
            return
        network = None
        try:
            set_link_up()
        except exception.LiveSnapshotError as e:
            network = StepReport('network', Status.FAILED,
                                 'link up: %s' % e)
        else:
            if not ifc or stop is None or stop.status == Status.SKIPPED:
                network = StepReport(
                    'network', Status.SKIPPED, "no interface with the "
                    "image's MAC was found in the guest")
        if network is None and client == 'none':
            network = StepReport('network', Status.SKIPPED, (
                'no DHCP client known here (networkd, dhclient, udhcpc); '
                "the source's addresses flushed"))
        # The step's time: stopping the client, the link, the lease.
        link_s = time.monotonic() - started + (
            (stop.seconds or 0.0) if stop is not None else 0.0)
        batch = _Batch()
        if network is None:
            batch.add('network', _DHCP_SCRIPT, ifc, client)
        if self.sshd is not None:
            batch.add('ssh_host_keys',
                      _SSHD_LISTENERS_SCRIPT + _SSH_CHECK_SCRIPT, *self.sshd)
        batch.add('hooks', _HOOKS_SCRIPT, self.identity.name,
                  self.identity.uuid, hooks_dir)
        got = self.run(batch)
        r = self.keep(network or got['network'], extra_s=link_s)
        if network is None and r.status == Status.DONE:
            lines = r.detail.splitlines()
            self.facts['ipv4'] = lines[0]
            if len(lines) > 1 and lines[1].startswith('waited '):
                t0, t1 = lines[1].split()[1:3]
                self.facts['dhcp_wait_s'] = round(float(t1) - float(t0), 2)
        if self.sshd is not None:
            check = got['ssh_host_keys']
            first = self.reports['ssh_host_keys']
            seconds = (first.seconds or 0.0) + (check.seconds or 0.0)
            if check.status == Status.DONE:
                self.record('ssh_host_keys', Status.DONE, '%s; %s' % (
                    first.detail, check.detail), seconds)
            else:
                self.record('ssh_host_keys', Status.FAILED,
                            'keys replaced, but the reloaded sshd: %s'
                            % check.detail, seconds)
        self.keep(got['hooks'])


def reset(guest, identity, set_link_up, *, agent_timeout=30,
          step_timeout=60, hooks_dir=HOOKS_DIR, prepared=None):
    """Give a freshly restored clone its own identity.

    :param guest: the clone's :class:`nova_live_snapshot.guest.Guest`
    :param identity: :class:`NewIdentity`
    :param set_link_up: callable that sets the clone's NIC link up (the clone
        is restored with its link down); not called when a step failed.
    :param prepared: :func:`prepare` of ``identity``, started before the
        restore; made here when not given.
    :returns: :class:`IdentityReport`, its steps in the order of
        :data:`STEPS`; when the agent never answers, the report says so
        (``agent`` False) and nothing was changed.
    """
    prepared = prepared or prepare(identity)
    try:
        waiting.wait_for(lambda: guest.agent_ping(timeout=2), agent_timeout,
                         interval=0.05, what='the guest agent of %s'
                         % identity.name)
    except TimeoutError:
        return not_reset('the guest agent did not answer within %d s'
                         % agent_timeout)
    steps = _Steps(guest, identity, step_timeout)
    steps.identify(prepared)
    steps.connect(set_link_up, hooks_dir)
    return IdentityReport(agent=True, steps=steps.ordered(),
                          facts=steps.facts)
