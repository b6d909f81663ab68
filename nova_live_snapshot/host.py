"""The libvirt connection: one place that opens it, runs its event loop and
turns ``libvirtError`` into this project's exceptions.

Like Nova's ``virt/libvirt/host.py``, callers never touch flag bitmasks or
catch ``libvirt.libvirtError`` themselves: they call a named method here or
on :class:`nova_live_snapshot.guest.Guest`.
"""

import contextlib
import dataclasses
import logging
import os
import threading
import urllib.parse
import uuid as uuidlib

import libvirt
import libvirt_qemu

from nova_live_snapshot import exception
from nova_live_snapshot import guest as guest_mod
from nova_live_snapshot import virterror
from nova_live_snapshot import waiting

LOG = logging.getLogger(__name__)

__all__ = ['Host', 'PauseWindow']

translate_errors = virterror.translate_errors
# Callers made before waiting.py existed find it here too.
wait_for = waiting.wait_for

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop():
    """Run libvirt's default event loop in a daemon thread, once per process.

    It must be registered before the first connection is opened, or that
    connection never delivers events.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        # libvirt prints every error to stderr by default; ours are raised
        # as exceptions carrying the same message instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name='libvirt-events',
                         daemon=True).start()
        _event_loop_started = True


def _is_uuid(text):
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


@dataclasses.dataclass
class PauseWindow:
    """When QEMU stopped and resumed the vCPUs, by QEMU's own QMP clock."""

    stopped_at: float = None
    resumed_at: float = None

    @property
    def pause_ms(self):
        if self.stopped_at is None or self.resumed_at is None:
            return None
        return (self.resumed_at - self.stopped_at) * 1000.0


