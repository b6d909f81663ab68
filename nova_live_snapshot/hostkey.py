"""The host's key that authenticates the live images it captured.

A local live image is read back from a directory anyone with root on the
host, a restored backup or a copied-in image may have written. Re-hashing a
tampered file would make its checksums match again, so the manifest is
signed (:mod:`nova_live_snapshot.signing`, HMAC-SHA256) with a secret of this
host, kept in one file:

* root's, mode 0600, never in the image store, never readable by QEMU;
* made on the first capture (32 random bytes, hex) when there is none;
* on a host without one nothing can be verified: every image is refused.

The signature (``manifest.sig``) covers the manifest's exact bytes; the
manifest holds every file's size and SHA-256, so it covers the whole image.
It is checked before the manifest is parsed and before any other file of
the image is read.
"""

import binascii
import errno
import hashlib
import os
import stat

from nova_live_snapshot import exception
from nova_live_snapshot import signing

__all__ = ['load', 'load_or_create', 'sign_manifest', 'verify_manifest']

_KEY_BYTES = 32


def _check(path, st):
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() \
            or st.st_mode & 0o077:
        raise exception.NotConfigured(
            reason='the host key %s is not a regular file of ours readable '
            'by us alone (mode %o)' % (path, stat.S_IMODE(st.st_mode)),
            option='[live_snapshot] host_key_file to a file of mode 0600')


def load(path):
    """The key in ``path``, or None when the host has none.

    :raises NotConfigured: the file is not ours alone, or not a key.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise exception.NotConfigured(
                reason='the host key %s is a symbolic link' % path,
                option='[live_snapshot] host_key_file') from None
        raise
    with os.fdopen(fd) as f:
        _check(path, os.fstat(f.fileno()))
        key = f.read(1024).strip()
    try:
        if len(binascii.unhexlify(key)) < _KEY_BYTES:
            raise ValueError
    except (ValueError, binascii.Error):
        raise exception.NotConfigured(
            reason='the host key %s does not hold %d hex-encoded bytes'
            % (path, _KEY_BYTES), option='[live_snapshot] host_key_file') \
            from None
    return key


def load_or_create(path):
    """The key in ``path``, made now (mode 0600) if the host has none."""
    key = load(path)
    if key is not None:
        return key
    os.makedirs(os.path.dirname(path) or '.', mode=0o700, exist_ok=True)
    key = os.urandom(_KEY_BYTES).hex()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
    except FileExistsError:
        return load(path)       # another capture made it first
    with os.fdopen(fd, 'w') as f:
        f.write(key + '\n')
        f.flush()
        os.fsync(f.fileno())
    return key


def _record(manifest_bytes):
    return {'manifest_sha256': hashlib.sha256(manifest_bytes).hexdigest()}


def sign_manifest(key, manifest_bytes):
    """The signature of a manifest's exact bytes (ASCII text)."""
    return signing.sign(key, _record(manifest_bytes))


def verify_manifest(key, manifest_bytes, signature, image):
    """:raises UntrustedImage: no key here, no or another signature."""
    if key is None:
        raise exception.UntrustedImage(
            image=image, reason='this host has no host key '
            '([live_snapshot] host_key_file), so no image here can be '
            'authenticated; images are signed by the host that captures them')
    signing.verify(key, _record(manifest_bytes), signature, image)
