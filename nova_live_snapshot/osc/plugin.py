"""OpenStackClient plugin for live images.

OpenStackClient finds this module through the ``openstack.cli.extension``
entry point and loads the commands of the ``openstack.live_snapshot.v1``
group; they reach Nova and Glance through
``client_manager.live_snapshot``, the :class:`~.client.LiveImageClient` that
:func:`make_client` builds on OpenStackClient's own SDK connection, so they
share its authentication, region and endpoint settings.
"""

import logging

from osc_lib import utils

from nova_live_snapshot.osc import client

LOG = logging.getLogger(__name__)

API_NAME = 'live_snapshot'
API_VERSION_OPTION = 'os_live_snapshot_api_version'
DEFAULT_API_VERSION = '1'
# The version of this plugin's command group, not a REST microversion: the
# createLiveImage action and Glance's images API are unversioned here.
API_VERSIONS = ('1',)


def make_client(instance):
    """The client of ``client_manager.live_snapshot``."""
    LOG.debug('Live image client on SDK connection %s', instance.sdk_connection)
    return client.LiveImageClient(instance.sdk_connection)


def build_option_parser(parser):
    """Add the plugin's global option (the command group version)."""
    parser.add_argument(
        '--os-live-snapshot-api-version',
        metavar='<live-snapshot-api-version>',
        default=utils.env('OS_LIVE_SNAPSHOT_API_VERSION',
                          default=DEFAULT_API_VERSION),
        help=f'Live snapshot command version, default={DEFAULT_API_VERSION} '
             f'(Env: OS_LIVE_SNAPSHOT_API_VERSION)')
    return parser