class Host:
    """A libvirt connection to one host's QEMU driver."""

    def __init__(self, uri=None, connection=None):
        """:param uri: the libvirt URI (``[live_snapshot] connection_uri``);
            None for libvirt's default URI. A machine may run more than one
            libvirtd (``qemu:///system?socket=...``): nothing here assumes
            ``qemu:///system``.
        :param connection: a callable returning an open connection whose
            owner runs its event loop (inside nova-compute, the bound
            ``get_connection`` of Nova's own ``Host``). Used instead of a
            connection of our own, so that there is one connection and one
            event loop per process.
        """
        self.uri = uri
        self._conn = None
        self._provider = connection
        self._lock = threading.Lock()

    def get_connection(self):
        if self._provider is not None:
            return self._provider()
        with self._lock:
            if self._conn is None:
                _start_event_loop()
                with translate_errors('open connection to %s'
                                      % (self.uri or "libvirt's default URI")):
                    self._conn = libvirt.open(self.uri)
            return self._conn

    def close(self):
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    # Facts about the host --------------------------------------------------

    def qemu_run_dir(self):
        """Where the daemon keeps its QEMU pid files, as seen from this
        process: ``qemu/`` next to its socket. That is ``/run/libvirt/qemu``
        for the local daemon, and under the other root for a daemon in a
        root of its own reached by a ``?socket=`` URI
        (``tools/backports-host.sh``)."""
        uri = (self.uri if self._provider is None
               else self.get_connection().getURI())
        socket = urllib.parse.parse_qs(
            urllib.parse.urlsplit(uri).query).get('socket')
        return os.path.join(
            os.path.dirname(socket[0]) if socket else '/run/libvirt', 'qemu')

    @staticmethod
    def _dotted(number):
        return '%d.%d.%d' % (number // 1000000, number // 1000 % 1000,
                             number % 1000)

    def libvirt_version(self):
        return self._dotted(self.get_connection().getLibVersion())

    def qemu_version(self):
        return self._dotted(self.get_connection().getVersion())

    def machine_aliases(self, arch='x86_64'):
        """{machine type: its canonical name} for every machine type QEMU
        offers; a canonical name maps to itself."""
        from nova_live_snapshot import domainxml
        root = domainxml.parse(self.get_connection().getCapabilities(),
                               'host capabilities')
        names = {}
        for guest in root.findall('guest'):
            if guest.findtext('arch[@name="%s"]/wordsize' % arch) is None:
                continue
            for m in guest.findall('arch/machine'):
                canonical = m.get('canonical') or m.text
                names[m.text] = canonical
                names[canonical] = canonical
        return names

    def machine_types(self, arch='x86_64'):
        """Every machine type (canonical names and aliases) QEMU offers."""
        return set(self.machine_aliases(arch))

    def cpu_models(self, virt_type='qemu', arch='x86_64'):
        """The guest CPU models this host runs: its host-model's, and every
        custom model libvirt calls usable for ``virt_type`` (``[libvirt]
        virt_type`` inside nova-compute)."""
        from nova_live_snapshot import domainxml
        with translate_errors('read the domain capabilities'):
            xml = self.get_connection().getDomainCapabilities(
                None, arch, None, virt_type, 0)
        root = domainxml.parse(xml, 'domain capabilities')
        models = {m.text for m in root.findall(
            "cpu/mode[@name='custom']/model") if m.get('usable') == 'yes'}
        host_model = root.findtext("cpu/mode[@name='host-model']/model")
        if host_model:
            models.add(host_model)
        return {m for m in models if m}

    # Domains -----------------------------------------------------------------

    def lookup(self, name_or_uuid):
        """:raises DomainNotFound:"""
        conn = self.get_connection()
        with translate_errors('look up domain', domain=name_or_uuid):
            if _is_uuid(name_or_uuid):
                dom = conn.lookupByUUIDString(name_or_uuid)
            else:
                dom = conn.lookupByName(name_or_uuid)
        return guest_mod.Guest(dom, self.qemu_run_dir())

    def find(self, name):
        """The domain called ``name``, or None."""
        try:
            return self.lookup(name)
        except exception.DomainNotFound:
            return None

    def network_active(self, name):
        """True when libvirt network ``name`` exists and is active."""
        with translate_errors('look up network %s' % name):
            try:
                return bool(self.get_connection().networkLookupByName(
                    name).isActive())
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return False
                raise

    def network_xml(self, name):
        """The live XML of libvirt network ``name``."""
        with translate_errors('read network %s' % name):
            return self.get_connection().networkLookupByName(name).XMLDesc(0)

    def dhcp_leased_addresses(self, network):
        """The IPv4 addresses dnsmasq holds leased on ``network`` now.

        A lease outlives the host entry it was served from (dnsmasq keeps
        it until it expires), and dnsmasq will not serve a configured
        address that another MAC's lease holds.
        """
        with translate_errors('read the DHCP leases of network %s' % network):
            leases = self.get_connection().networkLookupByName(
                network).DHCPLeases()
        return {lease['ipaddr'] for lease in leases
                if lease.get('type') == libvirt.VIR_IP_ADDR_TYPE_IPV4}

    def update_dhcp_host(self, network, host_xml, add=True):
        """Add (or delete) one ``<host>`` of the network's DHCP section,
        live and in its persistent definition; dnsmasq rereads its hosts.

        :raises HypervisorError: libvirt refused it (an entry with the same
            MAC, name or address exists, when adding; none matches, when
            deleting).
        """
        cmd = (libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST if add
               else libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE)
        flags = (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                 | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        with translate_errors('%s a DHCP host of network %s' % (
                'add' if add else 'delete', network)):
            self.get_connection().networkLookupByName(network).update(
                cmd, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml,
                flags)

    def domain_names(self):
        with translate_errors('list domains'):
            return {d.name() for d in self.get_connection().listAllDomains()}

    def active_guests(self):
        """The running (or paused) domains, as Guests."""
        with translate_errors('list active domains'):
            run_dir = self.qemu_run_dir()
            return [guest_mod.Guest(d, run_dir) for d in
                    self.get_connection().listAllDomains(
                        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]

    def create(self, xml, paused=False):
        """Start a transient domain from ``xml``."""
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        with translate_errors('create domain'):
            return guest_mod.Guest(self.get_connection().createXML(xml, flags),
                                   self.qemu_run_dir())

    def define(self, xml):
        """Make a (running or not) domain persistent with ``xml``."""
        with translate_errors('define domain'):
            return guest_mod.Guest(self.get_connection().defineXML(xml),
                                   self.qemu_run_dir())

    def restore(self, path, paused=False):
        """Restore a domain from a save image (a file or a FIFO).

        The header's XML is used as it is: the engine writes its own header
        for clones rather than passing a replacement XML, because libvirt
        refuses a replacement whose name or UUID differs from the header's.
        """
        flags = (libvirt.VIR_DOMAIN_SAVE_PAUSED if paused
                 else libvirt.VIR_DOMAIN_SAVE_RUNNING)
        with translate_errors('restore domain from %s' % path):
            self.get_connection().restoreFlags(path, None, flags)

    def restore_with_xml(self, path, xml):
        """Restore ``path`` with ``xml`` replacing its embedded XML (only
        host-side paths may differ; libvirt checks the ABI)."""
        with translate_errors('restore domain from %s' % path):
            self.get_connection().restoreFlags(
                path, xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)

    def save_image_xml(self, path):
        with translate_errors('read save image %s' % path):
            return self.get_connection().saveImageGetXMLDesc(
                path, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)

    @contextlib.contextmanager
    def pause_window(self, guest):
        """Record QEMU's STOP and RESUME events for ``guest`` in the block.

        The timestamps are QEMU's own (from the QMP events), so libvirt's and
        our event latency does not inflate the measured pause.
        """
        window = PauseWindow()
        done = threading.Event()

        def on_event(conn, dom, event, seconds, micros, details, opaque):
            stamp = seconds + micros / 1e6
            if event == 'STOP' and window.stopped_at is None:
                window.stopped_at = stamp
            elif event == 'RESUME' and window.stopped_at is not None:
                window.resumed_at = stamp
                done.set()

        conn = self.get_connection()
        ids = []
        with translate_errors('register QMP event callbacks'):
            for name in ('STOP', 'RESUME'):
                ids.append(libvirt_qemu.qemuMonitorEventRegister(
                    conn, guest.domain, name, on_event, None, 0))
        try:
            yield window
            # The RESUME event may be delivered just after the API returned.
            if window.stopped_at is not None:
                done.wait(5)
        finally:
            for cb in ids:
                with contextlib.suppress(libvirt.libvirtError):
                    libvirt_qemu.qemuMonitorEventDeregister(conn, cb)
