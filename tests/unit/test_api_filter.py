"""The API filter in front of a stand-in for the rest of nova-api's
pipeline: what it passes on untouched, and the misplaced-filter and
bad-microversion answers it gives before it would touch Nova (the answers
it gives through Nova itself are in tests/nova/functional)."""

import json

import pytest
import webob

from nova_live_snapshot.api import filter as api_filter
from nova_live_snapshot import conf as nls_conf

BODY = json.dumps({'createLiveImage': {'name': 'golden'}}).encode()
# As the filter sees it: the URL map has taken /v2.1 off.
PATH = '/servers/7e2c8f7c-0c4e-4c3d-9a55-0e1f8f1b2a33/action'


class Downstream:
    """Stands for the rest of the pipeline: records what reached it."""

    def __init__(self):
        self.seen = []

    @webob.dec.wsgify
    def __call__(self, req):
        self.seen.append(req.path_info)
        return webob.Response(status=418)


@pytest.fixture
def enabled():
    nls_conf.CONF.set_override('enabled', True, group='live_snapshot')
    yield
    nls_conf.CONF.clear_override('enabled', group='live_snapshot')


def _post(app, body=BODY, headers=None):
    req = webob.Request.blank(PATH, method='POST', body=body,
                              headers=headers or {})
    req.content_type = 'application/json'
    return req.get_response(app)


def test_disabled_filter_passes_the_action_on():
    downstream = Downstream()
    assert _post(api_filter.LiveImageFilter(downstream)).status_int == 418
    assert downstream.seen == [PATH]


def test_other_actions_pass_on(enabled):
    downstream = Downstream()
    app = api_filter.LiveImageFilter(downstream)
    assert _post(app, json.dumps({'os-stop': None}).encode()
                 ).status_int == 418


def test_filter_before_keystonecontext_says_where_it_belongs(enabled):
    """No nova.context in the request: the filter sits before
    keystonecontext in api-paste.ini. A 500 naming the fix, nothing passed
    on, the microversion headers Nova's faults carry."""
    downstream = Downstream()
    response = _post(api_filter.LiveImageFilter(downstream),
                     headers={'OpenStack-API-Version': 'compute 2.74'})
    assert response.status_int == 500
    message = response.json['computeFault']['message']
    assert 'must come after keystonecontext' in message
    assert response.headers['OpenStack-API-Version'] == 'compute 2.74'
    assert response.headers['X-OpenStack-Nova-API-Version'] == '2.74'
    assert downstream.seen == []


@pytest.mark.parametrize('version, status', [
    ('compute 2.x', 400), ('compute 9.99', 406)])
def test_bad_microversion_is_refused_as_nova_refuses_it(
        enabled, version, status):
    downstream = Downstream()
    response = _post(api_filter.LiveImageFilter(downstream),
                     headers={'OpenStack-API-Version': version})
    assert response.status_int == status
    assert downstream.seen == []
