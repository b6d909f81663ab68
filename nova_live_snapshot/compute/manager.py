"""Compute side of the live snapshot RPC API.

:class:`LiveSnapshotEndpoint` is registered by the driver's ``init_host``
into nova-compute's ``additional_endpoints``. It follows Nova's own
``snapshot_instance``: the instance moves through Nova's image task states
(so Nova refuses other actions on it meanwhile, with 409), the work runs on
nova-compute's long-task executor, the instance action gets an event,
the notifications go out as for a snapshot in both of Nova's formats (the
legacy ``compute.instance.snapshot.start`` and ``.end``, Nova's default
format, and the versioned ``instance.snapshot.start`` and ``.end``; on
failure the legacy exception notification Nova's ``wrap_exception`` sends
and the versioned ``instance.snapshot.error``), a failure leaves a fault on
the instance and deletes the half-made image, and the task state is
cleared whatever happens.
"""

import sys
import threading

from oslo_log import log as logging
import oslo_messaging as messaging

from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova import conf as nova_conf
from nova import exception as nova_exception
from nova.objects import fields
from nova import rpc

from nova_live_snapshot.compute import long_task
from nova_live_snapshot.compute import rpcapi

LOG = logging.getLogger(__name__)

__all__ = ['LiveSnapshotEndpoint', 'EVENT']

CONF = nova_conf.CONF
# The instance action event name; the API records the action itself.
EVENT = 'compute_create_live_image'


class LiveSnapshotEndpoint:
    """The ``live_snapshot`` namespace on nova-compute's topic."""

    target = messaging.Target(namespace=rpcapi.NAMESPACE, version='1.0')

    def __init__(self, host, driver):
        self.host = host
        self.driver = driver
        limit = CONF.max_concurrent_snapshots
        # Nova's own limit on concurrent snapshots applies to these too.
        self._semaphore = (threading.BoundedSemaphore(limit) if limit > 0
                           else None)

    def create_live_image(self, context, instance, image_id):
        try:
            instance.task_state = task_states.IMAGE_SNAPSHOT
            instance.save(
                expected_task_state=task_states.IMAGE_SNAPSHOT_PENDING)
        except (nova_exception.InstanceNotFound,
                nova_exception.UnexpectedDeletingTaskStateError):
            LOG.debug('Instance gone or being deleted; no live image',
                      instance=instance)
            self._delete_image(context, instance, image_id)
            return
        long_task.spawn(self._create, context, instance, image_id)

    def _create(self, context, instance, image_id):
        # Runs on an executor: an exception would end in a future nobody
        # reads, so it is logged here.
        try:
            if self._semaphore is not None:
                with self._semaphore:
                    return self._create_locked(context, instance, image_id)
            return self._create_locked(context, instance, image_id)
        except Exception:
            LOG.exception('Live image %s of instance %s failed', image_id,
                          instance.uuid)

    @property
    def _notifier(self):
        # Looked up when used, as Nova's manager is built after rpc.init.
        return rpc.get_notifier('compute', self.host)

    def _notify_legacy(self, context, instance, event_suffix):
        compute_utils.notify_about_instance_usage(
            self._notifier, context, instance, event_suffix)

    def _create_locked(self, context, instance, image_id):
        with compute_utils.EventReporter(context, EVENT, self.host,
                                         instance.uuid):
            try:
                self._notify_legacy(context, instance, 'snapshot.start')
                compute_utils.notify_about_instance_snapshot(
                    context, instance, self.host,
                    phase=fields.NotificationPhase.START,
                    snapshot_image_id=image_id)

                def update_task_state(task_state,
                                      expected_state=task_states.IMAGE_SNAPSHOT):
                    instance.task_state = task_state
                    instance.save(expected_task_state=expected_state)

                self.driver.live_snapshot(context, instance, image_id,
                                          update_task_state)
                instance.task_state = None
                instance.save(expected_task_state=task_states.IMAGE_UPLOADING)
                self._notify_legacy(context, instance, 'snapshot.end')
                compute_utils.notify_about_instance_snapshot(
                    context, instance, self.host,
                    phase=fields.NotificationPhase.END,
                    snapshot_image_id=image_id)
            except Exception as e:
                exc_info = sys.exc_info()
                LOG.error('Live image %s failed: %s', image_id, e,
                          instance=instance)
                self._delete_image(context, instance, image_id)
                self._clear_task_state(instance)
                compute_utils.add_instance_fault_from_exc(
                    context, instance, e, exc_info)
                # Nova's legacy format has no snapshot.error: its
                # wrap_exception sends this one, named after the RPC method.
                self._notifier.error(context, 'create_live_image', {
                    'exception': e,
                    'args': {'instance': instance, 'image_id': image_id}})
                compute_utils.notify_about_instance_action(
                    context, instance, self.host,
                    action=fields.NotificationAction.SNAPSHOT,
                    phase=fields.NotificationPhase.ERROR, exception=e)
                raise

    def _delete_image(self, context, instance, image_id):
        compute_utils.delete_image(context, instance, self.driver._image_api,
                                   image_id, log_exc_info=True)

    @staticmethod
    def _clear_task_state(instance):
        try:
            instance.task_state = None
            instance.save()
        except nova_exception.InstanceNotFound:
            pass
