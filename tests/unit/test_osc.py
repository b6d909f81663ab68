"""The ``openstack server live-image`` plugin, through the real SDK stack.

The commands run on a real openstacksdk connection whose HTTP transport is
:class:`FakeCloud`, a small in-memory Nova and Glance that answer as the REST
contract (``doc/source/api-ref.rst``) and the compute service say. So each
test asserts the requests that would go on the wire and what the user sees,
and nothing stands in for the SDK's own handling of URLs, query strings,
paging and errors.
"""

import argparse
import configparser
import http.client
import importlib
import io
import json
import logging
import os
import re
import types
import urllib.parse
import uuid

from cliff import app as cliff_app
from cliff import commandmanager
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import openstack.connection
from osc_lib import exceptions
import pytest
import requests

from nova_live_snapshot.osc import client
from nova_live_snapshot.osc import plugin
from nova_live_snapshot.osc.v1 import live_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
NOVA = 'http://nova.test/v2.1'
GLANCE = 'http://glance.test/v2'
PROJECT = 'b5e7c0a9d3f14c2e8a1d6f0e9c8b7a65'

COMMANDS = {
    'server live-image create': live_image.CreateLiveImage,
    'server live-image list': live_image.ListLiveImage,
    'server live-image show': live_image.ShowLiveImage,
    'server live-image delete': live_image.DeleteLiveImage,
}


