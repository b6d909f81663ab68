"""The one place the live-image commands talk to Nova and Glance.

The REST contract, served by the nova-api filter once ``[live_snapshot]
enabled`` is set:

* ``POST /servers/{id}/action`` with ``{"createLiveImage": {"name": ...,
  "metadata": {...}}}`` answers 202 ``{"image_id": ...}``. Nova answers 400
  "There is no such action" while the feature is off, 403 when policy denies
  it, 404 for an unknown server and 409 when the server is not ACTIVE or is
  busy with another task.
* A live image is the Glance image of the frozen disk. Its ``live_snapshot_*``
  properties describe the capture and name a second, hidden Glance image
  (``live_snapshot_role=memory``, pointing back in
  ``live_snapshot_disk_image``) holding the memory state.
* How a capture shows in Glance is the compute side's, described once in
  :mod:`nova_live_snapshot.protocol`: nova-api creates the disk image
  ``queued`` with ``live_snapshot_format`` already set (so a capture in
  progress lists as a live image); the compute service makes the memory
  image, sets the signed record on the disk image in one update while it is
  still ``queued``, then uploads the disk (``saving``, then ``active``), and
  deletes both images if any step fails. A capture is complete once the
  image is ``active`` *and* signed; the client checks both.

Every failure the commands are expected to meet is turned here into an
:class:`osc_lib.exceptions.CommandError` whose message says what was wrong
and what to do, so the commands themselves stay thin. Nothing here imports
the compute side: the names come from :mod:`nova_live_snapshot.protocol`.
"""

import dataclasses
import logging
import time

from openstack import exceptions as sdk_exc
from openstack.image.v2 import image as sdk_image
from openstack import resource
from osc_lib import exceptions

from nova_live_snapshot import protocol

__all__ = ['LiveImage', 'LiveImageClient', 'LIVE_PROPERTIES']

LOG = logging.getLogger(__name__)

# Glance statuses a capture never comes back from. A failed capture is
# normally deleted outright (404); ``killed`` is an upload Glance rejected.
FAILED_STATUSES = protocol.FAILED_STATUSES

# How each property of the live-image record is shown, in display order.
# Any other live_snapshot_* property (a newer format's) stays visible among
# the image's other properties.
LIVE_PROPERTIES = tuple((label, protocol.PREFIX + field) for label, field in (
    ('source_server', 'source_instance'),
    ('memory_image', 'memory_image'),
    ('memory_mib', 'memory_mib'),
    ('vcpus', 'vcpus'),
    ('machine', 'machine'),
    ('cpu_model', 'cpu_model'),
    ('qemu_version', 'qemu_version'),
    ('captured_at', 'created_at'),
    ('format', 'format'),
    ('project_id', 'project_id'),
    ('memory_size', 'memory_size'),
    ('memory_sha256', 'memory_sha256'),
    ('disk_hash', 'disk_hash'),
    ('signature', 'signature'),
))

# How far a capture has come, as ``--wait`` shows it (the percentage
# OpenStackClient prints for ``server image create --wait``): the server's
# task state while the compute service captures (Nova's image task states,
# in the order it moves through them), then the image's status while the
# compute service uploads (the record is signed before the upload starts:
# :mod:`nova_live_snapshot.protocol`). ``active`` without a signature is no
# step of this compute service; it counts 90 until a record appears.
TASK_PROGRESS = {
    'image_snapshot_pending': 5,    # queued on the compute host
    'image_snapshot': 25,           # memory and disk being captured
    'image_pending_upload': 50,     # captured; the upload starts
    'image_uploading': 75,          # memory and disk going to Glance
}
IMAGE_PROGRESS = {'saving': 75, protocol.Status.ACTIVE: 90}
COMPLETE = 100


class _LiveImageQuery(sdk_image.Image):
    """A Glance image listed by live-image properties.

    ``image.images(live_snapshot_format='1')`` does not filter: the SDK drops
    query parameters its Image resource does not declare and sends a bare
    ``GET /v2/images``. Declaring them here makes the SDK send
    ``GET /v2/images?live_snapshot_format=1`` (and page through the answer).
    """

    _query_mapping = resource.QueryParameters('name', protocol.FORMAT_PROPERTY)


