"""One description of the live-image record, and every side agrees with
it: the compute side's record, the API's schema and the client's view."""

import dataclasses
import re

from nova_live_snapshot.api import schemas
from nova_live_snapshot import liveimage
from nova_live_snapshot.osc import client
from nova_live_snapshot import protocol
from nova_live_snapshot.virt import images


def test_the_compute_record_has_exactly_the_protocol_s_fields():
    assert tuple(f.name for f in dataclasses.fields(images.Record)) == \
        protocol.RECORD_FIELDS
    assert tuple(images._RULES) == protocol.RECORD_FIELDS


def test_the_record_format_is_the_live_image_format():
    assert protocol.FORMAT == str(liveimage.FORMAT_VERSION)


def test_the_client_shows_every_stored_field_and_the_signature():
    """Every property the compute side stores has a label in the client
    (disk_image is the image's own id, not a property)."""
    stored = {protocol.property_name(f) for f in protocol.RECORD_FIELDS
              if f != 'disk_image'} | {protocol.SIGNATURE_PROPERTY}
    assert {key for _, key in client.LIVE_PROPERTIES} == stored


def test_the_properties_a_record_writes_are_the_ones_the_client_reads():
    record = images.Record(**{f: 'x' for f in protocol.RECORD_FIELDS})
    props = record.properties('k' * 32)
    assert set(props) == {key for _, key in client.LIVE_PROPERTIES}


def test_reserved_prefixes_are_refused_alike_by_api_and_client():
    allowed = re.compile(schemas.RESERVED_PROPERTY)
    for prefix in protocol.RESERVED_PREFIXES:
        assert not allowed.match(prefix + 'x')
    assert allowed.match('owner_specified.team')


def test_capture_order_ends_in_active_and_never_fails_on_the_way():
    assert protocol.CAPTURE_ORDER[-1] == protocol.Status.ACTIVE
    assert not set(protocol.CAPTURE_ORDER) & protocol.FAILED_STATUSES
    assert set(protocol.CAPTURE_ORDER[:-1]) == protocol.IN_PROGRESS_STATUSES
