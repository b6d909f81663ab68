"""The names nova-api, nova-compute and the ``openstack`` plugin agree on.

One definition of the live-image record's Glance properties, the API
action, the trait and the order in which a capture shows in Glance. It
imports nothing (the standard library's ``types`` aside), so that the
client plugin (:mod:`nova_live_snapshot.osc`) can use it without Nova,
libvirt or lxml installed: the compute side (:mod:`.virt.images`), the API
filter (:mod:`.api.filter`) and the client all take these names from here.

A capture, as Glance sees it (:data:`CAPTURE_ORDER`):

1. nova-api creates the **disk image**, ``queued``, with the user's
   metadata and :data:`FORMAT_PROPERTY` already set: listing by format
   finds a capture in progress.
2. nova-compute captures, then creates the hidden **memory image**
   (:data:`ROLE_PROPERTY` = :data:`MEMORY_ROLE`, :data:`DISK_IMAGE_PROPERTY`
   pointing back) and uploads the memory stream to it.
3. It sets the whole signed record on the disk image in one update, while
   the image is still ``queued``: a property for every field of
   :data:`RECORD_FIELDS` but ``disk_image`` (the image's own id), with
   :data:`SIGNATURE_PROPERTY` and :data:`TRAIT_PROPERTY`.
4. It uploads the disk: the image goes ``saving``, then ``active``. An
   active disk image is signed; a client still checks both, as an image
   made by another writer may not be.

If any step fails, nova-compute deletes both images (the instance action
records why); ``killed`` is an upload Glance refused.
"""

import types

__all__ = ['ACTION', 'TRAIT', 'TRAIT_PROPERTY', 'FORMAT', 'PREFIX',
           'RESERVED_PREFIXES', 'FORMAT_PROPERTY', 'MEMORY_IMAGE_PROPERTY',
           'SIGNATURE_PROPERTY', 'ROLE_PROPERTY', 'DISK_IMAGE_PROPERTY',
           'MEMORY_ROLE', 'DISK_HASH', 'RECORD_FIELDS', 'Status',
           'CAPTURE_ORDER', 'IN_PROGRESS_STATUSES', 'FAILED_STATUSES',
           'property_name']

# The server action nova-api serves (POST /servers/{id}/action).
ACTION = 'createLiveImage'

# The trait of hosts that can restore live images; a disk image requires it
# so that the scheduler sends clones only there.
TRAIT = 'CUSTOM_LIVE_SNAPSHOT'
TRAIT_PROPERTY = 'trait:' + TRAIT

# The record format (the same number as the on-disk live-image format,
# nova_live_snapshot.liveimage.FORMAT_VERSION); listing filters on it.
FORMAT = '1'

PREFIX = 'live_snapshot_'
# Metadata keys the compute service sets; nova-api and the client refuse
# them in a user's metadata.
RESERVED_PREFIXES = (PREFIX, 'trait:')

# The fields of the signed record, in the order they are signed; each is
# stored as PREFIX + field, except disk_image (the image's own id).
RECORD_FIELDS = ('format', 'disk_image', 'project_id', 'memory_image',
                 'memory_sha256', 'memory_size', 'disk_hash', 'memory_mib',
                 'vcpus', 'machine', 'cpu_model', 'qemu_version',
                 'source_instance', 'created_at')


def property_name(field):
    """The Glance property that stores record field ``field``."""
    return PREFIX + field


FORMAT_PROPERTY = property_name('format')
MEMORY_IMAGE_PROPERTY = property_name('memory_image')
SIGNATURE_PROPERTY = PREFIX + 'signature'
# On the memory image: its role, and the disk image it belongs to.
ROLE_PROPERTY = PREFIX + 'role'
DISK_IMAGE_PROPERTY = PREFIX + 'disk_image'
MEMORY_ROLE = 'memory'

# Glance's default os_hash_algo: the disk hash is signed before upload and
# must be what Glance computes.
DISK_HASH = 'sha512'

# Glance image statuses, as the protocol uses them.
Status = types.SimpleNamespace(QUEUED='queued', SAVING='saving',
                               ACTIVE='active', KILLED='killed',
                               DELETED='deleted',
                               PENDING_DELETE='pending_delete')

# The statuses of a disk image through a capture that succeeds, in order;
# the record is signed before the first "saving".
CAPTURE_ORDER = (Status.QUEUED, Status.SAVING, Status.ACTIVE)
IN_PROGRESS_STATUSES = frozenset([Status.QUEUED, Status.SAVING])
# Statuses a capture never comes back from. A failed capture is normally
# deleted outright (404).
FAILED_STATUSES = frozenset([Status.KILLED, Status.DELETED,
                             Status.PENDING_DELETE])
