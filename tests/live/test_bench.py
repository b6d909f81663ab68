"""The benchmark suite's smoke run: it measures every section and writes
its report. Benchmarks report, they do not judge: nothing here asserts a
speed, only that the suite ran and its numbers are coherent."""

import json
import os

import pytest

from nova_live_snapshot.bench import report
from nova_live_snapshot.bench import suite
from nova_live_snapshot import conf as conf_mod


@pytest.fixture(scope='module')
def quick(bed, debian_guest_dir, apps_guest_dir):
    """One quick run of the whole suite, the Debian and application
    sections included, and the directory its report was written to."""
    conf = conf_mod.derive(bed.conf,
                           image_dir=os.path.join(bed.root, 'bench-images'),
                           clone_dir=os.path.join(bed.root, 'bench-clones'))
    messages = []
    result = suite.run(conf, quick=True, progress=messages.append,
                       debian_guest_dir=debian_guest_dir,
                       netns=bed.netns, apps_guest_dir=apps_guest_dir)
    out = report.write(result, os.path.join(bed.root, 'bench-out'))
    with open(os.path.join(out, 'result.json')) as f:
        saved = json.load(f)
    assert messages and os.listdir(conf.clone_dir) == []
    return saved, out


def test_quick_benchmark_writes_a_complete_report(quick):
    saved, out = quick
    assert 'errors' not in saved, saved['errors']
    for key in ('ready_ratio_cold_over_clone', 'spawn_over_virsh_restore',
                'capture_pause_ms_median', 'scale',
                'ready_ratio_cold_over_clone_warm', 'warmup_s',
                'compression', 'jvm_ratio_cold_over_clone',
                'postgres_ratio_cold_over_clone'):
        assert saved[key] is not None, key
    assert [row['clones'] for row in saved['scale']] == [1, 2]
    # Both capture modes, memory on tmpfs and on disk.
    assert set(saved['capture']) == {
        'live_tmpfs', 'live_disk', 'save_tmpfs', 'save_disk'}
    for mode in saved['capture'].values():
        assert mode['pause_ms']['n'] == 2 and mode['pause_ms']['min'] > 0
    for row in saved['scale']:
        assert set(row) >= {'clones', 'wall_s', 'per_clone_rss_mib',
                            'per_clone_disk_mib'}
        # One memory stream on disk whatever the number of clones.
        assert row['memory_stream_copies'] == 1
        assert row['per_clone_rss_mib'] > 0
    sizes = [(row['ram_mib'], row['touched_mib']) for row in saved['size']]
    assert sizes == [(128, 0), (128, 32), (256, 0), (256, 64)]
    by = {key: row['memory_image_mib'] for key, row in zip(sizes,
                                                           saved['size'])}
    # Touched pages are in the memory image; untouched ones are not.
    assert by[(256, 64)] > by[(256, 0)] + 32
    assert by[(256, 0)] < 256
    for name in ('report.md', 'ready.png', 'restore-floor.png', 'scale.png',
                 'restore-vs-ram.png', 'ready-warm.png', 'ready-apps.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    text = open(os.path.join(out, 'report.md')).read()
    for heading in ('ratio cold / clone', 'Memory image compression',
                    'until sshd answers', 'warms up before it serves',
                    'Lazy against eager clones', 'warms up its JIT',
                    'PostgreSQL 15 with a warm buffer cache'):
        assert heading in text, heading


def test_compression_section_restored_every_format(quick):
    """Each format was restored by libvirt (a corrupt or misnamed stream
    fails the restore, and with it the run); compressed images are smaller
    than the raw one."""
    saved, _ = quick
    rows = {row['format']: row for row in saved['compression']}
    assert list(rows) == ['raw', 'lzop', 'gzip']
    for fmt, row in rows.items():
        assert row['restore_s']['n'] == 1 and row['restore_s']['min'] > 0
        if fmt != 'raw':
            assert 0 < row['size_mib'] < rows['raw']['size_mib'], fmt
            assert row['compress_s'] > 0


def test_warm_section_is_apart_from_the_plain_sshd_ratio(quick):
    """The warm-up is measured and reported on its own; the plain ratio is
    still the sshd one without any warm-up; clones resumed the warm process
    instead of warming up again."""
    saved, _ = quick
    warm, sshd = saved['warm_ready'], saved['sshd_ready']
    assert saved['ready_ratio_guest'] == 'debian, sshd'
    assert saved['ready_ratio_cold_over_clone'] == \
        sshd['ratio_cold_over_clone']
    assert saved['ready_ratio_cold_over_clone_warm'] == \
        warm['ratio_cold_over_clone']
    assert saved['warmup_s'] == warm['warmup_s']['median']
    assert warm['clones_resumed_source'] is True
    assert warm['entries'] > 0
    for key in ('cold_s', 'cold_boot_to_agent_s', 'warmup_s', 'clone_s'):
        assert warm[key]['n'] == suite.QUICK_GUEST_REPS, key
    # Each cold run contains its own boot and its own warm-up.
    assert warm['cold_s']['min'] > warm['warmup_s']['min']
    assert warm['cold_s']['min'] > warm['cold_boot_to_agent_s']['min']
    # The warm-up took at least most of the CPU time it was given.
    assert warm['warmup_s']['min'] >= 0.5 * warm['cpu_s']


def test_clone_profile_accounts_for_the_spawn(quick):
    """The Debian clones' spawn time splits into the restore, the eight
    re-identification steps and the agent round trips, which add up."""
    saved, _ = quick
    profile = saved['sshd_ready']['clone_profile']
    steps = {s['step']: s['seconds'] for s in profile['steps']}
    assert list(steps) == ['mac', 'entropy', 'hostname', 'ssh_host_keys',
                           'machine_id', 'clock', 'network', 'hooks']
    total = (profile['restore_s']['median']
             + sum(s['median'] for s in steps.values())
             + profile['agent_round_trips_s']['median'])
    assert profile['agent_round_trips_s']['min'] >= 0
    # Medians of sums are not sums of medians: only roughly equal.
    assert 0.5 * profile['spawn_s']['median'] < total \
        < 1.5 * profile['spawn_s']['median']
    assert profile['dhcp_wait_s']['n'] == suite.QUICK_GUEST_REPS
    assert profile['dhcp_wait_s']['max'] < steps['network']['max']


def test_lazy_section_measured_both_modes_and_shared_the_template(quick):
    """Both modes ran for both sizes; the lazy clones mapped one template
    (on tmpfs) and their own memory excludes it; the ratios are the ones
    the rows give."""
    saved, _ = quick
    lazy = saved['lazy']
    assert [r['ram_mib'] for r in lazy['rows']] == [128, 256]
    for row in lazy['rows']:
        for mode in ('eager', 'lazy'):
            assert row[mode]['clones'] == 2
            assert row[mode]['restore_s'] > 0
        assert row['eager']['template_tmpfs_mib'] == 0
        assert row['lazy']['template_tmpfs_mib'] > 0
        assert row['lazy']['state_load_s'] is not None
        # Both count the template once: the lazy total is the clones' own
        # memory plus the template.
        assert row['lazy']['host_total_mib'] == pytest.approx(
            2 * row['lazy']['own_mib_per_clone']
            + row['lazy']['template_tmpfs_mib'], abs=1)
    large = lazy['rows'][-1]
    assert lazy['host_memory_lazy_over_eager'] == pytest.approx(
        large['lazy']['host_total_mib'] / large['eager']['host_total_mib'],
        abs=0.001)


@pytest.mark.parametrize('app', ['jvm', 'postgres'])
def test_application_sections_are_coherent(quick, app):
    """Each application ran cold and from a clone (once each in a quick
    run); the cold time contains the boot, the start and the warm-up, in
    that order; every clone resumed its source's process (the JVM's token,
    the postmaster's start time) instead of starting it again; the ratio is
    the medians'."""
    saved, _ = quick
    r = saved['%s_ready' % app]
    assert r['app'] == app and r['warm_rate'] > 0
    for key in ('cold_s', 'cold_boot_to_agent_s',
                'cold_agent_to_first_answer_s', 'cold_warmup_s', 'clone_s',
                'cold_first_span_rate', 'clone_first_span_rate',
                'clone_first_answer_s'):
        assert r[key]['n'] == suite.QUICK_GUEST_REPS, key
    assert r['cold_boot_to_agent_s']['min'] > 0
    assert r['cold_agent_to_first_answer_s']['min'] > 0
    assert r['cold_warmup_s']['min'] >= 0
    assert r['cold_s']['min'] > r['cold_boot_to_agent_s']['min']
    assert r['clones_resumed_source'] is True
    # The warm rate is the source's own mean: its boot got there.
    assert r['source_reached_ready'] is True
    # A clone answers after its spawn and is ready no sooner.
    assert r['clone_first_answer_s']['min'] <= r['clone_s']['min']
    # A clone answered no sooner than its spawn (restore and
    # re-identification) ended.
    assert r['clone_first_answer_s']['min'] >= \
        r['clone_profile']['spawn_s']['min']
    assert r['ratio_cold_over_clone'] == pytest.approx(
        r['cold_s']['median'] / r['clone_s']['median'], abs=0.01)
    assert saved['%s_ratio_cold_over_clone' % app] == \
        r['ratio_cold_over_clone']
