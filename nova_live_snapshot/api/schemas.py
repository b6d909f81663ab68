"""Request body schemas of the live image API action."""

from nova.api.validation import parameter_types

__all__ = ['create_live_image', 'RESERVED_PROPERTY']

# Properties the capturing compute host writes and signs; a user may not
# set or pre-set them through metadata.
RESERVED_PROPERTY = r'^(?!live_snapshot_|trait:)'

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
        'createLiveImage': {
            'type': 'object',
            'properties': {
                'name': parameter_types.name,
                'metadata': _metadata,
            },
            'required': ['name'],
            'additionalProperties': False,
        },
    },
    'required': ['createLiveImage'],
    'additionalProperties': False,
}