class FakeCloud(requests.adapters.BaseAdapter):
    """An in-memory Nova and Glance behind a ``requests`` transport.

    * ``calls``: ``(method, url, query, json body)`` of every API request,
      version discovery left out.
    * ``capture``: the steps the next capture goes through, one per ``GET``
      of its image, in the compute service's order
      (:mod:`nova_live_snapshot.protocol`): ``queued``, ``signed`` (memory
      image made, the signed record and the trait set while the image is
      still queued), ``saving``, ``active`` (disk data uploaded: complete),
      ``killed``, and ``None``, the compute service deleting the image and
      its memory image (a failed capture). ``uploaded`` (``active`` with no
      record) is no step of this compute service: it stands for an image
      some other writer made active, which a client must not take for a
      complete capture.
    * ``enabled`` / ``policy_allows``: the operator's switch and the policy.
    * ``page_size``: Glance's page length, small so that listing pages.
    """

    def __init__(self):
        super().__init__()
        self.calls = []
        self.servers = {}
        self.images = {}
        self.enabled = True
        self.policy_allows = True
        self.capture = ['queued', 'signed', 'saving', 'active']
        self.page_size = 2
        self._capturing = {}
        self._serial = 0

    # -- the cloud's state ----------------------------------------------

    def add_server(self, name, status='ACTIVE'):
        server_id = str(uuid.uuid4())
        self.servers[server_id] = {'id': server_id, 'name': name,
                                   'status': status, 'tenant_id': PROJECT}
        return server_id

    def add_image(self, name, status='active', hidden=False, protected=False,
                  **properties):
        self._serial += 1
        image_id = str(uuid.uuid4())
        stamp = f'2026-11-26T08:{self._serial:02d}:00Z'
        self.images[image_id] = {
            'id': image_id, 'name': name, 'status': status,
            'visibility': 'private', 'os_hidden': hidden,
            'protected': protected, 'owner': PROJECT, 'size': 4096,
            'created_at': stamp, 'updated_at': stamp, 'tags': [],
            'disk_format': 'qcow2', 'container_format': 'bare',
            'min_disk': 0, 'min_ram': 0, 'self': f'/v2/images/{image_id}',
            'file': f'/v2/images/{image_id}/file',
            'schema': '/v2/schemas/image', **properties}
        return image_id

    def add_live_image(self, name, server_id, status='active', **properties):
        """A complete live image, disk and memory, as the compute service
        leaves it; returns both IDs."""
        disk_id = self.add_image(name, status=status, **properties)
        memory_id = self._add_memory_image(disk_id)
        self.images[disk_id].update(self._record(disk_id, memory_id,
                                                 server_id))
        return disk_id, memory_id

    def _add_memory_image(self, disk_id):
        name = self.images[disk_id]['name']
        return self.add_image(f'{name} (memory state)', hidden=True,
                              live_snapshot_role='memory',
                              live_snapshot_disk_image=disk_id)

    @staticmethod
    def _record(disk_id, memory_id, server_id):
        return {
            'trait:CUSTOM_LIVE_SNAPSHOT': 'required',
            'live_snapshot_format': '1',
            'live_snapshot_project_id': PROJECT,
            'live_snapshot_memory_image': memory_id,
            'live_snapshot_memory_sha256': 'ab' * 32,
            'live_snapshot_memory_size': '2147483648',
            'live_snapshot_disk_hash': 'sha512:' + 'cd' * 64,
            'live_snapshot_memory_mib': '2048',
            'live_snapshot_vcpus': '2',
            'live_snapshot_machine': 'pc-q35-8.2',
            'live_snapshot_cpu_model': 'Icelake-Server',
            'live_snapshot_qemu_version': '8.2.2',
            'live_snapshot_source_instance': server_id,
            'live_snapshot_created_at': '2026-11-26T07:59:58.120+00:00',
            'live_snapshot_signature': 'hmac-sha256:' + 'ef' * 32,
        }

    def requests_to(self, method, url_pattern):
        return [c for c in self.calls
                if c[0] == method and re.fullmatch(url_pattern, c[1])]

    # -- the transport -------------------------------------------------

    def send(self, request, **kwargs):
        url = urllib.parse.urlsplit(request.url)
        path = url.path.rstrip('/')
        if path in ('/v2.1', '/v2'):
            return self._respond(request, 200, _discovery(url.hostname))
        query = dict(urllib.parse.parse_qsl(url.query))
        body = json.loads(request.body) if request.body else None
        self.calls.append((request.method, f'{url.scheme}://{url.hostname}{path}',
                           query, body))
        if url.hostname == 'nova.test':
            return self._respond(request, *self._nova(request.method, path,
                                                      query, body))
        return self._respond(request, *self._glance(request.method, path,
                                                    query))

    def close(self):
        pass

    def _respond(self, request, status, payload=None, content_type=None):
        response = requests.Response()
        response.status_code = status
        response.reason = http.client.responses[status]
        response.request = request
        response.url = request.url
        if isinstance(payload, str):
            response._content = payload.encode()
            response.headers['Content-Type'] = content_type
        elif payload is not None:
            response._content = json.dumps(payload).encode()
            response.headers['Content-Type'] = 'application/json'
        else:
            response._content = b''
        return response

    # -- Nova -------------------------------------------------------------

    def _nova(self, method, path, query, body):
        if method == 'GET' and path == '/v2.1/servers/detail':
            return 200, {'servers': [s for s in self.servers.values()
                                     if s['name'] == query.get('name')]}
        m = re.fullmatch(r'/v2\.1/servers/([^/]+)(/action)?', path)
        if not m:
            return _nova_error(404, 'itemNotFound', 'Not found')
        server = self.servers.get(m[1])
        if method == 'POST' and m[2]:
            return self._action(m[1], server, body)
        if method == 'GET' and not m[2] and server:
            return 200, {'server': server}
        return _nova_error(404, 'itemNotFound',
                           f'Instance {m[1]} could not be found.')

    def _action(self, server_id, server, body):
        if not self.enabled or 'createLiveImage' not in body:
            return _nova_error(400, 'badRequest',
                               f'There is no such action: {next(iter(body))}')
        if server is None:
            return _nova_error(404, 'itemNotFound',
                               f'Instance {server_id} could not be found.')
        if not self.policy_allows:
            return _nova_error(
                403, 'forbidden', "Policy doesn't allow "
                "live_snapshot:servers:create_live_image to be performed.")
        args = body['createLiveImage']
        if (set(args) - {'name', 'metadata'}
                or not 1 <= len(args.get('name', '')) <= 255):
            return _nova_error(400, 'badRequest',
                               'Invalid input for field/attribute '
                               'createLiveImage.')
        if server['status'] != 'ACTIVE':
            return _nova_error(
                409, 'conflictingRequest',
                f"Cannot create a live image of server {server_id} while it "
                f"is {server['status'].lower()}: only a running (ACTIVE) "
                f"server has memory to capture.")
        # As nova-api does: a queued image with the user's metadata, Nova's
        # snapshot properties and the record's format (a live image from
        # the start); the rest of the record comes with the capture.
        disk_id = self.add_image(args['name'], status='queued',
                                 image_type='snapshot',
                                 instance_uuid=server_id,
                                 live_snapshot_format='1',
                                 **args.get('metadata', {}))
        self._capturing[disk_id] = (server_id, list(self.capture))
        return 202, {'image_id': disk_id}

    # -- Glance -----------------------------------------------------------

    def _glance(self, method, path, query):
        if method == 'GET' and path == '/v2/images':
            return self._list(query)
        m = re.fullmatch(r'/v2/images/([^/]+)', path)
        image = self.images.get(m[1]) if m else None
        if image is not None and method == 'GET':
            image = self._advance_capture(image)
        if image is None:
            return (404, '<html><body><h1>404 Not Found</h1>No image found '
                         'with ID</body></html>', 'text/html; charset=UTF-8')
        if method == 'GET':
            return 200, _public(image)
        if method == 'DELETE':
            if image['protected']:
                return (403, '<html><body><h1>403 Forbidden</h1>Image is '
                             'protected</body></html>', 'text/html')
            del self.images[image['id']]
            return (204,)
        return (405,)

    def _advance_capture(self, image):
        server_id, steps = self._capturing.get(image['id'], (None, None))
        if not steps:
            return image
        step = steps.pop(0)
        memory_id = image.get('live_snapshot_memory_image',
                              image.get('_memory_id'))
        if step is None:
            del self.images[image['id']]
            self.images.pop(memory_id, None)
            return None
        if step == 'signed':
            image.update(self._record(
                image['id'], self._add_memory_image(image['id']), server_id))
        elif step == 'uploaded':
            image['_memory_id'] = self._add_memory_image(image['id'])
            image.update({'status': 'active',
                          'trait:CUSTOM_LIVE_SNAPSHOT': 'required'})
        else:
            image['status'] = step
        return image

    def _list(self, query):
        paging = {'limit', 'marker', 'sort_key', 'sort_dir', 'sort'}
        filters = {k: v for k, v in query.items() if k not in paging}
        hidden = filters.pop('os_hidden', 'false') == 'true'
        matches = [i for i in sorted(self.images.values(),
                                     key=lambda i: i['created_at'],
                                     reverse=True)
                   if i['os_hidden'] == hidden
                   and all(str(i.get(k)) == v for k, v in filters.items())]
        if 'marker' in query:
            ids = [i['id'] for i in matches]
            matches = matches[ids.index(query['marker']) + 1:]
        limit = min(int(query.get('limit', self.page_size)), self.page_size)
        page = {'images': [_public(i) for i in matches[:limit]],
                'first': '/v2/images',
                'schema': '/v2/schemas/images'}
        if len(matches) > limit:
            following = {k: v for k, v in query.items() if k != 'marker'}
            following['marker'] = matches[limit - 1]['id']
            page['next'] = '/v2/images?' + urllib.parse.urlencode(following)
        return 200, page


