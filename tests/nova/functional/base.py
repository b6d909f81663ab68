"""Nova in-process with the live snapshot driver and API filter, on Nova's
fake libvirt.

:class:`FakeLibvirtTestBase` is :class:`tests.nova.base.LiveSnapshotTestBase`
(our paste filter in the API pipeline, ``[live_snapshot]`` options, Glance
keeping data and hashes) combined with Nova's own
:class:`nova.tests.functional.libvirt.base.ServersTestBase` (the fake
libvirt module, a mocked ``_create_image``, ``Host.get_connection``
returning one fake connection per compute host). The fake hypervisor can
define, start and stop domains but has no save, restore or live snapshot:
captures fail on it (it has not even ``lookupByName``), and spawns of
live images must refuse before they would need one.

Import :mod:`tests.nova.base` before this module (and before anything else
from Nova).
"""

from tests.nova import base  # noqa: I100 (Nova's test package first)

import dataclasses
import hashlib
import io
import uuid

import fixtures
from nova.api import wsgi as nova_wsgi
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client as api_client
from nova.tests.functional.libvirt import base as libvirt_base
from wsgi_intercept import interceptor

from nova_live_snapshot import protocol
from nova_live_snapshot.virt import images
from nova_live_snapshot import waiting

__all__ = ['FakeLibvirtTestBase', 'DomainLog', 'StockAPIFixture',
           'wait_until', 'signed_record']

#: How long a condition in these tests may take to come true: everything
#: runs in-process on fakes, so anything close to this is a hang.
DEADLINE = 20.0
_POLL = 0.05


def wait_until(predicate, what, timeout=DEADLINE):
    """Poll ``predicate()`` until it returns something true, and return it.

    :param what: what is awaited, for the failure message.
    :raises AssertionError: not true within ``timeout`` seconds; the message
        shows the last value seen.
    """
    seen = []

    def check():
        seen[:] = [predicate()]
        return seen[0]
    try:
        return waiting.wait_for(check, timeout, interval=_POLL, what=what)
    except TimeoutError:
        raise AssertionError('Timed out after %.0f s waiting for %s '
                             '(last value: %r)' % (timeout, what, seen[0]))


