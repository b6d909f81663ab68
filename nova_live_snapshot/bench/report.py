"""Render a benchmark result: a markdown report and PNG plots."""

import json
import os

__all__ = ['write', 'write_json']


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

    if result.get('ready'):
        files += _core_plots(plt, result, save)
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
    if result.get('warm_ready'):
        files.append(save(_warm_plot(plt, result), 'ready-warm.png'))
    if result.get('jvm_ready') or result.get('postgres_ready'):
        files.append(save(_apps_plot(plt, result), 'ready-apps.png'))
    return files


def _core_plots(plt, result, save):
    """Busybox time to ready, the restore floor and scale."""
    files = []
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
    return files


def _apps_plot(plt, result):
    """Per application: cold boot split into boot-to-agent, start (until
    the first answer) and warm-up (until 90 % of the warm throughput),
    beside the clone."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    labels, boot, start, warm, clone = [], [], [], [], []
    titles = []
    for app in ('jvm', 'postgres'):
        r = result.get('%s_ready' % app)
        if not r:
            continue
        labels += ['%s: cold boot\n+ start + warm-up' % app,
                   '%s: clone\n(captured warm)' % app]
        agent = r['cold_boot_to_agent_s']['median']
        first = r['cold_agent_to_first_answer_s']['median']
        boot += [agent, 0]
        start += [first, 0]
        warm += [max(0.0, r['cold_s']['median'] - agent - first), 0]
        clone += [0, r['clone_s']['median']]
        titles.append('%s %.1fx' % (app, r['ratio_cold_over_clone']))
    ax.bar(labels, boot, color='#999999', label='boot (until the agent '
           'answers)')
    ax.bar(labels, start, bottom=boot, color='#cccccc',
           label='start (until the first answer)')
    ax.bar(labels, warm, bottom=[b + s for b, s in zip(boot, start)],
           color='#d08c2a', label='warm-up (until 90 % of warm throughput)')
    ax.bar(labels, clone, color='#2a7ab0', label='clone: restore, '
           're-identification, 90 % of warm throughput')
    ax.set_ylabel('seconds (median)')
    ax.set_title('Applications to ready: %s' % ', '.join(titles))
    ax.legend(fontsize='x-small')
    ax.tick_params(axis='x', labelsize='small')
    return fig


def _warm_plot(plt, result):
    """Cold boot split into boot-to-agent, warm-up and the rest, beside
    the clone, for both Debian comparisons."""
    warm, sshd = result['warm_ready'], result.get('sshd_ready')
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    labels, boot, warmup, rest, clone = [], [], [], [], []
    if sshd:
        labels += ['cold boot\nto sshd', 'clone\nto sshd']
        boot += [sshd['cold_s']['median'], 0]
        warmup += [0, 0]
        rest += [0, 0]
        clone += [0, sshd['clone_s']['median']]
    agent = warm['cold_boot_to_agent_s']['median']
    up = warm['warmup_s']['median']
    labels += ['cold boot\n+ warm-up\nto serving', 'clone\n(captured warm)\n'
               'to serving']
    boot += [agent, 0]
    warmup += [up, 0]
    rest += [max(0.0, warm['cold_s']['median'] - agent - up), 0]
    clone += [0, warm['clone_s']['median']]
    ax.bar(labels, boot, color='#999999', label='boot (until the agent '
           'answers)')
    ax.bar(labels, warmup, bottom=boot, color='#d08c2a',
           label='warm-up (%g s of CPU)' % warm['cpu_s'])
    ax.bar(labels, rest, bottom=[b + w for b, w in zip(boot, warmup)],
           color='#cccccc', label='rest (boot, DHCP, first answer)')
    ax.bar(labels, clone, color='#2a7ab0', label='clone: restore, '
           're-identification')
    ax.set_ylabel('seconds (median)')
    ax.set_title('Debian: %s with the warm-up%s' % (
        '%.1fx' % warm['ratio_cold_over_clone'],
        ', %.1fx without' % sshd['ratio_cold_over_clone'] if sshd else ''))
    ax.legend(fontsize='x-small')
    ax.tick_params(axis='x', labelsize='small')
    return fig


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
    if result.get('errors'):
        lines += ['## Sections that failed', ''] + [
            '* %s: %s' % item for item in sorted(result['errors'].items())]
        lines.append('')
    if result.get('ready'):
        lines += _core_lines(result)
    if result.get('size'):
        lines += ['## Size', ''] + _table(
            ('RAM', 'touched', 'memory image', 'pause', 'restore'),
            [('%d MiB' % r['ram_mib'], '%d MiB' % r['touched_mib'],
              '%.1f MiB' % r['memory_image_mib'], '%.1f ms' % r['pause_ms'],
              _fmt(r['restore_s'])) for r in result['size']])
    if result.get('compression'):
        lines += ['## Memory image compression', ''] + _table(
            ('format', 'memory image', 'compression', 'restore'),
            [(r['format'], '%.1f MiB' % r['size_mib'],
              '%.2f s' % r['compress_s'], _fmt(r['restore_s']))
             for r in result['compression']])
        lines += ['An idle busybox guest of %s MiB, saved raw once. The '
                  'engine has no compression option and libvirt compresses '
                  'only when qemu.conf sets `save_image_format` for the whole '
                  'daemon, so the QEMU stream was compressed with the program '
                  'libvirt runs (`<format> -c`, through a pipe) under a header '
                  'that names the format; libvirt\'s own restore read each '
                  'image, piping it through `<format> -dc` into QEMU.'
                  % g.get('memory_mib'), '']
    if result.get('lazy'):
        lazy = result['lazy']
        lines += ['## Lazy against eager clones', ''] + _table(
            ('RAM (half touched)', 'memory image', 'QEMU start alone',
             'eager restore', 'lazy restore', 'of which state load',
             'lazy first spawn (template build)', 'host memory, %d eager'
             % lazy['rows'][0]['eager']['clones'],
             'host memory, %d lazy (template)'
             % lazy['rows'][0]['lazy']['clones']),
            [('%d MiB' % r['ram_mib'], '%.1f MiB' % r['memory_image_mib'],
              '%.3f s' % r['qemu_start_s'],
              '%.3f s' % r['eager']['restore_s'],
              '%.3f s' % r['lazy']['restore_s'],
              '%s s' % r['lazy']['state_load_s'],
              '%.2f s' % r['lazy']['first_spawn_s'],
              '%.0f MiB' % r['eager']['host_total_mib'],
              '%.0f MiB (%.0f)' % (r['lazy']['host_total_mib'],
                                   r['lazy']['template_tmpfs_mib']))
             for r in lazy['rows']])
        lines += ['Lazy restore of the largest guest over the smallest: '
                  '**%.2f** (target at most 1.2). Host memory of the '
                  'concurrent lazy clones over the eager ones, largest '
                  'guest: **%.3f** (target at most 0.25). Restores are '
                  'medians of exact copies (no re-identification); host '
                  'memory is each clone\'s PSS without the template\'s '
                  'shared pages, plus the template on tmpfs once.'
                  % (lazy['spawn_ratio_largest_over_smallest'],
                     lazy['host_memory_lazy_over_eager']), '']
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
        lines += _profile_lines(r.get('clone_profile'))
    if result.get('warm_ready'):
        r = result['warm_ready']
        lines += ['## Debian guest: a workload that warms up before it '
                  'serves', '',
                  'The workload fills a cache of SHA-256 chains in memory for '
                  '%g s of CPU, then serves one line per TCP connection. It is '
                  'started through the guest agent as soon as the agent '
                  'answers; the source is captured once it serves.'
                  % r['cpu_s'], '',
                  '| | |', '|---|---|',
                  '| cold: boot until the agent answers | %s |'
                  % _fmt(r['cold_boot_to_agent_s']),
                  '| cold: the warm-up itself (start to serving, as the '
                  'workload measured it) | %s |' % _fmt(r['warmup_s']),
                  '| cold boot and warm-up until the workload serves | %s |'
                  % _fmt(r['cold_s']),
                  '| clone (captured warm) until the workload serves on its '
                  'new address | %s |' % _fmt(r['clone_s']),
                  '| every clone answered with its source\'s token (resumed, '
                  'not warmed up again) | %s |'
                  % ('yes' if r['clones_resumed_source'] else '**no**'),
                  '| **ratio cold / clone, with the warm-up** | **%.2f** |'
                  % r['ratio_cold_over_clone'], '']
        if result.get('sshd_ready'):
            lines += ['The same guest without the warm-up (previous '
                      'section): %.2f.'
                      % result['sshd_ready']['ratio_cold_over_clone'], '']
    for app in ('jvm', 'postgres'):
        if result.get('%s_ready' % app):
            lines += _app_lines(result['%s_ready' % app])
    if result.get('platforms'):
        lines += _platform_lines(result['platforms'])
    for name in plots:
        lines += ['![%s](%s)' % (name, name), '']
    return '\n'.join(lines)


def _platform_lines(r):
    """Save and restore per platform and save format, side by side."""
    rows = []
    for label, p in r['platforms'].items():
        for fmt, f in p['formats'].items():
            platform = '%s (libvirt %s, QEMU %s)' % (
                label, p['libvirt'], p['qemu'])
            size = '%.1f MiB (%.1f on disk)' % (f['file_mib'],
                                                f['allocated_mib'])
            rows.append((platform, fmt, size, _fmt(f['save_s']),
                         _fmt(f['restore_s'])))
    return ['## Platforms: plain save and restore', ''] + _table(
        ('platform', 'save format', 'save file', 'virsh save',
         'virsh restore'), rows) + [
        'A busybox guest of %d MiB with %d MiB of random data in a tmpfs, '
        'one per platform, saved and restored in turn in the same rounds.'
        % (r['memory_mib'], r['touched_mib']), '']


def _core_lines(result):
    """Busybox time to ready, restore floor, capture and scale."""
    lines = []
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
    b = f.get('breakdown')
    if b:
        lines += ['Where the engine\'s restore spends more than a plain one '
                  '(the plain save image restored again, one engine part '
                  'added at a time, in the same rounds):', '',
                  ] + _table(('part', 'time'), [
                      ('restore through the engine\'s FIFO feeder (header '
                       'rewritten, stream spliced)',
                       _fmt(b['fifo_restore_s'])),
                      ('the same, paused, link forced down, resumed',
                       _fmt(b['fifo_restore_link_toggle_s'])),
                      ('define (the persistent definition)',
                       _fmt(b['define_s'])),
                      ('FIFO over file (medians)',
                       '%.3f s' % b['fifo_over_file_s']),
                      ('link toggle (medians)', '%.3f s' % b['link_toggle_s']),
                      ('rest of the engine restore (XML preparation, '
                       'lookups)', '%.3f s' % b['rest_s'])])
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
    return lines


_APP_TITLES = {
    'jvm': ('a JVM service that warms up its JIT',
            'The Java service (tools/apps-guest/java/JitService.java) runs '
            'the same pure-Java hot path per request; one client in the test '
            'network\'s namespace sends one request after the other.'),
    'postgres': ('PostgreSQL 15 with a warm buffer cache',
                 'pgbench -S (select only, one client) from the host\'s '
                 'postgresql-client in the test network\'s namespace, '
                 'against the guest\'s pgbench data set.'),
}


def _app_lines(r):
    title, how = _APP_TITLES[r['app']]
    unit = r['rate_unit']
    lines = ['## Apps guest: %s' % title, '',
             '%s Rates per %g s window. The source ran under load for %g s '
             'from its first answer (at least %g, at most %g, until its rate '
             'stopped growing); its mean rate over the last %g s, '
             '%.1f %s, is the warm throughput (%.2f times the %g s before '
             'it). Ready: the start of the first %g s whose mean rate is '
             'at %d %% of the warm throughput or above. The service starts '
             'through the guest agent as soon as the agent answers; the '
             'source is captured warm.' % (
                 how, r['window_s'], r['warm_s'], r['warm_min_s'],
                 r['warm_max_s'], r['warm_span_s'],
                 r['warm_rate'], unit, r['warm_growth'] or 0,
                 r['warm_span_s'], r['ready_span_s'],
                 100 * r['ready_fraction']), '',
             ] + _table(('', ''), [
                 ('cold: boot until the agent answers',
                  _fmt(r['cold_boot_to_agent_s'])),
                 ('cold: start until the first answer',
                  _fmt(r['cold_agent_to_first_answer_s'])),
                 ('cold: warm-up, first answer to ready',
                  _fmt(r['cold_warmup_s'])),
                 ('cold: rate over the first %g s' % r['ready_span_s'],
                  _fmt(r['cold_first_span_rate'], unit)),
                 ('warm rate over the cold first %g s' % r['ready_span_s'],
                  str(r['warm_over_cold_first_span'])),
                 ('cold boot, start and warm-up until ready',
                  _fmt(r['cold_s'])),
                 ('clone (captured warm): spawn start to its first answer',
                  _fmt(r['clone_first_answer_s'])),
                 ('clone until ready on its new address', _fmt(r['clone_s'])),
                 ('clone: rate over its first %g s' % r['ready_span_s'],
                  _fmt(r['clone_first_span_rate'], unit)),
                 ('every clone resumed its source\'s process',
                  'yes' if r['clones_resumed_source'] else '**no**'),
                 ('**ratio cold / clone**',
                  '**%.2f**' % r['ratio_cold_over_clone'])])
    return lines + _profile_lines(r.get('clone_profile'))


def _table(heads, rows):
    """A markdown table, then an empty line."""
    return (['| %s |' % ' | '.join(heads), '|%s' % ('---|' * len(heads))]
            + ['| %s |' % ' | '.join(row) for row in rows] + [''])


def _profile_lines(profile):
    """Where the clones' spawn time went."""
    if not profile:
        return []
    lines = ['Where a clone\'s spawn went (%s in all): ' % _fmt(
        profile['spawn_s']), '',
        '| part | time |', '|---|---|',
        '| restore (header, FIFO, QEMU start, define) | %s |'
        % _fmt(profile['restore_s'])]
    for step in profile['steps']:
        lines.append('| re-identification: %s | %s |' % (
            step['step'], _fmt(step['seconds'])))
    lines += ['| agent round trips and host side | %s |'
              % _fmt(profile['agent_round_trips_s']),
              '| of the network step: waiting for the DHCP server\'s '
              'lease | %s |' % _fmt(profile['dhcp_wait_s']), '',
              'Step times are the guest\'s own (its uptime around each '
              'step), plus the host\'s link change for the network step.', '']
    return lines


def write_json(result, out_dir):
    """Write ``result.json`` alone (a checkpoint during a run)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'result.json')
    with open(path + '.part', 'w') as f:
        json.dump(result, f, indent=2, sort_keys=True)
    os.replace(path + '.part', path)


def write(result, out_dir):
    """Write ``result.json``, the plots and ``report.md`` into ``out_dir``."""
    write_json(result, out_dir)
    plots = _plots(result, out_dir)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write(markdown(result, plots))
    return out_dir