def _public(image):
    """An image as Glance shows it, without the fake's bookkeeping."""
    return {k: v for k, v in image.items() if not k.startswith('_')}


def _discovery(host):
    if host == 'nova.test':
        return {'version': {'id': 'v2.1', 'status': 'CURRENT',
                            'version': '2.96', 'min_version': '2.1',
                            'links': [{'rel': 'self', 'href': NOVA + '/'}]}}
    return {'versions': [{'id': 'v2.16', 'status': 'CURRENT',
                          'links': [{'rel': 'self', 'href': GLANCE + '/'}]}]}


def _nova_error(status, key, message):
    return status, {key: {'code': status, 'message': message}}


class FakeClock:
    """A monotonic clock that moves only when slept on."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert len(self.sleeps) < 1000, 'a wait that never ends'
        self.sleeps.append(seconds)
        self.now += seconds


class App(cliff_app.App):
    """The cliff application OpenStackClient is, with only these commands
    and the client already made (OpenStackClient authenticates first)."""

    def __init__(self, live_client):
        manager = commandmanager.CommandManager('nova_live_snapshot.tests')
        for name, command_class in COMMANDS.items():
            manager.add_command(name, command_class)
        super().__init__(description='test', version='0',
                         command_manager=manager, stdin=io.StringIO(),
                         stdout=io.StringIO(), stderr=io.StringIO())
        self.client_manager = types.SimpleNamespace(live_snapshot=live_client)

    def configure_logging(self):
        # cliff adds a root handler per run; pytest's caplog sees the logs.
        pass


def sdk_connection(cloud):
    http_session = requests.Session()
    http_session.mount('http://', cloud)
    session = ks_session.Session(auth=noauth.NoAuth(), session=http_session)
    return openstack.connection.Connection(
        session=session, compute_endpoint_override=NOVA,
        image_endpoint_override=GLANCE)


@pytest.fixture
def cloud():
    return FakeCloud()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def app(cloud, clock):
    return App(client.LiveImageClient(sdk_connection(cloud), clock=clock,
                                      sleep=clock.sleep))


def run(app, name, *argv):
    """Parse *argv* as the command *name* does and run it; its result."""
    command = COMMANDS[name](app, None, cmd_name=name)
    parsed = command.get_parser(f'openstack {name}').parse_args(list(argv))
    return command.take_action(parsed)


def as_dict(result):
    columns, values = result
    return dict(zip(columns, values))


# -- the plugin ---------------------------------------------------------------


def test_plugin_module_has_what_openstackclient_loads():
    assert plugin.API_NAME == 'live_snapshot'
    assert plugin.API_VERSION_OPTION == 'os_live_snapshot_api_version'
    assert plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS


def test_global_option_defaults_to_the_command_group_version(monkeypatch):
    monkeypatch.delenv('OS_LIVE_SNAPSHOT_API_VERSION', raising=False)
    parser = plugin.build_option_parser(argparse.ArgumentParser())
    assert parser.parse_args([]).os_live_snapshot_api_version == '1'
    args = parser.parse_args(['--os-live-snapshot-api-version', '2'])
    assert args.os_live_snapshot_api_version == '2'
    monkeypatch.setenv('OS_LIVE_SNAPSHOT_API_VERSION', '3')
    parser = plugin.build_option_parser(argparse.ArgumentParser())
    assert parser.parse_args([]).os_live_snapshot_api_version == '3'


def test_make_client_works_on_openstackclients_sdk_connection(cloud):
    server_id = cloud.add_server('web-1')
    disk_id, _ = cloud.add_live_image('golden', server_id)
    live = plugin.make_client(
        types.SimpleNamespace(sdk_connection=sdk_connection(cloud)))
    assert [i.id for i in live.list()] == [disk_id]


def test_setup_cfg_installs_the_commands_under_server_live_image():
    """setup.cfg names the plugin module and every command class; cliff turns
    the entry point names into the words users type."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, 'setup.cfg'))
    entry_points = cfg['entry_points']

    def parse(group):
        lines = entry_points.get(group, '').strip().splitlines()
        return dict(tuple(part.strip() for part in line.split('=', 1))
                    for line in lines)

    extensions = parse('openstack.cli.extension')
    assert extensions.get(plugin.API_NAME) == 'nova_live_snapshot.osc.plugin'
    group = f'openstack.{plugin.API_NAME}.v{plugin.DEFAULT_API_VERSION}'
    installed = {}
    for name, target in parse(group).items():
        module, attr = target.split(':')
        installed[name.replace('_', ' ')] = getattr(
            importlib.import_module(module), attr)
    assert installed == COMMANDS


