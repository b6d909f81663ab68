"""Nova's service user talking to Keystone and Glance.

Work that no request asked for (the periodic pass over the memory stream
cache, recovery after a crash) has no user's token: it authenticates as
Nova's service user (``[service_user]`` in nova.conf), who can see and
delete every project's images, hidden ones included. Glance is spoken to
over HTTP with a keystoneauth adapter here, and through Nova's image API
with a service context (:func:`service_context`) elsewhere.
"""

from oslo_log import log as logging

from nova_live_snapshot import protocol
from nova_live_snapshot.virt import images

LOG = logging.getLogger(__name__)

__all__ = ['image_exists', 'service_adapter', 'service_context',
           'sweep_orphaned_memory']


def service_adapter(conf, memory_cache_dir):
    """A Glance adapter authenticated as Nova's service user.

    The periodic pass runs without a user's token; the service user
    (``[service_user]``, which Nova needs anyway to send service tokens)
    can see every project's images, hidden ones included.
    """
    from keystoneauth1 import exceptions as ks_exc
    from keystoneauth1 import loading as ks_loading
    from nova import utils as nova_utils
    try:
        auth = ks_loading.load_auth_from_conf_options(
            conf, 'service_user')
    except ks_exc.MissingRequiredOptions:
        auth = None
    if auth is None:
        LOG.warning('[service_user] has no credentials: memory streams '
                    'of deleted live images stay in %s until the cache '
                    'size limit evicts them',
                    memory_cache_dir)
        return None
    session = ks_loading.load_session_from_conf_options(
        conf, 'service_user', auth=auth)
    return nova_utils.get_ksa_adapter('image', ksa_auth=auth,
                                      ksa_session=session)


def image_exists(glance, image_id):
    """True or False from Glance's answer about ``image_id``; None when it
    gives none (Glance unreachable, or an error other than 404)."""
    from keystoneauth1 import exceptions as ks_exc
    try:
        response = glance.get('/v2/images/%s' % image_id, raise_exc=False)
    except ks_exc.ClientException as e:
        LOG.warning('Cannot ask Glance about memory image %s: %s',
                    image_id, e)
        return None
    if response.status_code == 404:
        return False
    if response.status_code == 200:
        return True
    LOG.warning('Glance answered %d about memory image %s',
                response.status_code, image_id)
    return None


def sweep_orphaned_memory(glance, image_exists, limit=100):
    """Delete the hidden memory images whose disk image is gone.

    A live image's memory must not outlive it, however the live image was
    deleted: ``openstack server live-image delete`` removes both halves, a
    plain ``openstack image delete`` of the disk image only the disk. Nova's
    periodic image cache pass calls this as the service user, who sees every
    project's images. Only images marked as memory images
    (``live_snapshot_role=memory``) whose ``live_snapshot_disk_image``
    Glance says (404) no longer exists are deleted; a property a tenant set
    on an image of its own can only make it delete that image.

    :param glance: a keystoneauth adapter for the image service.
    :param image_exists: ``image_exists(id)`` is True, False, or None when
        Glance gives no answer (the memory image then stays).
    :returns: the ids of the memory images deleted.
    """
    from keystoneauth1 import exceptions as ks_exc
    # Listed to the end first: Glance's next page starts at a marker image,
    # which must still exist.
    orphans = []
    url = '/v2/images?%s=%s&os_hidden=true&limit=%d' % (
        protocol.ROLE_PROPERTY, protocol.MEMORY_ROLE, limit)
    seen = set()
    while url and url not in seen:
        seen.add(url)
        try:
            response = glance.get(url, raise_exc=False)
        except ks_exc.ClientException as e:
            LOG.warning('Cannot list memory images in Glance: %s', e)
            break
        if response.status_code != 200:
            LOG.warning('Glance answered %d listing memory images',
                        response.status_code)
            break
        body = response.json()
        for image in body.get('images') or []:
            if not isinstance(image, dict) or image.get(
                    protocol.ROLE_PROPERTY) != protocol.MEMORY_ROLE:
                continue
            disk = image.get(protocol.DISK_IMAGE_PROPERTY)
            memory = image.get('id')
            if not (isinstance(disk, str) and images._UUID.match(disk)
                    and isinstance(memory, str) and images._UUID.match(memory)):
                continue
            if image_exists(disk) is False:
                orphans.append((memory, disk))
        url = body.get('next')
    deleted = []
    for memory, disk in orphans:
        try:
            gone = glance.delete('/v2/images/%s' % memory,
                                 raise_exc=False).status_code
        except ks_exc.ClientException as e:
            LOG.warning('Cannot delete memory image %s: %s', memory, e)
            continue
        if gone in (204, 404):
            LOG.info('Deleted memory image %s: its live image %s was '
                     'deleted', memory, disk)
            deleted.append(memory)
        else:
            LOG.warning('Glance answered %d deleting memory image %s',
                        gone, memory)
    return deleted


def service_context():
    """An admin request context that authenticates as Nova's service user
    (``[service_user]`` in nova.conf), for work no request asked for, such
    as cleaning up after a crash. Without that configuration, an anonymous
    admin context (which a real Glance refuses), with a warning."""
    from nova.conf import service_token
    from nova import context as nova_context
    from nova import service_auth
    context = nova_context.get_admin_context()
    auth = service_auth.get_service_auth_plugin(
        service_token.SERVICE_USER_GROUP)
    if auth is None:
        LOG.warning('[service_user] has no auth_type: live snapshot '
                    'recovery has no credentials of its own for Glance')
    else:
        context.user_auth_plugin = auth
    return context
