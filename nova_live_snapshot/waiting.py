"""Waiting for a condition, with a deadline.

Deliberately free of libvirt and of every other module here, so that the
libvirt wrapper (:mod:`.host`, :mod:`.guest`), the test bed and the test
cloud's supervisor (``tools/cloud``) share one way to wait without importing
each other. Where libvirt delivers an event for the condition, wait on the
event instead (as :meth:`.host.Host.pause_window` does).
"""

import tenacity

__all__ = ['wait_for']


def wait_for(predicate, timeout, interval=0.1, what='condition', wake=None,
             max_interval=None):
    """Call ``predicate`` until it returns a true value or ``timeout``
    seconds have passed; an exception it raises ends the wait at once.

    :param max_interval: when given, the pause between looks starts at
        ``interval`` and grows by half each time up to this: for conditions
        that may come at once or only after seconds, where each look has a
        cost (a guest agent round trip takes the guest's CPU too).

    :param wake: a :class:`threading.Event` that an event callback sets
        when the condition may have changed (a libvirt event): the wait
        then looks again at once instead of after ``interval``, which
        becomes only the longest pause between two looks.
    :returns: the predicate's (true) value.
    :raises TimeoutError: naming ``what``.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda value: not value),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval) if max_interval is None else
        tenacity.wait_exponential(multiplier=interval, exp_base=1.5,
                                  min=interval, max=max_interval),
        sleep=_woken_by(wake) if wake is not None else tenacity.nap.sleep,
        retry_error_callback=lambda state: _timed_out(timeout, what))
    return retrying(predicate)


def _woken_by(event):
    def sleep(seconds):
        # Cleared before the next look: an event set after it is not lost,
        # and one set before it was caused by a state the look sees.
        event.wait(seconds)
        event.clear()
    return sleep


def _timed_out(timeout, what):
    raise TimeoutError('timed out after %.0f s waiting for %s'
                       % (timeout, what))