def test_help_is_the_docstring(app):
    assert app.run(['help', 'server', 'live-image', 'create']) == 0
    assert ('Capture a running server, memory and disk, into a live image.'
            in app.stdout.getvalue())


# -- create -------------------------------------------------------------------


def test_create_posts_the_action_and_shows_the_new_image(app, cloud):
    server_id = cloud.add_server('web-1')
    result = run(app, 'server live-image create', 'web-1', '--name', 'golden',
                 '--property', 'app=shop', '--property', 'tier=web')

    posts = cloud.requests_to('POST', r'http://nova\.test/.*')
    assert posts == [
        ('POST', f'{NOVA}/servers/{server_id}/action', {},
         {'createLiveImage': {'name': 'golden',
                              'metadata': {'app': 'shop', 'tier': 'web'}}})]
    (image_id,) = [i['id'] for i in cloud.images.values()
                   if i['name'] == 'golden']
    assert result == (('id', 'name', 'status', 'source_server'),
                      (image_id, 'golden', 'queued', server_id))


def test_create_without_property_sends_no_metadata(app, cloud):
    server_id = cloud.add_server('web-1')
    run(app, 'server live-image create', server_id, '--name', 'golden')
    (post,) = cloud.requests_to('POST', r'.*')
    assert post[3] == {'createLiveImage': {'name': 'golden'}}