@dataclasses.dataclass(frozen=True)
class LiveImage:
    """A Glance image known to be a live image, as the commands show it.

    ``live`` maps the short names of :data:`LIVE_PROPERTIES` to the values the
    image has; ``properties`` holds every other property (the ``--property``
    metadata given at creation).
    """

    id: str
    name: str
    status: str
    visibility: str | None
    owner: str | None
    size: int | None
    created_at: str | None
    updated_at: str | None
    live: dict
    properties: dict

    @property
    def memory_image_id(self):
        return self.live.get('memory_image')

    @property
    def captured_at(self):
        """When the memory was frozen; Glance's creation time until recorded."""
        return self.live.get('captured_at') or self.created_at

    @classmethod
    def from_glance(cls, image):
        """Build from an SDK image.

        :raises CommandError: the image is not a live image (or is the hidden
            memory half of one).
        """
        props = dict(image.properties or {})
        if protocol.FORMAT_PROPERTY not in props:
            if props.get(protocol.ROLE_PROPERTY) == protocol.MEMORY_ROLE:
                owner = props.get(protocol.DISK_IMAGE_PROPERTY) or (
                    f"the one whose Memory image column shows {image.id} in "
                    f"'openstack server live-image list --long'")
                raise exceptions.CommandError(
                    f"Image {image.id} holds the memory state of a live image; "
                    f"it is not a live image itself. Its live image is "
                    f"{owner}.")
            # nova-api sets the format when it creates a live image: an
            # image without it is none, whatever its status.
            raise exceptions.CommandError(
                f"Image {image.id} ({image.name}) is not a live image: it has "
                f"no {protocol.FORMAT_PROPERTY} property. Use "
                f"'openstack image' commands for it.")
        live = {short: props.pop(key) for short, key in LIVE_PROPERTIES
                if key in props}
        return cls(id=image.id, name=image.name, status=image.status,
                   visibility=image.visibility, owner=image.owner_id,
                   size=image.size, created_at=image.created_at,
                   updated_at=image.updated_at, live=live, properties=props)


def _is_listed(image):
    props = image.properties or {}
    return (protocol.FORMAT_PROPERTY in props
            and props.get(protocol.ROLE_PROPERTY) != protocol.MEMORY_ROLE)


def _sentence(text):
    """*text* (an error detail from a service) ending with a full stop."""
    text = (text or '').strip()
    return text if text.endswith(('.', '!', '?')) else text + '.'


def _action_error(exc, server):
    """The CommandError for a refused ``createLiveImage`` action."""
    what = f"server {server.name} ({server.id})"
    details = exc.details or exc.message or ''
    status = exc.status_code
    if status == 400 and 'no such action' in details.lower():
        return exceptions.CommandError(
            "This cloud does not serve live images: nova-api does not know "
            "the createLiveImage action. The operator must add the "
            "nova-live-snapshot API filter to nova-api and set "
            "[live_snapshot] enabled = true.")
    if status == 400:
        return exceptions.CommandError(
            f"Nova refused to create a live image of {what}: "
            f"{_sentence(details)}")
    if status == 403:
        return exceptions.CommandError(
            f"Policy does not allow you to create a live image of {what}: "
            f"{_sentence(details)} Ask the cloud operator which role the "
            f"live snapshot policy requires.")
    if status == 404:
        return exceptions.CommandError(f"{what.capitalize()} no longer exists.")
    if status == 409:
        return exceptions.CommandError(
            f"{_sentence(details)} The server must be ACTIVE with no other "
            f"task running; check it with 'openstack server show "
            f"{server.id}'.")
    return exceptions.CommandError(
        f"Creating a live image of {what} failed (HTTP {status}): "
        f"{_sentence(details)}")


def _capture_failed(image_id, server_id, why):
    return exceptions.CommandError(
        f"The capture of live image {image_id} failed: {why}. The compute "
        f"service records why in the server's instance actions: "
        f"'openstack server event list {server_id}', then "
        f"'openstack server event show {server_id} <request-id>'.")


