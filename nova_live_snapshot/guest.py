"""One libvirt domain: each method does one libvirt thing.

Flag bitmasks stay here; callers pass keyword arguments. ``libvirtError`` is
translated in :func:`nova_live_snapshot.virterror.translate_errors` and, for
the guest agent, in :meth:`Guest.agent_command`. This module does not import
:mod:`.host` (which hands out Guests): both use :mod:`.virterror` and
:mod:`.waiting`.
"""

import base64
import contextlib
import json
import logging
import os
import threading

import libvirt
import libvirt_qemu

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import virterror
from nova_live_snapshot import waiting

__all__ = ['Guest']

LOG = logging.getLogger(__name__)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: 'nostate',
    libvirt.VIR_DOMAIN_RUNNING: 'running',
    libvirt.VIR_DOMAIN_BLOCKED: 'blocked',
    libvirt.VIR_DOMAIN_PAUSED: 'paused',
    libvirt.VIR_DOMAIN_SHUTDOWN: 'shutting down',
    libvirt.VIR_DOMAIN_SHUTOFF: 'shut off',
    libvirt.VIR_DOMAIN_CRASHED: 'crashed',
    libvirt.VIR_DOMAIN_PMSUSPENDED: 'suspended',
}


def _errors(operation, guest):
    return virterror.translate_errors(operation, domain=guest._name)


