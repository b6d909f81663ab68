"""The benchmark report renders the sections a run has, and only those
(``--sections``), with the application and restore-breakdown tables."""

from nova_live_snapshot.bench import report


def _stats(median):
    return {'median': median, 'min': median, 'max': median, 'n': 2}


def _app(name):
    return {
        'app': name, 'rate_unit': 'requests/s', 'window_s': 1.0,
        'ready_span_s': 5.0, 'warm_span_s': 20.0, 'warm_s': 75.0,
        'warm_min_s': 60, 'warm_max_s': 240,
        'ready_fraction': 0.9, 'warm_rate': 100.0, 'warm_growth': 1.02,
        'source_reached_ready': True, 'cold_s': _stats(120.0),
        'cold_boot_to_agent_s': _stats(20.0),
        'cold_agent_to_first_answer_s': _stats(10.0),
        'cold_warmup_s': _stats(90.0), 'cold_first_span_rate': _stats(5.0),
        'warm_over_cold_first_span': 20.0, 'clone_s': _stats(8.0),
        'clone_first_answer_s': _stats(7.0),
        'clone_first_span_rate': _stats(99.0),
        'clones_resumed_source': True, 'ratio_cold_over_clone': 15.0}


def test_a_run_of_the_application_sections_alone():
    result = {'quick': True, 'machine': {
        'cpus': 2, 'memory_gib': 24, 'kernel': 'k', 'libvirt': '9.0.0',
        'qemu': '7.2.0', 'accelerator': 'tcg'}, 'guest': {},
        'jvm_ready': _app('jvm'), 'postgres_ready': _app('postgres'),
        'errors': {'lazy': 'TimeoutError: x'}}
    text = report.markdown(result)
    assert 'warms up its JIT' in text and 'warm buffer cache' in text
    assert '| **ratio cold / clone** | **15.00** |' in text
    assert '* lazy: TimeoutError: x' in text
    assert 'Restore floor' not in text and 'Time to ready' not in text


def test_the_restore_floor_breakdown():
    floor = {'start_paused_s': _stats(0.3), 'virsh_restore_s': _stats(0.35),
             'engine_restore_s': _stats(0.5),
             'engine_spawn_with_identity_s': _stats(8.0),
             'spawn_over_virsh_restore': 1.43,
             'breakdown': {'fifo_restore_s': _stats(0.4),
                           'fifo_restore_link_toggle_s': _stats(0.45),
                           'define_s': _stats(0.02),
                           'fifo_over_file_s': 0.05, 'link_toggle_s': 0.05,
                           'rest_s': 0.03}}
    lines = report._core_lines({
        'ready': {'cold_s': _stats(6.0), 'clone_s': _stats(4.0),
                  'ratio_cold_over_clone': 1.5},
        'restore_floor': floor, 'capture': {}, 'scale': []})
    text = '\n'.join(lines)
    assert '| FIFO over file (medians) | 0.050 s |' in text
    assert '| link toggle (medians) | 0.050 s |' in text


def test_the_platforms_side_by_side():
    """Each platform's row names its libvirt and QEMU next to each save
    format it ran, so that no figure is read without its platform."""
    fmt = {'file_mib': 100.0, 'allocated_mib': 90.0,
           'save_s': _stats(1.0), 'restore_s': _stats(0.9)}
    result = {'quick': True, 'machine': {
        'cpus': 2, 'memory_gib': 24, 'kernel': 'k', 'libvirt': '9.0.0',
        'qemu': '7.2.0', 'accelerator': 'tcg'}, 'guest': {},
        'platforms': {'memory_mib': 1024, 'touched_mib': 512, 'platforms': {
            'stock': {'libvirt': '9.0.0', 'qemu': '7.2.22',
                      'formats': {'raw': fmt}},
            'next': {'libvirt': '11.3.0', 'qemu': '10.0.2',
                     'formats': {'raw': fmt, 'sparse': fmt}}}}}
    text = report.markdown(result)
    assert '| stock (libvirt 9.0.0, QEMU 7.2.22) | raw |' in text
    assert '| next (libvirt 11.3.0, QEMU 10.0.2) | sparse |' in text
    assert '1024 MiB with 512 MiB of random data' in text