def test_create_needs_a_name(app):
    with pytest.raises(SystemExit):
        run(app, 'server live-image create', 'web-1')


def test_create_refuses_properties_the_compute_service_sets(app, cloud):
    cloud.add_server('web-1')
    with pytest.raises(exceptions.CommandError,
                       match='live_snapshot_memory_image'):
        run(app, 'server live-image create', 'web-1', '--name', 'golden',
            '--property', 'live_snapshot_memory_image=someone-elses')
    assert cloud.requests_to('POST', r'.*') == []


def test_create_of_an_unknown_server(app, cloud):
    with pytest.raises(exceptions.CommandError,
                       match="No server with a name or ID of 'web-9' exists"):
        run(app, 'server live-image create', 'web-9', '--name', 'golden')
    assert cloud.requests_to('POST', r'.*') == []


@pytest.mark.parametrize('setup, expected', [
    (lambda c: setattr(c, 'enabled', False),
     r'does not serve live images.*\[live_snapshot\] enabled = true'),
    (lambda c: setattr(c, 'policy_allows', False),
     r'Policy does not allow you .*create_live_image'),
    (lambda c: [s.update(status='SHUTOFF') for s in c.servers.values()],
     r'while it is shutoff: only a running \(ACTIVE\) server has memory '
     r'to capture\. The server must be ACTIVE'),
], ids=['feature-off', 'policy', 'not-active'])
def test_create_refused_by_nova_says_why_and_what_to_do(
        app, cloud, setup, expected):
    cloud.add_server('web-1')
    setup(cloud)
    with pytest.raises(exceptions.CommandError, match=expected):
        run(app, 'server live-image create', 'web-1', '--name', 'golden')
    assert not any(i['name'] == 'golden' for i in cloud.images.values())


def test_create_wait_polls_until_the_capture_is_complete(app, cloud, clock):
    """The record is signed while the image is still queued, and the
    capture is complete only once the disk is uploaded too (active):
    --wait waits for both."""
    server_id = cloud.add_server('web-1')
    cloud.capture = ['queued', 'signed', 'saving', 'active']
    info = as_dict(run(app, 'server live-image create', 'web-1', '--name',
                       'golden', '--wait'))
    assert info['status'] == 'active'
    assert info['source_server'] == server_id
    image_gets = cloud.requests_to('GET', f'{GLANCE}/images/{info["id"]}')
    assert len(image_gets) == 4
    assert clock.sleeps == [5, 5, 5]
    assert 'live_snapshot_signature' in cloud.images[info['id']]


