from tests.nova import base  # noqa: F401,I100 (before anything from Nova)

# The ``createLiveImage`` action and live-image spawns through Nova's
# services, on Nova's fake libvirt.
#
# Nova's API (with or without the ``live_snapshot`` paste filter), conductor,
# scheduler and nova-compute run in-process on Nova's fixtures; compute hosts
# run ``livesnapshot.LiveSnapshotDriver`` or the stock ``LibvirtDriver`` over
# Nova's fake libvirt. The fake hypervisor has no save, restore or live
# snapshot, so these tests cover what happens around them: the API's answers,
# the switch that keeps the action off by default, the failure path of a
# capture, and the refusals of a spawn before anything is built.

import uuid

from nova.compute import task_states
from nova import context as nova_context
from nova import objects
from nova import policy as nova_policy

from nova_live_snapshot.api import filter as api_filter
from nova_live_snapshot.compute import manager
from nova_live_snapshot import conf as nls_conf
from nova_live_snapshot import policies
from nova_live_snapshot import protocol
from tests.nova.functional import base as functional_base

NO_SUCH_ACTION = 'There is no such action: %s' % api_filter.ACTION


def _message(response):
    """The message of a Nova error response body ({kind: {message}})."""
    (error,) = response.body.values()
    return error['message']


class _ActionTestBase(functional_base.FakeLibvirtTestBase):
    """One compute host running the live snapshot driver, one ACTIVE
    server on it."""

    def setUp(self):
        super().setUp()
        self.compute, self.domains = self.start_host('compute1')
        self.server = self._create_server(networks='none')

    def assertRefused(self, status, server_id=None, body=None, api=None):
        """POST createLiveImage (``body`` if given), expect ``status``; no
        Glance image may appear. Returns the error message."""
        before = self.glance_ids()
        server_id = server_id or self.server['id']
        if body is None:
            response = self.create_live_image(
                server_id, api=api, check_response_status=(status,))
        else:
            response = (api or self.api).api_post(
                '/servers/%s/action' % server_id, body,
                check_response_status=(status,))
        self.assertEqual(status, response.status)
        self.assertEqual(before, self.glance_ids())
        return _message(response)


class DisabledByDefaultTest(_ActionTestBase):
    """``[live_snapshot] enabled`` left at its shipped default (off)."""

    ENABLED = False

    def live_snapshot_options(self):
        options = super().live_snapshot_options()
        # Not set at all: the shipped default is what is under test.
        del options['enabled']
        return options

    def test_disabled_filter_answers_exactly_as_stock_nova(self):
        """With the switch at its default, createLiveImage on an ACTIVE
        server gets Nova's own 400 "no such action": the same status and
        body as Nova's API without our filter gives for the same request.
        Nothing happens to the server: no image, no task state, no
        instance action."""
        self.assertFalse(nls_conf.CONF.live_snapshot.enabled)
        before = self.glance_ids()
        ours = self.create_live_image(self.server['id'],
                                      check_response_status=(400,))
        stock = self.useFixture(functional_base.StockAPIFixture(self.api))
        theirs = self.create_live_image(self.server['id'], api=stock.api,
                                        check_response_status=(400,))

        self.assertEqual(400, ours.status)
        self.assertEqual(NO_SUCH_ACTION, _message(ours))
        self.assertEqual((theirs.status, theirs.body),
                         (ours.status, ours.body))
        self.assertEqual(before, self.glance_ids())
        server = self.api.get_server(self.server['id'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])
        self.assertEqual(['create'], [
            a['action'] for a in self.api.get_instance_actions(
                self.server['id'])])


