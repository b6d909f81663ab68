"""Signatures that make a Glance image a live image this cloud made.

A tenant may upload any image to Glance and set any property on it. A live
image is restored by handing its memory stream and its embedded domain XML
to libvirt and QEMU, parsers with a long history of CVEs, so compute hosts
restore only what a compute host of this cloud captured: the capturing host
signs the live-image record (the properties that describe the image, the
project it belongs to, the Glance ids of both halves and their hashes) with
HMAC-SHA256 under ``[live_snapshot] signing_key``, a secret that only
compute hosts hold, and every restore checks that signature first.

The record is serialised canonically (sorted keys, no whitespace) so that
the same values always give the same bytes.
"""

import hashlib
import hmac
import json

from nova_live_snapshot import exception

__all__ = ['SCHEME', 'MIN_KEY_LENGTH', 'sign', 'verify']

SCHEME = 'hmac-sha256-v1'
MIN_KEY_LENGTH = 32


def _key(key):
    if not key:
        raise exception.NotConfigured(reason='no signing key',
                                      option='[live_snapshot] signing_key')
    if len(key) < MIN_KEY_LENGTH:
        raise exception.NotConfigured(
            reason='the signing key has %d characters, fewer than %d'
            % (len(key), MIN_KEY_LENGTH),
            option='a longer [live_snapshot] signing_key')
    return key.encode('utf-8')


def _canonical(record):
    for name, value in record.items():
        if not isinstance(value, str):
            # Glance properties are strings: sign exactly what is stored.
            raise TypeError('signed field %s is %s, not str'
                            % (name, type(value).__name__))
    return json.dumps(record, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=True).encode('ascii')


def sign(key, record):
    """The signature of ``record`` (a dict of str to str) under ``key``.

    :raises NotConfigured: no key, or one too short to be a secret.
    """
    mac = hmac.new(_key(key), _canonical(record), hashlib.sha256)
    return '%s:%s' % (SCHEME, mac.hexdigest())


def verify(key, record, signature, image):
    """Check ``signature`` over ``record``.

    :param image: the image's name or id, for the error message.
    :raises UntrustedImage: missing, of an unknown scheme, or not matching.
    :raises NotConfigured: this host has no usable key.
    """
    expected = sign(key, record)
    if not isinstance(signature, str) or not signature:
        # Glance properties are strings, but an image's JSON may say
        # anything: a list or a number is no signature.
        raise exception.UntrustedImage(
            image=image, reason='it carries no signature'
            if not signature else 'its signature is a %s, not a string'
            % type(signature).__name__)
    if not signature.startswith(SCHEME + ':'):
        raise exception.UntrustedImage(
            image=image, reason='its signature is not of scheme %s' % SCHEME)
    if not hmac.compare_digest(expected.encode('ascii'),
                               signature.encode('ascii', 'replace')):
        raise exception.UntrustedImage(
            image=image, reason='its signature does not match its properties '
            '(they were changed after capture, or it was signed with another '
            'key)')
