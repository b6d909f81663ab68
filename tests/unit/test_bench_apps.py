"""How the application benchmarks read their drivers' output and decide
"warm" and "ready" (nova_live_snapshot.bench.apps)."""

import pytest

from nova_live_snapshot.bench import apps


def _series(rates, window_s=1.0):
    return apps.Series(window_s, windows=[(100.0 + i * window_s, r)
                                          for i, r in enumerate(rates)])


def test_ready_is_the_start_of_the_first_span_at_the_threshold():
    # One window at 95 is not a span at 90; windows 4-6 are (mean 91).
    series = _series([5, 95, 10, 50, 89, 91, 93, 40])
    assert series.ready_at(90, 3) == 103.0      # window 4 began at 103
    assert series.ready_at(90, 1) == 100.0
    assert series.ready_at(1000, 3) is None


def test_ready_needs_a_whole_span():
    assert _series([100, 100]).ready_at(50, 3) is None


def test_warm_rate_growth_and_first_rate():
    series = _series([10, 20, 30, 40, 100, 100, 110, 90])
    assert series.mean_rate(4) == 100
    assert series.first_rate(2) == 15
    assert series.growth(4) == pytest.approx(100 / 25)
    assert series.growth(5) is None
    assert series.elapsed() == 8.0


def test_pgbench_progress_lines_give_rates():
    pg = apps.Postgres({'port': 5432, 'user': 'postgres',
                        'database': 'bench'})
    assert pg.parse('progress: 3.0 s, 412.7 tps, lat 2.417 ms stddev '
                    '0.391, 0 failed\n') == ('rate', 412.7)
    assert pg.parse('pgbench (15.18)\n') is None


def test_jvm_client_lines_give_the_banner_and_rates():
    jvm = apps.Jvm({'port': 8081})
    banner = 'JIT label=x token=%s pid=7' % ('ab' * 16)
    assert jvm.parse('BANNER %s\n' % banner) == ('banner', banner)
    assert jvm.parse('RATE 12.500\n') == ('rate', 12.5)
    assert jvm.parse('Traceback (most recent call last):\n') is None