class EnabledRefusalsTest(_ActionTestBase):
    """``[live_snapshot] enabled = true``: requests refused before any
    work starts."""

    def test_other_actions_reach_nova_untouched(self):
        """With the filter enabled, an action it does not serve gets the
        same answer as from Nova without the filter, and a real Nova action
        (stop) still works through it."""
        body = {'noSuchThing': {}}
        ours = self.api.api_post('/servers/%s/action' % self.server['id'],
                                 body, check_response_status=(400,))
        stock = self.useFixture(functional_base.StockAPIFixture(self.api))
        theirs = stock.api.api_post(
            '/servers/%s/action' % self.server['id'], body,
            check_response_status=(400,))
        self.assertEqual((theirs.status, theirs.body),
                         (ours.status, ours.body))
        self.assertEqual('There is no such action: noSuchThing',
                         _message(ours))

        self._stop_server(self.server)   # waits for SHUTOFF

    def test_schema_errors_name_the_problem(self):
        """A body without a name, with an unknown key, or with metadata in
        the reserved ``live_snapshot_`` or ``trait:`` namespaces is refused
        with 400 naming what is wrong; nothing is created."""
        cases = [
            ({'createLiveImage': {}}, "'name' is a required property"),
            ({'createLiveImage': {'name': 'golden', 'colour': 'blue'}},
             "'colour' was unexpected"),
            ({'createLiveImage': {'name': 'golden', 'metadata': {
                'live_snapshot_x': 'forged'}}},
             "'live_snapshot_x' does not match any of the regexes"),
            ({'createLiveImage': {'name': 'golden', 'metadata': {
                'trait:%s' % protocol.TRAIT: 'required'}}},
             "'trait:%s' does not match any of the regexes" % protocol.TRAIT),
        ]
        for body, expected in cases:
            with self.subTest(body=body):
                message = self.assertRefused(400, body=body)
                self.assertIn(expected, message)
        # The server was never touched.
        server = self.api.get_server(self.server['id'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])

    def test_unknown_server_is_404(self):
        """A server id that does not exist gets 404 naming it."""
        missing = str(uuid.uuid4())
        message = self.assertRefused(404, server_id=missing)
        self.assertIn(missing, message)

    def test_policy_denial_is_403(self):
        """The rule ``live_snapshot:servers:create_live_image`` guards the
        action: with the new policy defaults enforced, its default denies a
        reader exactly where Nova's own createImage rule does, and an
        operator's "!" denies a member; no denial creates an image or moves
        the server out of its state."""
        # Placement's fixture turns the new defaults off for the whole
        # process; a deployment of Nova 34 has them on.
        self.flags(enforce_new_defaults=True, group='oslo_policy')
        nova_policy.reset()
        nova_policy.init(suppress_deprecation_warnings=True)
        reader = self.api_fixture.reader_api
        reader.microversion = self.microversion
        nova_says = reader.api_post(
            '/servers/%s/action' % self.server['id'],
            {'createImage': {'name': 'plain'}}, check_response_status=(403,))
        self.assertEqual(403, nova_says.status)
        message = self.assertRefused(403, api=reader)
        self.assertIn(policies.CREATE, message)

        # The project's members pass the default ...
        member = nova_context.RequestContext(
            self.api.auth_user, self.api.project_id, roles=self.api.roles)
        target = {'project_id': self.api.project_id,
                  'user_id': self.api.auth_user}
        self.assertTrue(member.can(policies.CREATE, target=target,
                                   fatal=False))
        # ... until an operator closes the action.
        self.policy.set_rules({policies.CREATE: '!'}, overwrite=False)
        message = self.assertRefused(403)
        self.assertIn(policies.CREATE, message)
        server = self.api.get_server(self.server['id'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])
        self.assertEqual(['create'], [
            a['action'] for a in self.api.get_instance_actions(
                self.server['id'])])

    def test_server_busy_with_another_task_is_409(self):
        """A server in another task state gets 409 naming that state, and
        keeps its task state; no image is created."""
        instance = self.instance(self.server['id'])
        instance.task_state = task_states.REBOOTING
        instance.save()

        message = self.assertRefused(409)
        self.assertIn(task_states.REBOOTING, message)
        self.assertEqual(task_states.REBOOTING,
                         self.instance(self.server['id']).task_state)

    def test_stopped_server_is_409(self):
        """A stopped server has no memory to capture: 409 saying so."""
        self._stop_server(self.server)
        message = self.assertRefused(409)
        self.assertIn('stopped', message)
        self.assertIn('ACTIVE', message)

    def test_plain_libvirt_host_is_409_naming_the_trait(self):
        """A server on a host running the stock LibvirtDriver (whose
        provider lacks CUSTOM_LIVE_SNAPSHOT) gets 409 naming the trait;
        its task state stays None and no Glance image is left."""
        # The server of setUp is on a live snapshot host: its provider has
        # the trait, which is what the refusal below looks at.
        self.assertIn(protocol.TRAIT, self._get_provider_traits(
            self.compute_rp_uuids['compute1']))
        self.start_host('plain', driver='libvirt.LibvirtDriver')
        self.assertNotIn(protocol.TRAIT, self._get_provider_traits(
            self.compute_rp_uuids['plain']))
        # Requesting a host takes an administrator; the server is the
        # project's all the same.
        server = self._create_server(networks='none', host='plain')
        self.assertEqual('plain', self.admin_api.get_server(
            server['id'])['OS-EXT-SRV-ATTR:host'])

        message = self.assertRefused(409, server_id=server['id'])
        self.assertIn(protocol.TRAIT, message)
        server = self.api.get_server(server['id'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])
        self.assertEqual('ACTIVE', server['status'])


