"""Render a benchmark result: a markdown report and PNG plots."""

import json
import os

__all__ = ['write']


def _fmt(stats, unit='s', scale=1.0):
    if not stats or stats.get('median') is None:
        return 'n/a'
    return '%.3g %s (%.3g-%.3g, n=%d)' % (
        stats['median'] * scale, unit, stats['min'] * scale,
        stats['max'] * scale, stats['n'])


def _plots(result, out_dir):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        return name

    ready = result['ready']
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(['cold boot', 'live clone'],
           [ready['cold_s']['median'], ready['clone_s']['median']],
           color=['#999999', '#2a7ab0'])
    ax.set_ylabel('seconds to workload ready (median)')
    ax.set_title('Time to ready: %.1fx' % ready['ratio_cold_over_clone'])
    files.append(save(fig, 'ready.png'))

    floor = result['restore_floor']
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = ['QEMU start\n(paused)', 'virsh restore', 'engine restore',
              'engine spawn\n+ identity']
    keys = ['start_paused_s', 'virsh_restore_s', 'engine_restore_s',
            'engine_spawn_with_identity_s']
    ax.bar(labels, [floor[k]['median'] for k in keys], color='#2a7ab0')
    ax.set_ylabel('seconds (median)')
    ax.set_title('Restore floor')
    files.append(save(fig, 'restore-floor.png'))

    rows = result['scale']
    fig, ax = plt.subplots(figsize=(5, 3.2))
    counts = [r['clones'] for r in rows]
    ax.plot(counts, [r['wall_s'] for r in rows], 'o-', label='wall, batch')
    ax.plot(counts, [r['per_clone_restore_s']['median'] for r in rows],
            's-', label='restore, per clone')
    ax.plot(counts, [r['per_clone_spawn_s']['median'] for r in rows],
            '^-', label='spawn + identity, per clone')
    ax.set_xlabel('concurrent clones')
    ax.set_ylabel('seconds')
    ax.set_xticks(counts)
    ax.legend()
    ax.set_title('Scale')
    files.append(save(fig, 'scale.png'))
    if result.get('size'):
        rows = result['size']
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for touched, label in ((False, 'idle guest'),
                               (True, 'a quarter of the RAM touched')):
            pts = [r for r in rows if bool(r['touched_mib']) == touched]
            ax.plot([r['ram_mib'] for r in pts],
                    [r['restore_s']['median'] for r in pts], 'o-',
                    label=label)
        ax.set_xlabel('guest RAM (MiB)')
        ax.set_ylabel('restore, seconds (median)')
        ax.legend()
        ax.set_title('Restore time against RAM')
        files.append(save(fig, 'restore-vs-ram.png'))
    return files


def markdown(result, plots=()):
    m = result['machine']
    g = result['guest']
    lines = ['# nova-live-snapshot benchmark%s' % (
        ' (quick)' if result['quick'] else ''), '',
        'Machine: %d CPUs, %s GiB, kernel %s, libvirt %s, QEMU %s, %s. '
        'Guest: %s MiB, %s vCPU, kernel %s.' % (
            m['cpus'], m['memory_gib'], m['kernel'], m['libvirt'], m['qemu'],
            m['accelerator'].upper(), g.get('memory_mib'), g.get('vcpus'),
            g.get('kernel_version')), '',
        'Medians (min-max, n) of repeated runs; both sides of every ratio '
        'were measured in the same run.', '']
    r = result['ready']
    lines += ['## Time to ready', '',
              '| | |', '|---|---|',
              '| cold boot to workload ready | %s |' % _fmt(r['cold_s']),
              '| clone (restore, re-identification) to workload ready | %s |'
              % _fmt(r['clone_s']),
              '| **ratio cold / clone** | **%.2f** |'
              % r['ratio_cold_over_clone'], '']
    f = result['restore_floor']
    lines += ['## Restore floor', '',
              '| | |', '|---|---|',
              '| QEMU start alone (domain created paused) | %s |'
              % _fmt(f['start_paused_s']),
              '| plain restore of an unmodified save image | %s |'
              % _fmt(f['virsh_restore_s']),
              '| engine restore (header rewrite, FIFO, define) | %s |'
              % _fmt(f['engine_restore_s']),
              '| engine spawn including re-identification | %s |'
              % _fmt(f['engine_spawn_with_identity_s']),
              '| **engine restore / plain restore** | **%.3f** |'
              % f['spawn_over_virsh_restore'], '']
    lines += ['## Capture', '', '| mode | source pause | capture total |',
              '|---|---|---|']
    for label, row in result['capture'].items():
        lines.append('| %s | %s | %s |' % (
            label, _fmt(row['pause_ms'], 'ms'), _fmt(row['capture_s'])))
    lines += ['', 'Live-mode pauses are QEMU\'s STOP-to-RESUME event '
              'timestamps; save mode stops the source for the whole save and '
              'restore, timed around both calls.', '']
    lines += ['## Scale', '',
              '| clones | wall | per-clone restore | per-clone spawn | '
              'RSS per clone | disk per clone | memory streams |',
              '|---|---|---|---|---|---|---|']
    for row in result['scale']:
        lines.append('| %d | %.2f s | %s | %s | %.0f MiB | %.3f MiB | %d |' % (
            row['clones'], row['wall_s'], _fmt(row['per_clone_restore_s']),
            _fmt(row['per_clone_spawn_s']), row['per_clone_rss_mib'],
            row['per_clone_disk_mib'], row['memory_stream_copies']))
    lines.append('')
    if result.get('size'):
        lines += ['## Size', '',
                  '| RAM | touched | memory image | pause | restore |',
                  '|---|---|---|---|---|']
        for row in result['size']:
            lines.append('| %d MiB | %d MiB | %.1f MiB | %.1f ms | %s |' % (
                row['ram_mib'], row['touched_mib'], row['memory_image_mib'],
                row['pause_ms'], _fmt(row['restore_s'])))
        lines.append('')
    if result.get('sshd_ready'):
        r = result['sshd_ready']
        lines += ['## Debian guest: until sshd answers', '',
                  '| | |', '|---|---|',
                  '| cold boot until sshd answers | %s |' % _fmt(r['cold_s']),
                  '| clone (restore, re-identification with new host keys, '
                  'DHCP) until sshd answers on its new address | %s |'
                  % _fmt(r['clone_s']),
                  '| **ratio cold / clone** | **%.2f** |'
                  % r['ratio_cold_over_clone'], '']
    for name in plots:
        lines += ['![%s](%s)' % (name, name), '']
    return '\n'.join(lines)


def write(result, out_dir):
    """Write ``result.json``, the plots and ``report.md`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=2, sort_keys=True)
    plots = _plots(result, out_dir)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write(markdown(result, plots))
    return out_dir
