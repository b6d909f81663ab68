"""Client side of the live snapshot compute RPC API.

The endpoint (:mod:`nova_live_snapshot.compute.manager`) rides nova-compute's
own topic in a namespace of its own, so Nova's compute RPC API and its
version negotiation are untouched: a compute host without the extension
simply has no endpoint in this namespace, and a cast to it is dropped with
a warning in its log (the API only casts to hosts whose driver reports the
``CUSTOM_LIVE_SNAPSHOT`` trait).
"""

import oslo_messaging as messaging

from nova.compute import rpcapi as compute_rpcapi
from nova.objects import base as objects_base
from nova import rpc

__all__ = ['NAMESPACE', 'LiveSnapshotAPI']

NAMESPACE = 'live_snapshot'


class LiveSnapshotAPI:
    """Client side of the live snapshot compute RPC API.

    API version history:

    * 1.0 - Initial version: ``create_live_image(instance, image_id)``
    """

    VERSION = '1.0'

    def __init__(self):
        target = messaging.Target(topic=compute_rpcapi.RPC_TOPIC,
                                  namespace=NAMESPACE, version=self.VERSION)
        self.client = rpc.get_client(
            target, serializer=objects_base.NovaObjectSerializer())

    def create_live_image(self, ctxt, instance, image_id):
        """Capture ``instance`` into the queued Glance image ``image_id`` on
        its host. A cast: the API has already put the instance in
        ``image_snapshot_pending``; progress shows in its task state, the
        image's status and the instance action."""
        cctxt = self.client.prepare(server=instance.host, version='1.0')
        cctxt.cast(ctxt, 'create_live_image', instance=instance,
                   image_id=image_id)
