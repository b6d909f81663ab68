"""``libvirtError`` into this project's exceptions, in one place.

The libvirt wrapper (:mod:`.host` for the connection, :mod:`.guest` for one
domain) wraps every libvirt call in :func:`translate_errors`; callers above
it never catch ``libvirt.libvirtError``. A module of its own so that both
halves of the wrapper use it without importing each other.
"""

import contextlib

import libvirt

from nova_live_snapshot import exception

__all__ = ['translate_errors']

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN}


@contextlib.contextmanager
def translate_errors(operation, domain=None):
    """Map a ``libvirtError`` raised inside the block to a project error:
    :class:`DomainNotFound` when ``domain`` is given and libvirt no longer
    knows it, :class:`HypervisorError` naming ``operation`` otherwise."""
    try:
        yield
    except libvirt.libvirtError as e:
        if domain is not None and e.get_error_code() in _NOT_FOUND:
            raise exception.DomainNotFound(domain=domain) from e
        raise exception.HypervisorError(operation=operation,
                                        reason=e.get_error_message()) from e
