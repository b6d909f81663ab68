"""Nova's own in-process services, with this project's driver and API filter.

:class:`LiveSnapshotTestBase` is Nova's integrated test base (API, conductor,
scheduler and compute in one process, on Nova's fixtures for the database,
RPC, placement, Neutron and Glance) configured as an operator deploys the
extension: ``compute_driver = livesnapshot.LiveSnapshotDriver`` loaded
through the wheel's ``nova/virt/livesnapshot`` re-export, the stock
``api-paste.ini`` with the ``live_snapshot`` filter after
``keystonecontext``, and ``[live_snapshot]`` options.

Import this module before anything else from Nova: Nova's functional test
package patches threading on import.
"""

import hashlib
import importlib.metadata
import os

import fixtures

from nova.tests.functional import integrated_helpers  # noqa: I202 (first)
from nova.tests import fixtures as nova_fixtures  # noqa: H306 (see above)

# Registers [live_snapshot] on Nova's CONF before the tests set its flags.
from nova_live_snapshot import conf  # noqa: F401

DRIVER = 'livesnapshot.LiveSnapshotDriver'
SIGNING_KEY = 'test-signing-key-' + 'x' * 32


def nova_paste_ini():
    """The api-paste.ini that ships in Nova's wheel."""
    for f in importlib.metadata.files('nova'):
        if f.name == 'api-paste.ini':
            return str(f.locate())
    raise RuntimeError('api-paste.ini not found in the nova distribution')


def paste_ini_with_filter(path):
    """Nova's api-paste.ini with the filter inserted as the operator guide
    (etc/api-paste.ini.snippet) says."""
    with open(nova_paste_ini()) as f:
        text = f.read()
    new = text.replace(' keystonecontext ', ' keystonecontext live_snapshot ')
    if new.count(' keystonecontext live_snapshot ') < 1:
        raise RuntimeError('no keystonecontext in Nova\'s v2.1 pipelines')
    new += ('\n[filter:live_snapshot]\npaste.filter_factory = '
            'nova_live_snapshot.api.filter:filter_factory\n')
    with open(path, 'w') as f:
        f.write(new)
    return path


class GlanceWithData(nova_fixtures.GlanceFixture):
    """Nova's Glance fixture, keeping what Glance keeps and the driver
    relies on: the data of an update, a ``queued`` image until data arrives,
    ``os_hidden``, and the ``os_hash_algo``/``os_hash_value`` pair Glance
    computes over stored data."""

    def _store(self, image_id, data):
        blob = data.read()
        self._imagedata[image_id] = blob
        image = self.images[image_id]
        image.update(size=len(blob), status='active',
                     os_hash_algo='sha512',
                     os_hash_value=hashlib.sha512(blob).hexdigest())

    def create(self, context, metadata, data=None):
        queued = data is None and 'status' not in metadata
        image = super().create(context, metadata)
        if data is not None:
            self._store(image['id'], data)
        elif queued:
            image['status'] = 'queued'
        return self.images[image['id']]

    def update(self, context, image_id, metadata, data=None,
               purge_props=False):
        image = super().update(context, image_id, metadata,
                               purge_props=purge_props)
        if data is not None:
            self._store(image_id, data)
        return image

    def data(self, image_id):
        return self._imagedata.get(image_id)


class LiveSnapshotTestBase(integrated_helpers._IntegratedTestBase):
    """Nova in-process with the live snapshot driver and API filter."""

    ADMIN_API = False
    microversion = '2.74'
    #: ``[live_snapshot] enabled`` for the API.
    ENABLED = True

    def setUp(self):
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.flags(api_paste_config=paste_ini_with_filter(
            os.path.join(self.tmp, 'api-paste.ini')), group='wsgi')
        self.flags(compute_driver=DRIVER)
        self.live_conf = self.live_snapshot_options()
        for name, value in self.live_conf.items():
            self.flags(group='live_snapshot', **{name: value})
        # Nova's Glance fixture, replaced before the services start.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.GlanceFixture', GlanceWithData))
        super().setUp()

    def live_snapshot_options(self):
        return {
            'enabled': self.ENABLED,
            'signing_key': SIGNING_KEY,
            'image_dir': os.path.join(self.tmp, 'images'),
            'memory_cache_dir': os.path.join(self.tmp, 'cache'),
            'staging_dir': os.path.join(self.tmp, 'staging'),
            'template_dir': os.path.join(self.tmp, 'templates'),
        }

    def _setup_compute_service(self):
        # Started by the tests, once the host is set up.
        return None

    def _stop_computes(self):
        for compute in getattr(self, 'computes', {}).values():
            compute.stop()

    # API helpers ---------------------------------------------------------

    def create_live_image(self, server_id, name='golden', metadata=None,
                          api=None, check_response_status=(202,)):
        body = {'createLiveImage': {'name': name}}
        if metadata is not None:
            body['createLiveImage']['metadata'] = metadata
        api = api or self.api
        return api.api_post('/servers/%s/action' % server_id, body,
                            check_response_status=check_response_status)