@pytest.mark.parametrize('script, why', [
    (['queued', 'saving', None], 'the compute service deleted the image'),
    (['signed', 'saving', None], 'the compute service deleted the image'),
    (['signed', 'saving', 'killed'], 'the image is killed'),
], ids=['deleted', 'deleted-after-signing', 'killed'])
def test_create_wait_fails_when_the_capture_fails(app, cloud, script, why):
    server_id = cloud.add_server('web-1')
    cloud.capture = script
    with pytest.raises(exceptions.CommandError) as e:
        run(app, 'server live-image create', 'web-1', '--name', 'golden',
            '--wait')
    assert why in str(e.value)
    assert f'openstack server event list {server_id}' in str(e.value)


def test_create_wait_gives_up_at_the_timeout(app, cloud, clock):
    cloud.add_server('web-1')
    cloud.capture = ['saving'] * 100
    with pytest.raises(exceptions.CommandError,
                       match=r'still saving after 12 seconds; the capture may '
                             r'still be running'):
        run(app, 'server live-image create', 'web-1', '--name', 'golden',
            '--wait', '--wait-timeout', '12')
    assert clock.sleeps == [5, 5, 2]


def test_create_wait_timeout_says_when_only_the_signature_is_missing(
        app, cloud, clock):
    """An active image without a record is not complete, whoever made it
    so."""
    cloud.add_server('web-1')
    cloud.capture = ['uploaded']
    with pytest.raises(exceptions.CommandError,
                       match='still active but not signed yet after 7 seconds'):
        run(app, 'server live-image create', 'web-1', '--name', 'golden',
            '--wait', '--wait-timeout', '7')


def test_create_without_wait_reports_a_capture_that_already_failed(app, cloud):
    server_id = cloud.add_server('web-1')
    cloud.capture = [None]
    with pytest.raises(exceptions.CommandError,
                       match=f'openstack server event list {server_id}'):
        run(app, 'server live-image create', 'web-1', '--name', 'golden')


# -- list ---------------------------------------------------------------------


def test_list_asks_glance_for_live_images_only(app, cloud):
    server_id = cloud.add_server('web-1')
    cloud.add_image('debian-13')
    older, older_memory = cloud.add_live_image('golden', server_id)
    cloud.add_image('ubuntu-24.04')
    newer, _ = cloud.add_live_image('warm', server_id, status='saving')
    newest, _ = cloud.add_live_image('warm-2', server_id)

    columns, rows = run(app, 'server live-image list')
    rows = list(rows)

    assert columns == ('ID', 'Name', 'Status', 'Source server', 'Memory MiB',
                       'vCPUs', 'Created')
    assert [r[0] for r in rows] == [newest, newer, older]
    assert rows[2] == (older, 'golden', 'active', server_id, 2048, 2,
                       '2026-11-26T07:59:58.120+00:00')
    pages = cloud.requests_to('GET', f'{GLANCE}/images')
    assert len(pages) == 2, 'three live images at two a page'
    assert all(q.get('live_snapshot_format') == '1' for _, _, q, _ in pages)
    assert older_memory not in [r[0] for r in rows]


def test_list_long_adds_the_memory_image_and_what_restores_need(app, cloud):
    server_id = cloud.add_server('web-1')
    disk_id, memory_id = cloud.add_live_image('golden', server_id)
    columns, rows = run(app, 'server live-image list', '--long')
    assert columns[7:] == ('Memory image', 'Machine', 'QEMU version', 'Format',
                           'Visibility')
    assert list(rows)[0][7:] == (memory_id, 'pc-q35-8.2', '8.2.2', '1',
                                 'private')


