"""Waiting with a deadline, and waking on an event instead of polling."""

import threading
import time

import pytest

from nova_live_snapshot import waiting


def test_returns_the_first_true_value():
    values = iter([None, 0, '', 'ready'])
    assert waiting.wait_for(lambda: next(values), 10, interval=0) == 'ready'


def test_times_out_naming_what_it_waited_for():
    with pytest.raises(TimeoutError, match='waiting for the moon'):
        waiting.wait_for(lambda: False, 0.05, interval=0.01, what='the moon')


def test_an_error_of_the_predicate_ends_the_wait():
    def broken():
        raise ValueError('gone')
    with pytest.raises(ValueError, match='gone'):
        waiting.wait_for(broken, 10)


def test_an_event_wakes_the_wait_long_before_its_interval():
    """The pause between two looks is an upper bound once an event says
    the state changed: the waiter looks again at once."""
    wake = threading.Event()
    state = {'done': False}

    def change():
        state['done'] = True
        wake.set()

    started = time.monotonic()
    timer = threading.Timer(0.05, change)
    timer.start()
    try:
        assert waiting.wait_for(lambda: state['done'], 120, interval=60,
                                wake=wake)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 60


def test_looks_come_further_apart_up_to_max_interval():
    """With ``max_interval`` the pauses between looks grow by half from
    ``interval`` up to it (an agent round trip per look costs the guest
    CPU): sleeping never ends early, so each pause is at least that."""
    looks = []

    def look():
        looks.append(time.monotonic())
        return len(looks) == 8
    assert waiting.wait_for(look, 60, interval=0.01, max_interval=0.04)
    gaps = [b - a for a, b in zip(looks, looks[1:])]
    expected = [min(0.01 * 1.5 ** k, 0.04) for k in range(len(gaps))]
    assert all(gap >= want * 0.95 for gap, want in zip(gaps, expected)), gaps
    # A fixed 10 ms pause would have made the last gap about 0.01 s.
    assert gaps[-1] >= 0.038
