"""Waiting for a condition, with a deadline.

Deliberately free of libvirt and of every other module here, so that the
libvirt wrapper (:mod:`.host`, :mod:`.guest`), the test bed and the test
cloud's supervisor (``tools/cloud``) share one way to wait without importing
each other. Where libvirt delivers an event for the condition, wait on the
event instead (as :meth:`.host.Host.pause_window` does).
"""

import tenacity

__all__ = ['wait_for']


def wait_for(predicate, timeout, interval=0.1, what='condition'):
    """Call ``predicate`` until it returns a true value or ``timeout``
    seconds have passed; an exception it raises ends the wait at once.

    :returns: the predicate's (true) value.
    :raises TimeoutError: naming ``what``.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda value: not value),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        retry_error_callback=lambda state: _timed_out(timeout, what))
    return retrying(predicate)


def _timed_out(timeout, what):
    raise TimeoutError('timed out after %.0f s waiting for %s'
                       % (timeout, what))
