"""The benchmark suite's smoke run: it measures every section and writes
its report. Benchmarks report, they do not judge: nothing here asserts a
speed, only that the suite ran and its numbers are coherent."""

import json
import os

from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot.bench import report
from nova_live_snapshot.bench import suite


def test_quick_benchmark_writes_a_complete_report(bed):
    conf = conf_mod.derive(bed.conf,
                           image_dir=os.path.join(bed.root, 'bench-images'),
                           clone_dir=os.path.join(bed.root, 'bench-clones'))
    messages = []
    result = suite.run(conf, quick=True, progress=messages.append)
    out = report.write(result, os.path.join(bed.root, 'bench-out'))

    with open(os.path.join(out, 'result.json')) as f:
        saved = json.load(f)
    for key in ('ready_ratio_cold_over_clone', 'spawn_over_virsh_restore',
                'capture_pause_ms_median', 'scale'):
        assert saved[key] is not None, key
    assert [row['clones'] for row in saved['scale']] == [1, 2]
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
                 'restore-vs-ram.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert 'ratio cold / clone' in open(os.path.join(out, 'report.md')).read()
    assert messages and os.listdir(conf.clone_dir) == []
