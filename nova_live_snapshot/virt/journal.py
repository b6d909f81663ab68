"""The crash journal of captures in progress on this host."""

import contextlib
import glob
import logging
import os

from nova_live_snapshot import exception
from nova_live_snapshot import records

LOG = logging.getLogger(__name__)

__all__ = ['Journal']


class Journal:
    """Captures in progress on this host, one small file each, so that a
    nova-compute that died mid-capture can remove what the capture left:
    the source's extra overlay, staging files and the half-made Glance
    images. It holds ids and paths only, never a token or other secret:
    recovery deletes the Glance images as Nova's service user
    (:func:`service_context`), not as the requester, whose token may be long
    expired by then."""

    def __init__(self, root):
        self.root = root

    def _path(self, image_id):
        return os.path.join(self.root, '%s.capture.json' % image_id)

    def write(self, image_id, **entry):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            data = self.read(image_id) or {}
        except exception.UnreadableRecord as e:
            # What it said is lost either way; what is written now holds.
            LOG.warning('Replacing an unreadable capture journal: %s', e)
            data = {}
        data.update(entry, image_id=image_id)
        records.write(self._path(image_id), data)

    def read(self, image_id):
        """The journal of capture ``image_id``, or None.

        :raises UnreadableRecord: it cannot be trusted.
        """
        try:
            return records.read(self._path(image_id))
        except FileNotFoundError:
            return None

    def remove(self, image_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(image_id))

    def entries(self):
        for path in sorted(glob.glob(os.path.join(self.root,
                                                  '*.capture.json'))):
            try:
                yield records.read(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                LOG.warning('Removing unreadable capture journal %s: %s',
                            path, e)
                os.unlink(path)