class CaptureFailureTest(_ActionTestBase):
    """A capture accepted by the API that fails on the host (the fake
    hypervisor cannot capture anything)."""

    def test_failed_capture_cleans_up_and_reports(self):
        """The API answers 202 with a queued image's id; when the capture
        fails on the host, that image is deleted, the server is ACTIVE with
        no task state and a fault recorded, the instance action
        createLiveImage has event compute_create_live_image in Error, and
        instance.snapshot.start (naming the image) then
        instance.snapshot.error were emitted. The server can be captured
        again afterwards."""
        before = self.glance_ids()
        response = self.create_live_image(self.server['id'])
        self.assertEqual(202, response.status)
        image_id = response.body['image_id']
        self.assertNotIn(image_id, before)

        # The event is finished last, after the cleanup and notifications.
        (event,) = functional_base.wait_until(
            lambda: self._finished_events(), 'the capture to fail')
        self.assertEqual('Error', event['result'])
        self.assertEqual(before, self.glance_ids())
        server = self.api.get_server(self.server['id'])
        self.assertEqual('ACTIVE', server['status'])
        self.assertIsNone(server['OS-EXT-STS:task_state'])
        faults = objects.InstanceFaultList.get_by_instance_uuids(
            nova_context.get_admin_context(), [self.server['id']])
        self.assertEqual(1, len(faults))

        notes = [n for n in self.notifier.versioned_notifications
                 if n['event_type'].startswith('instance.snapshot.')]
        self.assertEqual(['instance.snapshot.start', 'instance.snapshot.error'],
                         [n['event_type'] for n in notes])
        start = notes[0]['payload']['nova_object.data']
        self.assertEqual(image_id, start['snapshot_image_id'])
        error = notes[1]['payload']['nova_object.data']
        self.assertEqual(self.server['id'], error['uuid'])
        self.assertIsNotNone(error['fault'])

        # Not stuck: a new request is accepted, and fails the same way.
        again = self.create_live_image(self.server['id']).body['image_id']
        self.assertNotEqual(image_id, again)
        functional_base.wait_until(lambda: len(self._finished_events()) == 2,
                                   'the second capture to fail')
        self.assertEqual(before, self.glance_ids())
        self.assertIsNone(self.instance(self.server['id']).task_state)

    def _finished_events(self):
        """The finished compute_create_live_image events, one per
        createLiveImage action."""
        return [e for e in self.action_events(
            self.server['id'], api_filter.INSTANCE_ACTION, manager.EVENT)
            if e['result']]


class SpawnRefusalTest(functional_base.FakeLibvirtTestBase):
    """Booting from a live image that this host must not restore: the
    build fails before anything is created for the instance."""

    MIB = 512

    def setUp(self):
        super().setUp()
        self.compute, self.domains = self.start_host('compute1')
        self.flavor = self._create_flavor(memory_mb=self.MIB, vcpu=1,
                                          disk=1, ephemeral=0)
        self.project = self.api.project_id

    def _boot(self, image_id, flavor=None):
        server = self.api.post_server({'server': self._build_server(
            image_uuid=image_id, flavor_id=flavor or self.flavor,
            networks='none')})
        return self._wait_for_state_change(server, 'ERROR')

    def assertRefusedBeforeBuild(self, server, reason):
        self.assertIn(reason, server['fault']['message'])
        self.assertNotIn(server['id'], self.domains.uuids)
        self.assertNotIn(server['id'], self.domains.current_uuids())

    def test_the_domain_log_sees_an_ordinary_boot(self):
        """Control for the refusals: an ordinary boot on the same host
        defines a domain, and the test sees it."""
        server = self._create_server(networks='none', flavor_id=self.flavor)
        self.assertIn(server['id'], self.domains.uuids)
        self.assertIn(server['id'], self.domains.current_uuids())

    def test_image_of_another_project(self):
        """A live image signed for another project fails the build with a
        fault saying whose it is."""
        image = self.create_signed_image('someone-else', self.MIB, 1)
        server = self._boot(image)
        self.assertRefusedBeforeBuild(server,
                                      'belongs to project someone-else')

    def test_flavor_of_another_size(self):
        """A flavor with other RAM than the source had fails the build
        with a fault stating the image's RAM."""
        image = self.create_signed_image(self.project, self.MIB, 1)
        bigger = self._create_flavor(memory_mb=2 * self.MIB, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._boot(image, flavor=bigger)
        self.assertRefusedBeforeBuild(server, '%d MiB RAM' % self.MIB)

    def test_property_changed_after_signing(self):
        """A record property changed after signing (here the vCPU count)
        fails the build: the signature does not match."""
        image = self.create_signed_image(
            self.project, self.MIB, 1,
            changes={protocol.PREFIX + 'vcpus': '2'})
        server = self._boot(image)
        self.assertRefusedBeforeBuild(server, 'signature does not match')

    def test_unsigned_image(self):
        """A live image without a signature fails the build saying so."""
        image = self.create_signed_image(self.project, self.MIB, 1,
                                         remove=[protocol.SIGNATURE_PROPERTY])
        server = self._boot(image)
        self.assertRefusedBeforeBuild(server, 'carries no signature')

    def test_memory_image_gone_from_glance(self):
        """A signed live image whose hidden memory image no longer exists
        (deleted with plain ``openstack image delete``) fails the build on
        the first host with a fault saying so, instead of a reschedule to
        every host ending in "Exceeded maximum number of retries"."""
        host = self.compute.driver.live.host
        image = self.create_signed_image(
            self.project, self.MIB, 1, record_fields={
                'machine': sorted(set(host.machine_aliases().values()))[0],
                'qemu_version': host.qemu_version()})
        server = self._boot(image)
        self.assertRefusedBeforeBuild(server, 'cannot be read from Glance')
        self.assertNotIn('retries', server['fault']['message'])