class DomainLog:
    """Every domain a fake libvirt connection was asked to define or create,
    by name and UUID, whatever happened to it afterwards (Nova destroys and
    undefines what a failed build left, so the connection's current domains
    alone cannot show that none was ever made)."""

    def __init__(self, connection):
        self.connection = connection
        self.names = []
        self.uuids = []
        for method in ('defineXML', 'createXML', 'createXMLWithFiles'):
            original = getattr(connection, method, None)
            if original is not None:
                setattr(connection, method, self._recording(original))

    def _recording(self, original):
        def record(*args, **kwargs):
            dom = original(*args, **kwargs)
            self.names.append(dom.name())
            self.uuids.append(dom.UUIDString())
            return dom
        return record

    def current_uuids(self):
        """UUIDs of the domains the connection has now, running or not."""
        # The fake lists nothing unless asked for active or inactive ones.
        flags = (fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE |
                 fakelibvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
        return {dom.UUIDString()
                for dom in self.connection.listAllDomains(flags)}


class StockAPIFixture(fixtures.Fixture):
    """Nova's API as it ships (its own api-paste.ini, without our filter),
    in the same cloud as the test's API: ``self.api`` is a client of it with
    the same user, project and roles as the test's ``api``.

    :param like: the test's API client to mimic.
    """

    HOST = 'stock-osapi.test'

    def __init__(self, like):
        super().__init__()
        self.like = like

    def _setUp(self):
        app = nova_wsgi.Loader(base.nova_paste_ini()).load_app(
            'osapi_compute')
        endpoint = 'http://%s:80/' % self.HOST
        intercept = interceptor.RequestsInterceptor(lambda: app,
                                                    url=endpoint)
        intercept.install_intercept()
        self.addCleanup(intercept.uninstall_intercept)
        self.api = api_client.TestOpenStackClient(
            self.like.auth_user, 'http://%s:80/v2.1' % self.HOST,
            project_id=self.like.project_id, roles=self.like.roles)
        self.api.microversion = self.like.microversion


def signed_record(image_id, project_id, memory_mib, vcpus, disk_data):
    """A live-image record for Glance image ``image_id`` whose disk data is
    ``disk_data``, as a capturing compute host would sign it (the memory
    image it names does not exist: these tests never get that far)."""
    return images.Record(
        format=protocol.FORMAT, disk_image=image_id, project_id=project_id,
        memory_image=str(uuid.uuid4()),
        memory_sha256=hashlib.sha256(b'memory').hexdigest(),
        memory_size=str(64 * 1024 * 1024),
        disk_hash='%s:%s' % (protocol.DISK_HASH,
                             hashlib.new(protocol.DISK_HASH,
                                         disk_data).hexdigest()),
        memory_mib=str(memory_mib), vcpus=str(vcpus),
        machine='pc-q35-8.2', cpu_model='', qemu_version='8.2.2',
        source_instance=str(uuid.uuid4()),
        created_at='2025-01-01T00:00:00Z')


class FakeLibvirtTestBase(base.LiveSnapshotTestBase,
                          libvirt_base.ServersTestBase):
    """Nova with the live snapshot driver and API filter on fake libvirt.

    No compute host is started by ``setUp``: a test (or subclass) starts
    them with :meth:`start_host`, choosing each host's driver.
    """

    def start_host(self, hostname, driver=base.DRIVER):
        """Start nova-compute ``hostname`` running ``driver`` on a fresh
        fake libvirt connection.

        :returns: (compute service, :class:`DomainLog` of its connection)
        """
        self.flags(compute_driver=driver)
        self.start_compute(hostname)
        compute = self.computes[hostname]
        if getattr(compute.driver, '_live', None) is not None:
            # init_host built the driver's live snapshot operations around
            # Nova's connection getter while that was still the test base's
            # process-wide mock; ServersTestBase only then gives this host
            # its own fake connection. Built again on first use, they use
            # that one, as nova-compute's single connection in production.
            compute.driver._live = None
        return compute, DomainLog(compute.driver._host.get_connection())

    # Views the API does not give a project member ----------------------

    @staticmethod
    def instance(server_id):
        """The server's instance object, from the cell database."""
        return objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), server_id)

    def glance_ids(self):
        """Ids of every image the Glance fixture holds now."""
        return set(self.glance.images)

    def action_events(self, server_id, action, event):
        """Event ``event`` of each of the server's instance actions named
        ``action`` that has one, newest action first (as an administrator
        sees them)."""
        found = []
        for act in self.admin_api.get_instance_actions(server_id):
            if act['action'] != action:
                continue
            details = self.admin_api.get_instance_action_details(
                server_id, act['request_id'])
            found.extend(e for e in details.get('events', [])
                         if e['event'] == event)
        return found

    def create_signed_image(self, project_id, memory_mib, vcpus,
                            changes=None, remove=(), record_fields=None):
        """A live image in the Glance fixture as a compute host of this
        cloud would publish it: disk data, Glance's hash of it, the signed
        record, the trait requirement; then ``changes`` set and ``remove``
        deleted among its properties, after signing. ``record_fields``
        replace fields of the record before it is signed.

        :returns: the image's Glance id
        """
        image_id = str(uuid.uuid4())
        data = ('frozen disk of %s' % image_id).encode()
        record = dataclasses.replace(
            signed_record(image_id, project_id, memory_mib, vcpus, data),
            **(record_fields or {}))
        properties = record.properties(base.SIGNING_KEY)
        properties['trait:%s' % protocol.TRAIT] = 'required'
        properties.update(changes or {})
        for name in remove:
            del properties[name]
        self.glance.create(None, {
            'id': image_id, 'name': 'live-%s' % image_id[:8],
            'disk_format': 'qcow2', 'container_format': 'bare',
            'visibility': 'public', 'min_ram': memory_mib,
            'properties': properties}, data=io.BytesIO(data))
        return image_id
