from tests.nova import base  # noqa: I100

from tests.nova.functional import base as fbase


class Smoke(fbase.FakeLibvirtTestBase):
    def test_smoke(self):
        compute, log = self.start_host('compute1')
        server = self._create_server(networks='none')
        print(server['status'], log.names)
        before = fbase.time.monotonic()
        resp = self.create_live_image(server['id'])
        print(resp.status, resp.body, fbase.time.monotonic() - before)
        image_id = resp.body['image_id']
        fbase.wait_until(lambda: image_id not in self.glance.images, 'deleted')
        print(self.api.get_server(server['id'])['OS-EXT-STS:task_state'])
        print([n['event_type'] for n in self.notifier.versioned_notifications])
        from nova import objects, context
        faults = objects.InstanceFaultList.get_by_instance_uuids(context.get_admin_context(), [server['id']])
        for f in faults:
            print(f.code, f.message, f.details[:3000])
        notes = self.notifier.versioned_notifications
        print(notes[-1])
        print(self.api.get_instance_actions(server['id']))