class Guest:
    """A libvirt domain."""

    def __init__(self, domain, run_dir='/run/libvirt/qemu'):
        """:param run_dir: where the daemon keeps its QEMU pid files, as
            seen from this process (see ``Host.qemu_run_dir``)."""
        self.domain = domain
        self._name = domain.name()
        self._run_dir = run_dir

    def __repr__(self):
        return '<Guest %s>' % self._name

    @property
    def name(self):
        return self._name

    @property
    def uuid(self):
        return self.domain.UUIDString()

    def xml(self, inactive=False):
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with _errors('read XML of %s' % self._name, self):
            return self.domain.XMLDesc(flags)

    def state(self):
        with _errors('read state of %s' % self._name, self):
            state, _reason = self.domain.state()
        return _STATES.get(state, 'unknown')

    def is_running(self):
        return self.state() == 'running'

    def is_persistent(self):
        with _errors('read persistence of %s' % self._name, self):
            return bool(self.domain.isPersistent())

    def disk_sources(self):
        """``{target dev: source file}`` of the file-backed disks, live."""
        return domainxml.disk_sources(self.xml())

    def interface_macs(self):
        return domainxml.interface_macs(self.xml())

    def leased_ipv4(self):
        """The IPv4 address the network's DHCP server leased to this
        domain, or None (asked of libvirt, not of the guest)."""
        try:
            addrs = self.domain.interfaceAddresses(
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
        except libvirt.libvirtError:
            return None
        for iface in addrs.values():
            for addr in iface.get('addrs') or []:
                if addr['type'] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                    return addr['addr']
        return None

    def genid(self):
        return domainxml.genid(self.xml())

    def qemu_pid(self):
        """The PID of the running domain's QEMU (libvirt's pid file)."""
        with open(os.path.join(self._run_dir, '%s.pid' % self._name)) as f:
            return int(f.read())

    def set_link_up(self, mac):
        """Set the link of the NIC with ``mac`` up, in the running domain."""
        self._set_link(mac, 'up')

    def force_link_down(self, mac):
        """Set the link of the NIC with ``mac`` down in QEMU, whatever
        libvirt believes it is.

        After a restore, QEMU's virtio-net takes its link state from the
        migration stream (the source's, up), while libvirt keeps the XML's
        "down" and ignores a change to the state it believes in: only a
        change to up and back reaches QEMU.
        """
        self._set_link(mac, 'up')
        self._set_link(mac, 'down')

    def _set_link(self, mac, state):
        nic = domainxml.interface_with_link(self.xml(), mac, state)
        if nic is None:
            raise exception.LiveSnapshotError(
                'Domain %s has no interface with MAC %s' % (self._name, mac))
        with _errors('set link %s on %s' % (state, self._name), self):
            self.domain.updateDeviceFlags(nic, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    # Capture ---------------------------------------------------------------

    def snapshot_live(self, memory_path, overlays):
        """Take an external memory and disk snapshot while the guest runs.

        QEMU migrates the memory to ``memory_path`` with the vCPUs running,
        then pauses them briefly while libvirt switches every disk in
        ``overlays`` (``{target dev: new overlay path}``) to a new qcow2 overlay
        on top of its current image, and resumes. The previous images become
        read-only backing files: together with the memory file they are a
        point-in-time pair. ATOMIC means libvirt rolls every disk back if one
        fails; NO_METADATA leaves no snapshot object in libvirt to clean up.
        """
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE |
                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        with _errors('live snapshot of %s' % self._name, self):
            self.domain.snapshotCreateXML(
                domainxml.snapshot_xml(memory_path, overlays), flags)

    def active_disk(self, dev):
        """The file disk ``dev`` of the running domain writes to."""
        return domainxml.active_disk(self.xml(), dev)

    def _block_job_ready(self, dev):
        with _errors('block job info of %s %s' % (self._name, dev), self):
            info = self.domain.blockJobInfo(dev, 0)
        if not info:
            raise exception.HypervisorError(
                operation='block commit of %s %s' % (self._name, dev),
                reason='the job ended before it was ready to pivot')
        if info['cur'] != info['end']:
            return False
        return domainxml.mirror_ready(self.xml(), dev)

    @contextlib.contextmanager
    def _block_job_events(self, dev):
        """An Event set whenever libvirt reports a change of a block job on
        disk ``dev`` of this domain (BLOCK_JOB_2: started, ready,
        completed, failed), for waits to wake on instead of polling.

        The connection's event loop delivers it (this project's
        :class:`~.host.Host`, or Nova's inside nova-compute).
        """
        changed = threading.Event()
        uuid = self.uuid

        def on_event(conn, dom, disk, job_type, status, opaque):
            if disk == dev and dom.UUIDString() == uuid:
                changed.set()

        conn = self.domain.connect()
        with _errors('register block job events of %s' % self._name, self):
            callback = conn.domainEventRegisterAny(
                self.domain, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2,
                on_event, None)
        try:
            yield changed
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback)

    def commit_active(self, dev, timeout=600):
        """Merge disk ``dev``'s active overlay into its backing file, while
        the guest runs, and pivot the disk back onto that file.

        This undoes the overlay a live capture adds: the domain ends on the
        image it ran on before, and the overlay is no longer used (the
        caller removes it). The frozen point-in-time copy must have been
        taken from the backing file already: it is written again from here.
        Both waits wake on libvirt's block job events; they look on their
        own once a second in case an event is missed.
        """
        flags = (libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE |
                 libvirt.VIR_DOMAIN_BLOCK_COMMIT_SHALLOW)
        with self._block_job_events(dev) as changed:
            with _errors('block commit of %s %s' % (self._name, dev), self):
                # A commit already running is one a crashed nova-compute
                # started (libvirt carries it on): finish that one.
                if not self.domain.blockJobInfo(dev, 0):
                    self.domain.blockCommit(dev, None, None, 0, flags)
            waiting.wait_for(lambda: self._block_job_ready(dev), timeout,
                             interval=1.0, wake=changed,
                             what='the block commit of %s %s'
                             % (self._name, dev))
            with _errors('pivot %s %s' % (self._name, dev), self):
                self.domain.blockJobAbort(
                    dev, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)

            def finished():
                with _errors('block job info', self):
                    return not self.domain.blockJobInfo(dev, 0)
            waiting.wait_for(finished, timeout, interval=1.0, wake=changed,
                             what='the pivot of %s %s' % (self._name, dev))

    def end_job(self, timeout=120):
        """Abort the domain's running job, if any (the memory save of a
        snapshot whose caller died), and wait until none runs: libvirt
        carries a job on without its caller and would otherwise finish the
        snapshot, overlays included, behind the back of whoever cleans up.
        """
        def idle():
            with _errors('job info of %s' % self._name, self):
                return self.domain.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
        if idle():
            return
        LOG.warning('Aborting the job left running on %s', self._name)
        try:
            self.domain.abortJob()
        except libvirt.libvirtError as e:
            # It may have finished in between.
            LOG.info('Aborting the job of %s: %s', self._name, e)
        waiting.wait_for(idle, timeout,
                         what='the job of %s to end' % self._name)

    def save(self, path):
        """Save the memory to ``path`` and stop the domain (virDomainSave)."""
        with _errors('save %s' % self._name, self):
            self.domain.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_RUNNING)

    # QEMU monitor (lazy mode) -----------------------------------------------

    def qmp(self, execute, arguments=None, files=()):
        """Run one QMP command on the domain's monitor, passing ``files``
        (descriptors) with it; its ``return`` value.

        libvirt marks the domain tainted (custom-monitor): only used for
        what libvirt 9.0 cannot do, loading and saving lazy-mode state.

        :raises HypervisorError: libvirt or QEMU refused the command.
        """
        cmd = {'execute': execute}
        if arguments is not None:
            cmd['arguments'] = arguments
        with _errors('QMP %s on %s' % (execute, self._name), self):
            if files:
                reply, _ = libvirt_qemu.qemuMonitorCommandWithFiles(
                    self.domain, json.dumps(cmd), list(files), 0)
            else:
                reply = libvirt_qemu.qemuMonitorCommand(
                    self.domain, json.dumps(cmd), 0)
        reply = json.loads(reply)
        if 'error' in reply:
            raise exception.HypervisorError(
                operation='QMP %s on %s' % (execute, self._name),
                reason=reply['error'].get('desc', reply['error']))
        return reply.get('return')

    def _ignore_shared(self, enabled):
        self.qmp('migrate-set-capabilities', {'capabilities': [
            {'capability': 'x-ignore-shared', 'state': enabled}]})

    def _migration_done(self, what):
        status = self.qmp('query-migrate')
        state = status.get('status')
        if state == 'failed':
            raise exception.HypervisorError(
                operation='%s of %s' % (what, self._name),
                reason=status.get('error-desc', 'QEMU reports it failed'))
        return state == 'completed'

    def _wait_migration(self, what, timeout):
        try:
            waiting.wait_for(lambda: self._migration_done(what), timeout,
                             interval=0.01,
                             what='%s of %s' % (what, self._name))
        except TimeoutError as e:
            raise exception.HypervisorError(
                operation='%s of %s' % (what, self._name), reason=str(e))

    def load_state(self, fd, ignore_shared, timeout):
        """Load a migration stream from descriptor ``fd`` into this domain,
        started paused with ``-incoming defer``; it stays paused.

        :param ignore_shared: the stream was saved with ``x-ignore-shared``
            (QEMU refuses a stream whose capabilities differ from its own).
        """
        if ignore_shared:
            self._ignore_shared(True)
        self.qmp('getfd', {'fdname': 'nls-incoming'}, files=[fd])
        self.qmp('migrate-incoming', {'uri': 'fd:nls-incoming'})
        self._wait_migration('loading state', timeout)

    def save_state(self, fd, timeout):
        """Write this (paused) domain's device state to descriptor ``fd``,
        without the RAM that is a shared file (``x-ignore-shared``)."""
        self._ignore_shared(True)
        self.qmp('getfd', {'fdname': 'nls-state'}, files=[fd])
        self.qmp('migrate', {'uri': 'fd:nls-state'})
        self._wait_migration('saving state', timeout)

    # Lifecycle ---------------------------------------------------------------

    def resume(self):
        """Let a paused domain run."""
        with _errors('resume %s' % self._name, self):
            self.domain.resume()

    def destroy(self):
        """Stop the domain at once if it runs; a transient domain is gone
        afterwards."""
        with _errors('destroy %s' % self._name, self):
            if self.domain.isActive():
                self.domain.destroy()

    def undefine(self):
        """Remove a persistent domain's definition (no-op when transient)."""
        with _errors('undefine %s' % self._name, self):
            if self.domain.isPersistent():
                self.domain.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    def remove(self):
        """Destroy and undefine, tolerating a domain that is already gone."""
        try:
            persistent = self.is_persistent()
            self.destroy()
            if persistent:
                self.undefine()
        except exception.DomainNotFound:
            pass

    # Guest agent -------------------------------------------------------------

    def agent_command(self, execute, arguments=None, timeout=10,
                      returns=None):
        """Run one QEMU guest agent command and return its ``return`` value.

        The guest wrote the reply, so it may be anything: ``returns`` (a
        type or a tuple of types) is what the value must be.

        :raises GuestAgentError: the agent is absent, not answering, the
            command failed inside the guest, or the reply is not what
            ``returns`` says.
        """
        cmd = {'execute': execute}
        if arguments is not None:
            cmd['arguments'] = arguments
        try:
            reply = libvirt_qemu.qemuAgentCommand(self.domain, json.dumps(cmd),
                                                  timeout, 0)
        except libvirt.libvirtError as e:
            raise exception.GuestAgentError(
                domain=self._name, reason='%s failed: %s'
                % (execute, e.get_error_message())) from e
        try:
            data = json.loads(reply)
        except (ValueError, RecursionError, TypeError):
            data = None
        if not isinstance(data, dict):
            raise exception.GuestAgentError(
                domain=self._name, reason='%s: the agent answered with '
                'something other than a JSON object' % execute)
        value = data.get('return')
        if returns is not None:
            self._check_type(execute, 'its answer', value, returns)
        return value

    def _check_type(self, execute, what, value, kinds):
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        # bool is an int to Python, never to the agent's protocol.
        if not isinstance(value, kinds) or (
                isinstance(value, bool) and bool not in kinds):
            raise exception.GuestAgentError(
                domain=self._name, reason='%s: %s is a %s, not what the '
                'guest agent protocol says' % (
                    execute, what, type(value).__name__))
        return value

    def _field(self, execute, reply, key, kinds, default=None):
        """``reply[key]`` (``default`` when absent), of one of ``kinds``."""
        if key not in reply:
            return default
        return self._check_type(execute, repr(key), reply[key], kinds)

    def _b64(self, execute, reply, key):
        text = self._field(execute, reply, key, str, '')
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise exception.GuestAgentError(
                domain=self._name, reason='%s: %r is not base64'
                % (execute, key)) from None

    def agent_time_ns(self):
        """The guest's clock, in nanoseconds since the epoch."""
        return self.agent_command('guest-get-time', returns=int)

    def agent_ping(self, timeout=2):
        """True when the guest agent answers."""
        try:
            self.agent_command('guest-ping', timeout=timeout)
        except exception.GuestAgentError:
            return False
        return True

    def agent_read_file(self, path, limit=1024 * 1024):
        """Read a (small) file inside the guest through the agent."""
        handle = self.agent_command('guest-file-open',
                                    {'path': path, 'mode': 'r'}, returns=int)
        try:
            chunks = []
            total = 0
            while total < limit:
                part = self.agent_command(
                    'guest-file-read',
                    {'handle': handle, 'count': min(65536, limit - total)},
                    returns=dict)
                data = self._b64('guest-file-read', part, 'buf-b64')
                chunks.append(data)
                total += len(data)
                if self._field('guest-file-read', part, 'eof', bool) or \
                        not data:
                    break
            return b''.join(chunks)[:limit]
        finally:
            self.agent_command('guest-file-close', {'handle': handle})

    def agent_write_file(self, path, data):
        """Create or truncate ``path`` in the guest and write ``data``.

        qemu-ga creates new files mode 0600.
        """
        handle = self.agent_command('guest-file-open',
                                    {'path': path, 'mode': 'w'}, returns=int)
        try:
            for start in range(0, len(data), 48 * 1024):
                self.agent_command('guest-file-write', {
                    'handle': handle,
                    'buf-b64': base64.b64encode(
                        data[start:start + 48 * 1024]).decode()})
        finally:
            self.agent_command('guest-file-close', {'handle': handle})

    def agent_exec(self, argv, timeout=30, stdin=None):
        """Run ``argv`` in the guest; return ``(exit code, stdout, stderr)``.

        :raises GuestAgentError: the agent failed or the command did not end
            within ``timeout`` seconds.
        """
        args = {'path': argv[0], 'arg': list(argv[1:]),
                'capture-output': True}
        if stdin is not None:
            args['input-data'] = base64.b64encode(stdin).decode()
        started = self.agent_command('guest-exec', args, returns=dict)
        pid = self._field('guest-exec', started, 'pid', int)
        if pid is None:
            raise exception.GuestAgentError(
                domain=self._name, reason='guest-exec: no pid in its answer')

        def exited():
            status = self.agent_command('guest-exec-status', {'pid': pid},
                                        returns=dict)
            if self._field('guest-exec-status', status, 'exited', bool):
                return status
            return None
        # Every look is an agent round trip that takes the guest's CPU from
        # the command it waits for (under TCG, tens of ms): looks come
        # quickly at first and then every 0.2 s, not every 50 ms.
        try:
            status = waiting.wait_for(exited, timeout, interval=0.02,
                                      max_interval=0.2,
                                      what='%s in %s' % (argv[0], self._name))
        except TimeoutError:
            raise exception.GuestAgentError(
                domain=self._name, reason='%s did not finish within %d s'
                % (argv[0], timeout)) from None
        out = self._b64('guest-exec-status', status, 'out-data')
        err = self._b64('guest-exec-status', status, 'err-data')
        # No exit code when a signal ended the command.
        return (self._field('guest-exec-status', status, 'exitcode', int),
                out, err)
