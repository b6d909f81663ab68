"""Request body schemas of the live image API action."""

import re

from nova.api.validation import parameter_types

from nova_live_snapshot import protocol

__all__ = ['create_live_image', 'RESERVED_PROPERTY']

# Properties the capturing compute host writes and signs; a user may not
# set or pre-set them through metadata.
RESERVED_PROPERTY = r'^(?!%s)' % '|'.join(
    re.escape(prefix) for prefix in protocol.RESERVED_PREFIXES)

_metadata = {
    'type': 'object',
    'patternProperties': {
        RESERVED_PROPERTY + r'[a-zA-Z0-9-_:. ]{1,255}\Z': {
            'type': 'string', 'maxLength': 255,
        },
    },
    'additionalProperties': False,
}

create_live_image = {
    'type': 'object',
    'properties': {
        protocol.ACTION: {
            'type': 'object',
            'properties': {
                'name': parameter_types.name,
                'metadata': _metadata,
            },
            'required': ['name'],
            'additionalProperties': False,
        },
    },
    'required': [protocol.ACTION],
    'additionalProperties': False,
}
