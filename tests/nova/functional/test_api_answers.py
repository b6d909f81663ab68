from tests.nova import base  # noqa: F401,I100 (before anything from Nova)

# What the createLiveImage answers look like next to Nova's own answers, and
# the API reference's samples checked against them.
#
# A client that works with Nova's API expects the same headers on every
# answer (request ids, the microversion and Vary), and the API reference's
# request and response samples (api-ref/source/samples) must be what the
# API really takes and gives: these tests send the committed request sample
# and compare the answer with the committed response sample.

import json
import os
import re

from oslo_serialization import jsonutils

from nova_live_snapshot.api import filter as api_filter
from nova_live_snapshot.compute import manager
from tests.nova.functional import base as functional_base
from tests.nova.functional import test_api

SAMPLES = os.path.join(os.path.dirname(__file__), '..', '..', '..',
                       'api-ref', 'source', 'samples')
UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                  r'[0-9a-f]{12}$')
# Headers whose values differ between any two answers.
PER_ANSWER = {'x-openstack-request-id', 'x-compute-request-id',
              'content-length', 'date'}


def sample(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return json.load(f)


def _shape(value):
    """``value`` with every UUID string replaced by a placeholder: the shape
    a sample and a real answer must share."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, str) and UUID.match(value):
        return '<uuid>'
    return value


class AnswersTest(test_api._ActionTestBase):
    """createLiveImage answers carry Nova's headers and match the samples."""

    def _post(self, server_id, body, status):
        return self.api.api_request(
            '/servers/%s/action' % server_id, method='POST',
            body=jsonutils.dumps(body), check_response_status=(status,))

    def _wait_for_capture_to_end(self, count):
        """The fake hypervisor fails every capture: wait until ``count``
        have finished, so the test ends with nothing running."""
        functional_base.wait_until(
            lambda: len([e for e in self.action_events(
                self.server['id'], api_filter.INSTANCE_ACTION, manager.EVENT)
                if e['result']]) == count, 'the capture to end')

    def assertSameHeaders(self, nova, ours):
        """Same header names, and the same values but for those that differ
        between any two answers (request ids, length, date)."""
        def headers(response):
            return {k.lower(): v for k, v in response.headers.items()}
        nova, ours = headers(nova), headers(ours)
        self.assertEqual(sorted(nova), sorted(ours))
        self.assertEqual({k: v for k, v in nova.items()
                          if k not in PER_ANSWER},
                         {k: v for k, v in ours.items()
                          if k not in PER_ANSWER})
        for name in ('x-openstack-request-id', 'x-compute-request-id'):
            self.assertTrue(ours[name].startswith('req-'), ours)

    def test_accepted_answer_has_novas_headers_and_the_sample_shape(self):
        """The request sample is accepted (202); the answer has the same
        headers as Nova's 202 to createImage at the same microversion
        (OpenStack-API-Version, X-OpenStack-Nova-API-Version, Vary,
        request ids, content type) and the shape of the response
        sample."""
        nova = self._post(self.server['id'],
                          {'createImage': {'name': 'plain'}}, 202)
        # The fake hypervisor fails Nova's snapshot too; then the server is
        # free again.
        functional_base.wait_until(
            lambda: self.instance(self.server['id']).task_state is None,
            "Nova's snapshot to end")
        ours = self._post(self.server['id'],
                          sample('create-live-image-req.json'), 202)
        self._wait_for_capture_to_end(1)

        self.assertSameHeaders(nova, ours)
        self.assertEqual('compute %s' % self.microversion,
                         ours.headers['OpenStack-API-Version'])
        self.assertEqual(_shape(sample('create-live-image-resp.json')),
                         _shape(ours.json()))

    def test_refusal_has_novas_headers(self):
        """A refusal (404, unknown server) has the headers of Nova's 404 to
        createImage of the same server."""
        missing = '7e2c8f7c-0c4e-4c3d-9a55-0e1f8f1b2a33'
        nova = self._post(missing, {'createImage': {'name': 'plain'}}, 404)
        ours = self._post(missing, sample('create-live-image-req.json'), 404)
        self.assertSameHeaders(nova, ours)

    def test_capture_sends_novas_legacy_notifications(self):
        """Nova's default notification format is the legacy one: a capture
        sends compute.instance.snapshot.start with the instance's usage
        payload as Nova's snapshot does, and on failure the legacy
        exception notification Nova's wrap_exception sends (event type
        the RPC method, priority ERROR, the exception and the call's
        arguments); no snapshot.end for a capture that failed."""
        self.notifier.reset()
        response = self._post(self.server['id'],
                              {'createLiveImage': {'name': 'golden'}}, 202)
        image_id = response.json()['image_id']
        self._wait_for_capture_to_end(1)

        legacy = [n for n in self.notifier.notifications
                  if n.event_type.startswith('compute.instance.snapshot')
                  or n.event_type == 'create_live_image']
        self.assertEqual(['compute.instance.snapshot.start',
                          'create_live_image'],
                         [n.event_type for n in legacy])
        start, error = legacy
        self.assertEqual(('INFO', 'compute.compute1'),
                         (start.priority, start.publisher_id))
        self.assertEqual(self.server['id'], start.payload['instance_id'])
        self.assertEqual('ERROR', error.priority)
        self.assertEqual({'exception', 'args'}, set(error.payload))
        self.assertEqual(image_id, error.payload['args']['image_id'])
