"""``openstack server live-image`` commands.

One class per command; its docstring is its help. They parse, call
``client_manager.live_snapshot`` (a
:class:`~nova_live_snapshot.osc.client.LiveImageClient`) and shape the answer
into columns; every request and every error message lives in the client.
"""

import logging

from osc_lib.cli import format_columns
from osc_lib.cli import parseractions
from osc_lib.command import command
from osc_lib import exceptions

from nova_live_snapshot.osc import client

__all__ = ['CreateLiveImage', 'ListLiveImage', 'ShowLiveImage',
           'DeleteLiveImage']

LOG = logging.getLogger(__name__)

# A capture writes the guest's whole memory and disk to Glance; an hour
# covers large guests on slow stores, and the image outlives a timeout.
DEFAULT_WAIT_TIMEOUT = 3600

LIST_COLUMNS = ('ID', 'Name', 'Status', 'Source server', 'Memory MiB', 'vCPUs',
                'Created')
LONG_COLUMNS = ('Memory image', 'Machine', 'QEMU version', 'Format',
                'Visibility')
# Record fields that are counts or sizes.
NUMBERS = frozenset(['memory_mib', 'vcpus', 'memory_size'])


def _number(value):
    """Glance properties are strings; counts read better as numbers."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _list_row(image, long):
    row = (image.id, image.name, image.status,
           image.live.get('source_server'),
           _number(image.live.get('memory_mib')),
           _number(image.live.get('vcpus')),
           image.captured_at)
    if long:
        row += (image.memory_image_id, image.live.get('machine'),
                image.live.get('qemu_version'), image.live.get('format'),
                image.visibility)
    return row


class CreateLiveImage(command.ShowOne):
    """Capture a running server, memory and disk, into a live image.

    The server keeps running. The capture goes on in the compute service
    after this command returns: the new image is 'queued', then 'saving',
    and complete once it is 'active' and signed (--wait waits for that). If
    the capture fails the compute service deletes the image and records why
    in the server's instance actions ('openstack server event list').
    Only an ACTIVE server with no other task running can be captured, and
    only on a cloud whose operator enabled live snapshots.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'server',
            metavar='<server>',
            help='Server to capture (name or ID)')
        parser.add_argument(
            '--name',
            metavar='<name>',
            required=True,
            help='Name of the new live image (1 to 255 characters)')
        parser.add_argument(
            '--property',
            metavar='<key=value>',
            dest='properties',
            action=parseractions.KeyValueAction,
            help='Set a property on the new image (repeat option to set '
                 'multiple properties)')
        parser.add_argument(
            '--wait',
            action='store_true',
            help='Wait until the capture is complete and fail if it fails')
        parser.add_argument(
            '--wait-timeout',
            metavar='<seconds>',
            type=int,
            default=DEFAULT_WAIT_TIMEOUT,
            help=f'With --wait, give up waiting after this many seconds '
                 f'(default: {DEFAULT_WAIT_TIMEOUT}); the capture goes on')
        return parser

    def take_action(self, parsed_args):
        live = self.app.client_manager.live_snapshot
        server = live.find_server(parsed_args.server)
        image_id = live.create(server, parsed_args.name, parsed_args.properties)
        if parsed_args.wait:
            # Progress goes to stdout, as OpenStackClient's: only above a
            # table, never into machine-readable output (-f json, yaml...).
            image = self._wait(live, image_id, server.id,
                               parsed_args.wait_timeout,
                               show=parsed_args.formatter == 'table')
        else:
            image = live.created_image(image_id, server.id)
        return (('id', 'name', 'status', 'source_server'),
                (image.id, image.name, image.status, server.id))

    def _wait(self, live, image_id, server_id, timeout, show):
        """Wait for the capture, showing its progress as ``openstack server
        image create --wait`` does: ``\rProgress: N`` on stdout while it
        runs, the line ended once the wait is over."""
        shown = []

        def show_progress(progress):
            if progress and show:
                self.app.stdout.write(f'\rProgress: {progress}')
                self.app.stdout.flush()
                shown.append(progress)
        try:
            return live.wait_for_capture(image_id, server_id, timeout,
                                         callback=show_progress)
        finally:
            if shown:
                self.app.stdout.write('\n')


class ListLiveImage(command.Lister):
    """List live images.

    A live image is a Glance image with a live_snapshot_format property; the
    hidden images holding their memory state are not listed.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--long',
            action='store_true',
            help='Also show the memory image, machine type, QEMU version, '
                 'format and visibility')
        return parser

    def take_action(self, parsed_args):
        images = self.app.client_manager.live_snapshot.list()
        columns = LIST_COLUMNS + (LONG_COLUMNS if parsed_args.long else ())
        return columns, (_list_row(i, parsed_args.long) for i in images)


class ShowLiveImage(command.ShowOne):
    """Show a live image: the image, what it was captured from, its memory image.

    Fails for an image that is not a live image. The live_snapshot_*
    properties are shown without their prefix (source_instance as
    source_server, created_at as captured_at); the image's other properties
    are under properties.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'image',
            metavar='<image>',
            help='Live image to show (name or ID)')
        return parser

    def take_action(self, parsed_args):
        live = self.app.client_manager.live_snapshot
        image = live.find(parsed_args.image)
        fields = {
            'id': image.id,
            'name': image.name,
            'status': image.status,
            'visibility': image.visibility,
            'owner': image.owner,
            'size': image.size,
            'created_at': image.created_at,
            'updated_at': image.updated_at,
        }
        for short, _ in client.LIVE_PROPERTIES:
            value = image.live.get(short)
            fields[short] = _number(value) if short in NUMBERS else value
            if short == 'memory_image':
                fields['memory_image_status'] = live.memory_image_status(image)
        fields['properties'] = format_columns.DictColumn(image.properties)
        return tuple(fields), tuple(fields.values())


class DeleteLiveImage(command.Command):
    """Delete live images, their memory image and their disk image.

    Refuses images that are not live images. Goes on past an image it cannot
    delete and fails at the end if any could not be deleted.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'images',
            metavar='<image>',
            nargs='+',
            help='Live image(s) to delete (name or ID)')
        return parser

    def take_action(self, parsed_args):
        live = self.app.client_manager.live_snapshot
        failed = 0
        for name in parsed_args.images:
            try:
                live.delete(live.find(name))
            except exceptions.CommandError as e:
                failed += 1
                LOG.error("Failed to delete live image '%s': %s", name, e)
        if failed:
            raise exceptions.CommandError(
                f'Failed to delete {failed} of {len(parsed_args.images)} live '
                f'images.')
