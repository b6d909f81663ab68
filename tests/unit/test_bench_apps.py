"""How the application benchmarks read their drivers' output and decide
"warm" and "ready" (nova_live_snapshot.bench.apps)."""

from nova_live_snapshot.bench import apps


def _series(rates):
    return apps.Series(windows=[(100.0 + i, r) for i, r in enumerate(rates)])


def test_plateau_needs_the_rate_to_stop_growing():
    growing = _series([10, 20, 40, 80, 160, 320])
    assert growing.plateau(3) is None
    flat = _series([10, 20, 95, 100, 105, 98, 101, 103])
    assert flat.plateau(3) == 101


def test_plateau_needs_two_full_groups_of_windows():
    assert _series([100, 100, 100]).plateau(2) is None


def test_ready_is_the_first_window_at_the_threshold():
    series = _series([5, 50, 89, 91, 70, 95])
    assert series.first_at(90) == 103.0
    assert series.first_at(1000) is None


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