class LiveImageClient:
    """Live-image operations over an openstacksdk connection.

    :param connection: an :class:`openstack.connection.Connection`, as
        OpenStackClient's ``client_manager.sdk_connection``.
    :param poll_interval: seconds between two looks at an image being captured.
    :param clock: monotonic clock (tests pass a fake one).
    :param sleep: how to wait ``poll_interval`` (tests pass the fake clock's).
    """

    def __init__(self, connection, poll_interval=5,
                 clock=time.monotonic, sleep=time.sleep):
        self._connection = connection
        self._poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    # The proxies are looked up when used: each one costs a version
    # discovery request, and most commands need only Glance.
    @property
    def _compute(self):
        return self._connection.compute

    @property
    def _images(self):
        return self._connection.image

    def find_server(self, name_or_id):
        """The server named or with ID *name_or_id*.

        :raises CommandError: no such server, or more than one of that name.
        """
        try:
            return self._compute.find_server(name_or_id, ignore_missing=False)
        except sdk_exc.DuplicateResource as e:
            raise exceptions.CommandError(
                f"More than one server is named '{name_or_id}'; give its ID."
            ) from e
        except sdk_exc.NotFoundException as e:
            raise exceptions.CommandError(
                f"No server with a name or ID of '{name_or_id}' exists.") from e

    def create(self, server, name, metadata=None):
        """Ask Nova to capture *server* into a new live image.

        :returns: the ID of the new (disk) image; its capture goes on in the
            compute service.
        :raises CommandError: *metadata* sets a reserved key, or Nova refused
            the action (see :func:`_action_error`).
        """
        reserved = sorted(k for k in metadata or {}
                          if k.startswith(protocol.RESERVED_PREFIXES))
        if reserved:
            raise exceptions.CommandError(
                "Properties starting with "
                f"{' or '.join(protocol.RESERVED_PREFIXES)} "
                f"are set by the compute service and cannot be given: "
                f"{', '.join(reserved)}.")
        body = {'name': name}
        if metadata:
            body['metadata'] = dict(metadata)
        response = self._compute.post(f'/servers/{server.id}/action',
                                      json={protocol.ACTION: body})
        try:
            sdk_exc.raise_from_response(response)
        except sdk_exc.HttpException as e:
            raise _action_error(e, server) from e
        try:
            return response.json()['image_id']
        except (ValueError, KeyError, TypeError) as e:
            raise exceptions.CommandError(
                f"nova-api accepted the createLiveImage action but its answer "
                f"(HTTP {response.status_code}) has no image_id; its API "
                f"filter does not match this client.") from e

    def find(self, name_or_id):
        """The live image with ID *name_or_id*, else the one of that name.

        Only live images are matched by name, so a plain image of the same
        name does not make the name ambiguous.

        :raises CommandError: no such live image, more than one of that
            name, or the image with that ID is not a live image.
        """
        try:
            image = self._images.get_image(name_or_id)
        except (sdk_exc.NotFoundException, sdk_exc.BadRequestException):
            pass
        else:
            return LiveImage.from_glance(image)
        matches = list(_LiveImageQuery.list(
            self._images, name=name_or_id,
            **{protocol.FORMAT_PROPERTY: protocol.FORMAT}))
        if not matches:
            raise exceptions.CommandError(
                f"No live image with a name or ID of '{name_or_id}' exists.")
        if len(matches) > 1:
            raise exceptions.CommandError(
                f"More than one live image is named '{name_or_id}'; give its "
                f"ID.")
        return LiveImage.from_glance(matches[0])

    def list(self):
        """Every live image this project can see, newest first."""
        images = _LiveImageQuery.list(
            self._images, **{protocol.FORMAT_PROPERTY: protocol.FORMAT})
        return [LiveImage.from_glance(i) for i in images if _is_listed(i)]

    def memory_image_status(self, live_image):
        """The Glance status of *live_image*'s memory image, or ``missing``.

        ``None`` while the capture has not recorded a memory image yet.
        """
        if not live_image.memory_image_id:
            return None
        try:
            return self._images.get_image(live_image.memory_image_id).status
        except sdk_exc.NotFoundException:
            return 'missing'

    def delete(self, live_image):
        """Delete *live_image*: its memory image first, then its disk image.

        In that order, a failure half-way leaves the disk image, which still
        lists and can be deleted again, rather than a hidden memory image
        nothing points to any more. A memory image already gone is not an
        error.

        :raises CommandError: the image named as the memory image is not a
            live-image memory image (neither image is touched), or Glance
            refused a delete.
        """
        memory_id = live_image.memory_image_id
        if memory_id:
            try:
                memory = self._images.get_image(memory_id)
            except sdk_exc.NotFoundException:
                LOG.debug('Memory image %s of live image %s is already gone',
                          memory_id, live_image.id)
            else:
                self._check_memory_image(live_image, memory)
                self._delete_image(memory_id, 'memory image')
        self._delete_image(live_image.id, 'disk image')

    @staticmethod
    def _check_memory_image(live_image, memory):
        """Refuse to delete an image that is not this live image's memory.

        The disk image's properties are the user's to edit: a wrong
        ``live_snapshot_memory_image`` must not make delete remove some
        other image.
        """
        props = memory.properties or {}
        owner = props.get(protocol.DISK_IMAGE_PROPERTY, live_image.id)
        role = props.get(protocol.ROLE_PROPERTY)
        if role != protocol.MEMORY_ROLE or owner != live_image.id:
            raise exceptions.CommandError(
                f"Live image {live_image.id} names image {memory.id} as its "
                f"memory image, but that image is not its memory image "
                f"({protocol.ROLE_PROPERTY}={role}, "
                f"{protocol.DISK_IMAGE_PROPERTY}="
                f"{props.get(protocol.DISK_IMAGE_PROPERTY)}); "
                f"deleting neither. Inspect both with 'openstack image show'.")

    def _delete_image(self, image_id, what):
        try:
            self._images.delete_image(image_id, ignore_missing=True)
        except sdk_exc.HttpException as e:
            raise exceptions.CommandError(
                f"Glance refused to delete {what} {image_id} "
                f"(HTTP {e.status_code}): {e.details or e.message}") from e

    def created_image(self, image_id, server_id):
        """The image of a capture started by :meth:`create`, as Glance has it.

        Returned as the SDK image: the capture may not have set the live-image
        properties yet.

        :raises CommandError: the capture failed (the image is gone or in a
            failed status).
        """
        try:
            image = self._images.get_image(image_id)
        except sdk_exc.NotFoundException as e:
            raise _capture_failed(
                image_id, server_id,
                'the compute service deleted the image') from e
        status = (image.status or '').lower()
        if status in FAILED_STATUSES:
            raise _capture_failed(image_id, server_id, f'the image is {status}')
        return image

    def capture_progress(self, image, server_id):
        """A percentage of how far the capture into *image* has come, from
        the server's task state and the image's status (see
        :data:`TASK_PROGRESS`); 0 while neither says anything yet."""
        status = (image.status or '').lower()
        progress = IMAGE_PROGRESS.get(status, 0)
        try:
            server = self._compute.get_server(server_id)
        except sdk_exc.NotFoundException:
            return progress
        return max(progress, TASK_PROGRESS.get(server.task_state, 0))

    def wait_for_capture(self, image_id, server_id, timeout, callback=None):
        """Poll the image of a capture until the capture is complete.

        Complete is ``active`` and signed. The compute service signs the
        record before it uploads the disk
        (:mod:`nova_live_snapshot.protocol`), so its images turn ``active``
        signed; the signature is checked all the same, as an image made
        active by another writer may have none.

        :param callback: called with the capture's progress (a percentage,
            :meth:`capture_progress`) at every poll, as osc-lib's
            ``wait_for_status`` calls its callback, and with 100 once
            complete.
        :returns: the SDK image, complete.
        :raises CommandError: the capture failed (see :meth:`created_image`),
            or it is not complete after *timeout* seconds.
        """
        deadline = self._clock() + timeout
        while True:
            image = self.created_image(image_id, server_id)
            signed = protocol.SIGNATURE_PROPERTY in (image.properties or {})
            LOG.debug('Live image %s is %s, %ssigned', image_id, image.status,
                      '' if signed else 'not ')
            status = (image.status or '').lower()
            if status == protocol.Status.ACTIVE and signed:
                if callback is not None:
                    callback(COMPLETE)
                return image
            if callback is not None:
                callback(self.capture_progress(image, server_id))
            remaining = deadline - self._clock()
            if remaining <= 0:
                state = status + (' but not signed yet'
                                  if status == protocol.Status.ACTIVE
                                  else '')
                raise exceptions.CommandError(
                    f"Live image {image_id} is still {state} after "
                    f"{timeout} seconds; the capture may still be running. "
                    f"Check it with 'openstack server live-image show "
                    f"{image_id}'.")
            self._sleep(min(self._poll_interval, remaining))