def test_list_as_json_through_cliff(app, cloud):
    server_id = cloud.add_server('web-1')
    disk_id, _ = cloud.add_live_image('golden', server_id)
    assert app.run(['server', 'live-image', 'list', '-f', 'json']) == 0
    assert json.loads(app.stdout.getvalue()) == [{
        'ID': disk_id, 'Name': 'golden', 'Status': 'active',
        'Source server': server_id, 'Memory MiB': 2048, 'vCPUs': 2,
        'Created': '2026-11-26T07:59:58.120+00:00'}]


# -- show ---------------------------------------------------------------------


def test_show_gives_the_image_and_its_live_properties(app, cloud):
    server_id = cloud.add_server('web-1')
    disk_id, memory_id = cloud.add_live_image('golden', server_id,
                                              app='shop')
    info = as_dict(run(app, 'server live-image show', 'golden'))
    assert {k: info[k] for k in (
        'id', 'name', 'status', 'source_server', 'memory_image',
        'memory_image_status', 'memory_mib', 'memory_size', 'vcpus',
        'machine', 'cpu_model', 'qemu_version', 'captured_at', 'format',
        'owner')} == {
        'id': disk_id, 'name': 'golden', 'status': 'active',
        'source_server': server_id, 'memory_image': memory_id,
        'memory_image_status': 'active', 'memory_mib': 2048,
        'memory_size': 2147483648, 'vcpus': 2, 'machine': 'pc-q35-8.2',
        'cpu_model': 'Icelake-Server', 'qemu_version': '8.2.2',
        'captured_at': '2026-11-26T07:59:58.120+00:00', 'format': '1',
        'owner': PROJECT}
    assert info['signature'].startswith('hmac-sha256:')
    assert info['properties'].machine_readable() == {
        'app': 'shop', 'trait:CUSTOM_LIVE_SNAPSHOT': 'required'}


def test_show_says_when_the_memory_image_is_gone(app, cloud):
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    del cloud.images[memory_id]
    info = as_dict(run(app, 'server live-image show', disk_id))
    assert info['memory_image_status'] == 'missing'


def test_show_refuses_an_image_that_is_not_a_live_image(app, cloud):
    plain = cloud.add_image('debian-13')
    with pytest.raises(exceptions.CommandError,
                       match=f'Image {plain} .* is not a live image'):
        run(app, 'server live-image show', plain)


def test_show_refuses_the_memory_image_and_says_where_its_live_image_is(
        app, cloud):
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    with pytest.raises(exceptions.CommandError,
                       match=f'holds the memory state of a live image; .* '
                             f'Its live image is {disk_id}'):
        run(app, 'server live-image show', memory_id)


def test_show_of_a_capture_in_progress_shows_it_unsigned(app, cloud):
    """nova-api marks the image as a live image when it creates it, so a
    capture in progress is found by ID and by name, shown with its status
    and no signature yet (the compute side's order, protocol.py)."""
    cloud.add_server('web-1')
    cloud.capture = ['queued', 'saving', 'saving', 'saving']
    image_id = as_dict(run(app, 'server live-image create', 'web-1',
                           '--name', 'golden'))['id']
    by_id = as_dict(run(app, 'server live-image show', image_id))
    assert by_id['status'] == 'saving'
    assert by_id['signature'] is None
    assert by_id['memory_image'] is None
    assert by_id['format'] == '1'
    by_name = as_dict(run(app, 'server live-image show', 'golden'))
    assert by_name['id'] == image_id
    assert by_name['status'] == 'saving'
    listed = list(run(app, 'server live-image list')[1])
    assert [row[0] for row in listed] == [image_id]


def test_an_image_without_the_format_property_is_no_live_image(app, cloud):
    """Whatever its status: nova-api sets the format when it creates a
    live image, so an image without it is some other image."""
    plain = cloud.add_image('golden', status='queued')
    with pytest.raises(exceptions.CommandError,
                       match=f"Image {plain} .* is not a live image: it has "
                             f"no live_snapshot_format property. Use "
                             f"'openstack image' commands for it.$"):
        run(app, 'server live-image show', plain)
    with pytest.raises(exceptions.CommandError,
                       match="No live image with a name or ID of 'golden' "
                             "exists.$"):
        run(app, 'server live-image show', 'golden')


