"""The ``createLiveImage`` server action, as a paste filter in nova-api.

Nova's routes are a fixed list: an out-of-tree project cannot add an action
to its servers controller. This filter sits in the v2.1 pipeline after
``keystonecontext`` and answers ``POST /servers/{id}/action`` whose body is
``{"createLiveImage": {...}}``; every other request, and this one too while
``[live_snapshot] enabled`` is false (the default), goes on to Nova
untouched, so with the default Nova answers exactly as without the
extension (400, unknown action).

The handler does what Nova's ``createImage`` does, with the capture cast to
the live snapshot endpoint: load the server, check the policy, validate the
body, create the queued Glance image, move the server to
``image_snapshot_pending`` (Nova then refuses other actions with 409),
record the instance action, cast, answer 202 with the image id.
"""

import re

from oslo_log import log as logging
from oslo_serialization import jsonutils
import webob
import webob.dec
import webob.exc

from nova.api.openstack import wsgi as nova_wsgi
from nova.api.validation import validators
from nova.compute import api as compute_api
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova import exception as nova_exception
from nova.image import glance
from nova import objects
from nova import policy as nova_policy
from nova.scheduler.client import report

from nova_live_snapshot.api import schemas
from nova_live_snapshot.compute import rpcapi
from nova_live_snapshot import conf as nls_conf
from nova_live_snapshot import policies
from nova_live_snapshot import protocol

LOG = logging.getLogger(__name__)

__all__ = ['ACTION', 'INSTANCE_ACTION', 'LiveImageFilter', 'filter_factory']

ACTION = protocol.ACTION
# The instance action users see in ``openstack server event list``.
INSTANCE_ACTION = 'createLiveImage'
# With or without the project id in the URL (Nova accepts both).
_PATH = re.compile(r'^(?:/[0-9a-zA-Z_-]+)?/servers/(?P<server>[^/]+)/action/?\Z')


def _fault(exc_class, message):
    return nova_wsgi.Fault(exc_class(explanation=message))


class LiveImageFilter:
    """WSGI filter serving ``createLiveImage`` when enabled."""

    def __init__(self, application):
        self.application = application
        self._validator = validators._SchemaValidator(
            schemas.create_live_image)
        self._compute = None
        self._rpc = None

    @staticmethod
    def _action_body(req):
        if req.method != 'POST' or not _PATH.match(req.path_info):
            return None
        req.make_body_seekable()
        try:
            body = jsonutils.loads(req.body)
        except ValueError:
            return None      # Nova answers malformed JSON its own way
        finally:
            req.body_file.seek(0)
        if isinstance(body, dict) and ACTION in body:
            return body
        return None

    @webob.dec.wsgify
    def __call__(self, req):
        if not nls_conf.CONF.live_snapshot.enabled:
            return self.application
        body = self._action_body(req)
        if body is None:
            return self.application
        server_id = _PATH.match(req.path_info).group('server')
        return self._create(req, server_id, body)

    def _services(self):
        if self._compute is None:
            self._compute = compute_api.API()
            self._rpc = rpcapi.LiveSnapshotAPI()
        return self._compute, self._rpc

    def _create(self, req, server_id, body):
        context = req.environ['nova.context']
        compute, rpc = self._services()
        try:
            instance = compute.get(context, server_id,
                                   expected_attrs=['system_metadata',
                                                   'flavor'])
        except nova_exception.InstanceNotFound as e:
            return _fault(webob.exc.HTTPNotFound, e.format_message())
        # Nova's enforcer, not get_enforcer(): that one re-parses the
        # configuration, as oslopolicy's command-line tools need.
        nova_policy.init()
        policies.register(nova_policy._ENFORCER)
        try:
            context.can(policies.CREATE,
                        target={'project_id': instance.project_id,
                                'user_id': instance.user_id})
        except nova_exception.PolicyNotAuthorized as e:
            return _fault(webob.exc.HTTPForbidden, e.format_message())
        try:
            self._validator.validate(body)
        except nova_exception.ValidationError as e:
            return _fault(webob.exc.HTTPBadRequest, e.format_message())
        args = body[ACTION]

        refusal = self._refusal(context, instance)
        if refusal:
            return _fault(*refusal)
        try:
            image_id = self._start(context, compute, rpc, instance,
                                   args['name'], args.get('metadata') or {})
        except (nova_exception.InstanceInvalidState,
                nova_exception.UnexpectedTaskStateError) as e:
            return _fault(webob.exc.HTTPConflict, e.format_message())
        except nova_exception.InstanceNotFound as e:
            return _fault(webob.exc.HTTPNotFound, e.format_message())
        response = webob.Response(status=202, content_type='application/json')
        response.body = jsonutils.dump_as_bytes({'image_id': image_id})
        return response

    @staticmethod
    def _refusal(context, instance):
        """(HTTP error class, message) when this server cannot be captured
        now, else None."""
        if instance.vm_state != vm_states.ACTIVE:
            return (webob.exc.HTTPConflict,
                    'Cannot create a live image of server %s while it is %s: '
                    'only a running (ACTIVE) server has memory to capture.'
                    % (instance.uuid, instance.vm_state))
        if instance.task_state is not None:
            return (webob.exc.HTTPConflict,
                    'Cannot create a live image of server %s while it is in '
                    'task state %s.' % (instance.uuid, instance.task_state))
        if compute_utils.is_volume_backed_instance(context, instance):
            return (webob.exc.HTTPBadRequest,
                    'Server %s boots from a volume; live images capture '
                    'servers whose root disk is local.' % instance.uuid)
        if not _host_has_trait(context, instance):
            return (webob.exc.HTTPConflict,
                    'The compute host of server %s does not run the live '
                    'snapshot driver (its resource provider lacks trait %s).'
                    % (instance.uuid, protocol.TRAIT))
        return None

    @staticmethod
    def _start(context, compute, rpc, instance, name, metadata):
        image_api = glance.API()
        properties = dict(metadata, instance_uuid=instance.uuid,
                          user_id=str(context.user_id), image_type='snapshot')
        meta = compute_utils.initialize_instance_snapshot_metadata(
            context, instance, name, properties)
        # A clone's own image properties came from its live image: the new
        # image gets a record of its own once captured, never its parent's.
        meta['properties'] = {
            k: v for k, v in meta.get('properties', {}).items()
            if not k.startswith(protocol.RESERVED_PREFIXES)}
        # Marks the image as a live image while it is still being captured
        # (the CLI lists it); the compute host adds the signed record.
        meta['properties'][protocol.FORMAT_PROPERTY] = protocol.FORMAT
        meta.pop('disk_format', None)
        meta.pop('container_format', None)
        image = image_api.create(context, meta)
        try:
            instance.task_state = task_states.IMAGE_SNAPSHOT_PENDING
            instance.save(expected_task_state=[None])
        except Exception:
            compute_utils.delete_image(context, instance, image_api,
                                       image['id'])
            raise
        objects.InstanceAction.action_start(context, instance.uuid,
                                            INSTANCE_ACTION,
                                            want_result=False)
        rpc.create_live_image(context, instance, image['id'])
        LOG.info('Live image %s of server %s requested', image['id'],
                 instance.uuid)
        return image['id']


def _host_has_trait(context, instance):
    node = objects.ComputeNode.get_by_host_and_nodename(
        context, instance.host, instance.node)
    traits = report.report_client_singleton().get_provider_traits(
        context, node.uuid)
    return protocol.TRAIT in traits.traits


def filter_factory(global_conf, **local_conf):
    """paste.deploy filter factory (``[filter:live_snapshot]``)."""
    return LiveImageFilter
