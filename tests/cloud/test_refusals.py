"""What users meet when the feature is off, and the errors an operator
will be asked about, each with a clear message on the instance or in the
CLI, and nothing left behind. On the busybox guest (seconds to boot)."""

import os

import openstack
import pytest

from tests.cloud.conftest import busybox_and_its_live_image
from tests.cloud.conftest import CLIError
from tests.cloud.conftest import CLOUDS_YAML
from tests.cloud.conftest import delete_server_and_image


@pytest.fixture(scope='module')
def captured(demo, compute):
    """A running busybox server and a live image of it (demo's)."""
    server, image = busybox_and_its_live_image(demo, compute, 'refusal')
    yield server, image
    delete_server_and_image(demo, server, image)


def _sdk(cloud):
    os.environ['OS_CLIENT_CONFIG_FILE'] = CLOUDS_YAML
    return openstack.connect(cloud=cloud)


def _action(conn, server_id, body):
    response = conn.compute.post('/servers/%s/action' % server_id, json=body,
                                 microversion='2.90', raise_exc=False)
    return response.status_code, response.json()


def test_feature_off_the_action_is_unknown_exactly_as_in_stock_nova(
        demo, demo_default, captured):
    """Through the nova-api whose configuration leaves the feature at its
    default, createLiveImage is an unknown action: the same 400 and body as
    any other unknown action, from the CLI and from the API."""
    server, _ = captured
    default = _sdk('nls-demo-default')
    ours = _action(default, server['id'], {'createLiveImage': {'name': 'x'}})
    unknown = _action(default, server['id'], {'noSuchAction': {'name': 'x'}})
    assert ours[0] == unknown[0] == 400
    assert ours[1] == {'badRequest': {
        'code': 400, 'message': 'There is no such action: createLiveImage'}}
    assert unknown[1]['badRequest']['message'] == (
        'There is no such action: noSuchAction')
    # The nova-api with the feature on answers other unknown actions the
    # same way: the filter only adds its own.
    assert _action(_sdk('nls-demo'), server['id'],
                   {'noSuchAction': {'name': 'x'}}) == unknown

    err = demo_default.fails('server', 'live-image', 'create', server['id'],
                             '--name', 'never')
    # The client plugin turns Nova's 400 into what the user can do about it.
    assert 'nova-api does not know the createLiveImage action' in err, err
    assert 'set [live_snapshot] enabled = true' in err, err
    assert not demo('image', 'list', '--name', 'never')
    # Everything else works as usual through that API.
    assert demo_default.server(server['id'])['status'] == 'ACTIVE'


def _refused(cli, compute, name, image, flavor):
    """Boot ``image`` as ``name``; the build must fail. Its fault message,
    once the server is gone again with no domain left."""
    try:
        cli('server', 'create', '--image', image, '--flavor', flavor,
            '--network', cli.network, '--wait', name, parse=False)
    except CLIError:
        pass
    server = cli.wait_server(name, 'ERROR')
    message = server['fault']['message']
    instance_name = compute.admin.server(server['id'])[
        'OS-EXT-SRV-ATTR:instance_name']
    assert instance_name not in compute.domain_names()
    assert server['id'] not in compute.files(compute.instances)
    cli('server', 'delete', '--wait', server['id'], parse=False)
    return message


def test_a_flavor_with_other_ram_is_refused(demo, compute, captured):
    _, image = captured
    message = _refused(demo, compute, 'wrong-ram', image['id'], 'nls.medium')
    assert 'captured from an instance with 128 MiB RAM' in message, message
    assert 'flavor nls.medium has 768 MiB' in message, message


def test_another_projects_live_image_is_refused_even_when_shared(
        demo, alt, compute, captured):
    _, image = captured
    alt_project = alt('token', 'issue')['project_id']
    demo('image', 'set', '--shared', image['id'], parse=False)
    demo('image', 'add', 'project', image['id'], alt_project, parse=False)
    alt('image', 'set', '--accept', image['id'], parse=False)
    message = _refused(alt, compute, 'other-project', image['id'], 'nls.tiny')
    assert 'it cannot be restored in project %s' % alt_project in message, \
        message


def test_a_tampered_live_image_is_refused(demo, admin, compute, captured):
    """An administrator (or anyone who can write image properties) raising
    the recorded RAM to match a bigger flavor: the signature no longer
    matches and nothing is restored."""
    _, image = captured
    admin('image', 'set', '--property', 'live_snapshot_memory_mib=768',
          image['id'], parse=False)
    message = _refused(demo, compute, 'tampered', image['id'], 'nls.medium')
    assert 'signature does not match' in message, message


def test_capturing_a_stopped_server_is_refused_with_409(demo, captured):
    server, _ = captured
    demo('server', 'stop', server['id'], parse=False)
    demo.wait_server(server['id'], 'SHUTOFF')
    err = demo.fails('server', 'live-image', 'create', server['id'],
                     '--name', 'stopped')
    assert 'while it is stopped: only a running (ACTIVE) server has memory ' \
        'to capture' in err, err
    status, body = _action(_sdk('nls-demo'), server['id'],
                           {'createLiveImage': {'name': 'stopped'}})
    assert status == 409, body
    assert 'while it is stopped' in body['conflictingRequest']['message']
    assert not demo('image', 'list', '--name', 'stopped')