def test_names_match_live_images_only(app, cloud):
    cloud.add_image('golden')
    disk_id, _ = cloud.add_live_image('golden', 'a-server')
    assert as_dict(run(app, 'server live-image show', 'golden'))['id'] == disk_id
    (lookup,) = [q for _, _, q, _ in cloud.requests_to('GET', f'{GLANCE}/images')
                 if 'name' in q]
    assert lookup == {'name': 'golden', 'live_snapshot_format': '1'}


def test_a_name_two_live_images_share_is_refused(app, cloud):
    cloud.add_live_image('golden', 'a-server')
    cloud.add_live_image('golden', 'a-server')
    with pytest.raises(exceptions.CommandError,
                       match="More than one live image is named 'golden'"):
        run(app, 'server live-image show', 'golden')


def test_a_failed_command_exits_1_and_logs_why(app, cloud, caplog):
    plain = cloud.add_image('debian-13')
    with caplog.at_level(logging.ERROR):
        assert app.run(['server', 'live-image', 'show', plain]) == 1
    assert 'is not a live image' in caplog.text


# -- delete -------------------------------------------------------------------


def test_delete_removes_the_memory_image_then_the_disk_image(app, cloud):
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    other, _ = cloud.add_live_image('warm', 'a-server')
    run(app, 'server live-image delete', 'golden')
    assert [c[1] for c in cloud.requests_to('DELETE', r'.*')] == [
        f'{GLANCE}/images/{memory_id}', f'{GLANCE}/images/{disk_id}']
    assert disk_id not in cloud.images and memory_id not in cloud.images
    assert other in cloud.images


def test_delete_refuses_what_is_not_a_live_image_and_goes_on(app, cloud,
                                                             caplog):
    plain = cloud.add_image('debian-13')
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    with pytest.raises(exceptions.CommandError,
                       match='Failed to delete 2 of 3 live images'):
        run(app, 'server live-image delete', plain, 'no-such-image', 'golden')
    assert plain in cloud.images
    assert disk_id not in cloud.images and memory_id not in cloud.images
    assert f"Failed to delete live image '{plain}'" in caplog.text
    assert "No live image with a name or ID of 'no-such-image'" in caplog.text


def test_delete_when_the_memory_image_is_already_gone(app, cloud):
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    del cloud.images[memory_id]
    run(app, 'server live-image delete', disk_id)
    assert disk_id not in cloud.images


@pytest.mark.parametrize('impostor', ['plain', 'another-live-images'])
def test_delete_touches_nothing_when_the_memory_image_is_not_its_own(
        app, cloud, impostor):
    """A user may edit the disk image's properties: a memory image pointer
    to an image that is not this live image's memory deletes nothing."""
    disk_id, memory_id = cloud.add_live_image('golden', 'a-server')
    if impostor == 'plain':
        victim = cloud.add_image('debian-13')
    else:
        _, victim = cloud.add_live_image('warm', 'a-server')
    cloud.images[disk_id]['live_snapshot_memory_image'] = victim
    with pytest.raises(exceptions.CommandError, match='Failed to delete 1 of 1'):
        run(app, 'server live-image delete', 'golden')
    assert cloud.requests_to('DELETE', r'.*') == []
    assert {victim, disk_id, memory_id} <= set(cloud.images)


def test_delete_reports_glance_refusing(app, cloud, caplog):
    disk_id, _ = cloud.add_live_image('golden', 'a-server')
    cloud.images[disk_id]['protected'] = True
    with pytest.raises(exceptions.CommandError, match='Failed to delete 1 of 1'):
        run(app, 'server live-image delete', 'golden')
    assert f'Glance refused to delete disk image {disk_id} (HTTP 403)' in \
        caplog.text
    assert disk_id in cloud.images
