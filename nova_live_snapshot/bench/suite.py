"""The benchmark suite: what is measured, and how.

Each measurement returns plain data; :func:`run` assembles the result that
``--json`` prints and :mod:`nova_live_snapshot.bench.report` renders.
"""

import contextlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import time
import uuid as uuidlib

from nova_live_snapshot.bench import apps as apps_mod
from nova_live_snapshot.bench import lazy as lazy_mod
from nova_live_snapshot.bench import platforms as platforms_mod
from nova_live_snapshot.bench import workload
from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import restore as restore_mod
from nova_live_snapshot import saveimage
from nova_live_snapshot import testbed
from nova_live_snapshot import waiting

__all__ = ['SECTIONS', 'run']

LOG = logging.getLogger(__name__)


# Cold boots and clones of the Debian and apps guests in a quick run: one
# each. The quick run is the test suite's smoke run of every section, where
# each repetition of these four sections costs minutes under TCG; the
# figures worth quoting come from full runs (three each).
QUICK_GUEST_REPS = 1


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return {'median': None, 'min': None, 'max': None, 'n': 0}
    return {'median': round(statistics.median(values), 4),
            'min': round(min(values), 4), 'max': round(max(values), 4),
            'n': len(values)}


def _rss_mib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return None


def _allocated_mib(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_blocks * 512
    return total / 2 ** 20


class Bench:
    """One benchmark session: an engine on scratch directories and the
    test guest; everything it makes is removed by :meth:`close`."""

    def __init__(self, conf, progress):
        self.conf = conf
        self.progress = progress
        self.engine = engine_mod.Engine(conf)
        self.host = self.engine.host
        self.tag = uuidlib.uuid4().hex[:6]
        work = os.path.join(os.path.dirname(conf.image_dir.rstrip('/')),
                            'bench')
        self.guest_image = testbed.TestGuest(conf.test_guest_dir, work,
                                             network=conf.clone_network)
        self.sources = []
        self.images = []

    def name(self, what):
        return 'nlsb-%s-%s-%s' % (self.tag, what, uuidlib.uuid4().hex[:4])

    def boot_ready(self, what='src', memory_mib=None, guest_image=None):
        guest_image = guest_image or self.guest_image
        name = self.name(what)
        started = time.monotonic()
        guest = guest_image.boot(self.host, name, memory_mib=memory_mib)
        self.sources.append(name)
        testbed.wait_ready(guest, timeout=300)
        return guest, time.monotonic() - started

    def capture(self, guest, engine=None):
        eng = engine or self.engine
        result = eng.capture(guest.name, self.name('img'))
        self.images.append((eng, result.image.name))
        return result

    def close(self):
        for eng, image in self.images:
            with contextlib.suppress(Exception):
                eng.delete_image(image, destroy_clones=True)
        for name in self.sources:
            self.guest_image.remove(self.host, name)

    def drop_source(self, guest):
        self.guest_image.remove(self.host, guest.name)
        self.sources.remove(guest.name)

    # Measurements ----------------------------------------------------------

    def ready(self, image_name, source_cold_s, reps):
        """Cold boot to workload-ready against clone to workload-ready
        (restore, full re-identification, workload answering)."""
        clone_s = []
        for _ in range(reps):
            started = time.monotonic()
            (clone,) = self.engine.spawn(image_name)
            guest = self.host.lookup(clone.name)
            testbed.read_workload(guest)
            clone_s.append(time.monotonic() - started)
            self.engine.destroy(clone.name)
        cold_s = [source_cold_s]
        for _ in range(reps - 1):
            guest, seconds = self.boot_ready('cold')
            cold_s.append(seconds)
            self.guest_image.remove(self.host, guest.name)
            self.sources.remove(guest.name)
        return {'cold_s': _stats(cold_s), 'clone_s': _stats(clone_s),
                'ratio_cold_over_clone': round(
                    statistics.median(cold_s) / statistics.median(clone_s),
                    2)}

    def restore_floor(self, image_name, reps):
        """The engine's restore against a plain restore of an unmodified
        save image of the same guest, and against starting it paused; one
        of each per round, so that all see the same load."""
        engine_s, spawn_s, plain_s, paused_s = [], [], [], []
        parts = {'fifo': [], 'fifo_link_toggle': [], 'define': []}
        # A plain save image: save a source, then restore it as it is.
        guest, _ = self.boot_ready('plain')
        save_path = os.path.join(self.guest_image.work_dir, guest.name,
                                 'plain.save')
        fifo_dir = os.path.dirname(save_path)
        for _ in range(reps):
            (clone,) = self.engine.spawn(image_name, exact_copy=True)
            engine_s.append(clone.restore_s)
            self.engine.destroy(clone.name)
            guest.save(save_path)
            started = time.monotonic()
            self.host.restore(save_path)
            plain_s.append(time.monotonic() - started)
            guest = self.host.lookup(guest.name)
            guest = self._restore_parts(guest, save_path, fifo_dir, parts)
            # The same domain (own overlay and log), started paused: QEMU's
            # start-up, which every restore pays too.
            name = self.name('paused')
            started = time.monotonic()
            self.guest_image.boot(self.host, name, paused=True)
            paused_s.append(time.monotonic() - started)
            self.guest_image.remove(self.host, name)
            (clone,) = self.engine.spawn(image_name)
            spawn_s.append(clone.spawn_s)
            self.engine.destroy(clone.name)
        os.unlink(save_path)
        eng, plain, paused = (statistics.median(engine_s),
                              statistics.median(plain_s),
                              statistics.median(paused_s))
        fifo, toggle, define = (statistics.median(parts[k]) for k in
                                ('fifo', 'fifo_link_toggle', 'define'))
        return {'breakdown': {
                    # The engine's restore, one part at a time, each added
                    # to a plain restore of the same save image.
                    'fifo_restore_s': _stats(parts['fifo']),
                    'fifo_restore_link_toggle_s': _stats(
                        parts['fifo_link_toggle']),
                    'define_s': _stats(parts['define']),
                    'fifo_over_file_s': round(fifo - plain, 3),
                    'link_toggle_s': round(toggle - fifo, 3),
                    'rest_s': round(eng - toggle - define, 3)},
                'engine_restore_s': _stats(engine_s),
                'engine_spawn_with_identity_s': _stats(spawn_s),
                'virsh_restore_s': _stats(plain_s),
                'start_paused_s': _stats(paused_s),
                'spawn_over_virsh_restore': round(eng / plain, 3),
                'engine_above_floor_s': round(eng - plain, 3),
                'virsh_restore_above_qemu_start_s': round(plain - paused, 3)}

    def _restore_parts(self, guest, save_path, fifo_dir, parts):
        """Restore the plain save image again as the engine restores a
        clone, one part more each time: through the engine's FIFO feeder
        (header rewritten, the stream spliced; the same XML), then also
        paused with the link toggled down and resumed, then the define the
        engine makes; returns the running domain."""
        with open(save_path, 'rb') as f:
            save = saveimage.read(f, os.fstat(f.fileno()).st_size,
                                  save_path)
        mac = guest.interface_macs()[0]
        for key, paused in (('fifo', False), ('fifo_link_toggle', True)):
            guest.destroy()
            started = time.monotonic()
            restore_mod.restore_stream(self.host, 'floor', save,
                                       save.domain_xml, save_path, fifo_dir,
                                       timeout=120, paused=paused)
            guest = self.host.lookup(guest.name)
            if paused:
                guest.force_link_down(mac)
                guest.resume()
            parts[key].append(time.monotonic() - started)
        guest.set_link_up(mac)
        xml = guest.xml()
        started = time.monotonic()
        self.host.define(xml)
        parts['define'].append(time.monotonic() - started)
        guest.undefine()
        return guest

    def capture_pause(self, guest, reps):
        """Pause of the source per capture mode and memory placement.

        ``guest`` serves the first variant; each other variant captures a
        fresh source of its own: every capture of one source adds a layer
        to its overlay's name, and libvirt 9.0 then refuses a path that
        long ("File name too long") after about twenty captures."""
        variants = {
            'live_tmpfs': {},
            'live_disk': {'memory_staging': 'never'},
            'save_tmpfs': {'capture_mode': 'save'},
            'save_disk': {'capture_mode': 'save', 'memory_staging': 'never'},
        }
        out = {}
        for i, (label, overrides) in enumerate(variants.items()):
            if i:
                guest, _ = self.boot_ready('cap')
            eng = self.engine_for(**overrides)
            pauses, totals = [], []
            for _ in range(reps):
                result = self.capture(guest, engine=eng)
                pauses.append(result.pause_ms)
                totals.append(result.duration_s)
                eng.delete_image(result.image.name)
                self.images.pop()
            out[label] = {'pause_ms': _stats(pauses),
                          'capture_s': _stats(totals)}
            if i:
                self.drop_source(guest)
        return out

    def size(self, sizes, reps):
        """Restore time against guest RAM and against touched memory.

        For each RAM size a guest boots, optionally fills a quarter of its
        RAM with random data in tmpfs (touched pages cannot be left out of the
        memory image), is captured, and exact copies are restored.
        """
        rows = []
        for ram in sizes:
            for touched in (0, ram // 4):
                guest, _ = self.boot_ready('ram%d' % ram, memory_mib=ram)
                if touched:
                    rc, _, err = guest.agent_exec(
                        ['/bin/sh', '-c', 'dd if=/dev/urandom of=/run/fill '
                         'bs=1048576 count=%d 2>&1' % touched], timeout=300)
                    if rc != 0:
                        raise RuntimeError('filling guest memory: %s' % err)
                result = self.capture(guest)
                restore_s = []
                for _ in range(reps):
                    (clone,) = self.engine.spawn(result.image.name,
                                                 exact_copy=True)
                    restore_s.append(clone.restore_s)
                    self.engine.destroy(clone.name)
                rows.append({
                    'ram_mib': ram, 'touched_mib': touched,
                    'memory_image_mib': round(
                        result.image.manifest.files['memory']['size']
                        / 2 ** 20, 1),
                    'pause_ms': round(result.pause_ms, 1),
                    'capture_s': round(result.duration_s, 3),
                    'restore_s': _stats(restore_s)})
                self.engine.delete_image(result.image.name)
                self.images.pop()
                self.drop_source(guest)
        return rows

    def debian(self, guest_dir):
        return testbed.TestGuest(guest_dir, self.guest_image.work_dir,
                                 network=self.conf.clone_network)

    def side_by_side(self, image, reps, what, booted, spawned,
                     captured=None):
        """Cold boots of ``image`` against clones, interleaved so that both
        sides see the same load on a shared host: boot, capture that boot
        (then drop it), then clone, boot, clone... ``booted(guest,
        started)`` and ``spawned(clone, started)`` wait until the guest
        serves and return a value; ``captured(source)`` runs before the
        capture.

        Boots and the source never run together: every boot of the Debian
        guest has the same machine-id, hence the same DHCP client
        identifier and address.

        :returns: (cold seconds, booted values, clone seconds, spawned
            values)
        """
        cold_s, cold, clone_s, clones = [], [], [], []

        def boot():
            name = self.name(what)
            started = time.monotonic()
            guest = image.boot(self.host, name)
            self.sources.append(name)
            cold.append(booted(guest, started))
            cold_s.append(time.monotonic() - started)
            return guest

        source = boot()
        if captured is not None:
            captured(source)
        captured_image = self.capture(source).image
        self.drop_source(source)
        for i in range(reps):
            started = time.monotonic()
            (clone,) = self.engine.spawn(captured_image.name)
            try:
                clones.append(spawned(clone, started))
                clone_s.append(time.monotonic() - started)
            finally:
                self.engine.destroy(clone.name)
            if i < reps - 1:
                self.drop_source(boot())
        self.engine.delete_image(captured_image.name)
        self.images.pop()
        return cold_s, cold, clone_s, clones

    def sshd_ready(self, guest_dir, netns, reps):
        """On the Debian guest: cold boot until sshd answers, against clone
        spawn (restore and re-identification, new host keys included) until
        sshd answers on the clone's new address."""
        debian = self.debian(guest_dir)

        def booted(guest, started):
            addr = waiting.wait_for(guest.leased_ipv4, 300, interval=0.2,
                                    what='a DHCP lease for %s' % guest.name)
            return workload.wait_banner(netns, addr, 22, 'SSH-',
                                        started + 300)

        def spawned(clone, started):
            addr = clone.identity['facts']['ipv4'].split('/')[0]
            workload.wait_banner(netns, addr, 22, 'SSH-', started + 300)
            return clone

        cold_s, _, clone_s, clones = self.side_by_side(
            debian, reps, 'deb', booted, spawned,
            captured=lambda source: testbed.wait_ready(source, timeout=120))
        return {'cold_s': _stats(cold_s), 'clone_s': _stats(clone_s),
                'ratio_cold_over_clone': round(
                    statistics.median(cold_s) / statistics.median(clone_s),
                    2),
                'clone_profile': _clone_profile(clones)}

    def warm_ready(self, guest_dir, netns, reps, cpu_s):
        """On the Debian guest, with a workload that warms up in memory for
        ``cpu_s`` seconds of CPU before it serves: cold boot, warm-up and
        serving, against a clone of a source captured once it served.

        The workload starts through the guest agent as soon as the agent
        answers (as an application starts at boot); its own warm-up time
        (start to serving) is reported apart.
        """
        debian = self.debian(guest_dir)
        agent_s, cold = [], []

        def booted(guest, started):
            waiting.wait_for(lambda: guest.agent_ping(timeout=2), 300,
                             interval=0.2, what='the agent of %s'
                             % guest.name)
            agent_s.append(time.monotonic() - started)
            workload.start_warm(guest, cpu_s)
            addr = waiting.wait_for(guest.leased_ipv4, 300, interval=0.2,
                                    what='a DHCP lease for %s' % guest.name)
            cold.append(workload.parse_warm(workload.wait_banner(
                netns, addr, workload.WARM_PORT,
                workload.warm_prefix(guest.name),
                started + 300 + 20 * cpu_s)))
            return cold[-1]

        def spawned(clone, started):
            # A clone answers with its source's label: the first boot's.
            addr = clone.identity['facts']['ipv4'].split('/')[0]
            banner = workload.parse_warm(workload.wait_banner(
                netns, addr, workload.WARM_PORT,
                workload.warm_prefix(cold[0].label), started + 300))
            return clone, banner

        cold_s, _, clone_s, results = self.side_by_side(
            debian, reps, 'warm', booted, spawned)
        clones, resumed = zip(*results)
        return {'cpu_s': cpu_s,
                'cold_s': _stats(cold_s),
                'cold_boot_to_agent_s': _stats(agent_s),
                'warmup_s': _stats([b.warmup_s for b in cold]),
                'clone_s': _stats(clone_s),
                'entries': cold[0].entries,
                # Every clone answered with its source's token (the first
                # boot's): it resumed the warm process, it did not warm up
                # again.
                'clones_resumed_source': all(b == cold[0] for b in resumed),
                'ratio_cold_over_clone': round(
                    statistics.median(cold_s) / statistics.median(clone_s),
                    2),
                'clone_profile': _clone_profile(clones)}

    def app_ready(self, guest_dir, netns, app_name, reps, warm_s,
                  warm_max_s):
        """On the apps guest, a real application (:mod:`.apps`): cold boot,
        start through the agent once it answers, and warm-up under load
        until the service answers at 90 % of its warm throughput, against a
        clone of a source captured warm, until the clone answers at that
        rate on its new address. The source runs under load from its first
        answer for at least ``warm_s`` seconds and until its rate stopped
        growing (the mean of its last :data:`.apps.WARM_SPAN_S` seconds at
        most :data:`.apps.WARM_GROWTH` times that of the span before), or
        ``warm_max_s``; that mean is the warm throughput every later cold
        boot and every clone is timed against, from outside the guest.
        """
        image = self.debian(guest_dir)
        app = apps_mod.APPS[app_name](image.meta['apps'][app_name])
        ref, cold = {}, []
        span = apps_mod.READY_SPAN_S

        def ready(threshold):
            return lambda s: s.ready_at(threshold, span) is not None

        def warmed(series):
            if series.elapsed() < warm_s:
                return False
            growth = series.growth(apps_mod.WARM_SPAN_S)
            return (growth is not None and growth <= apps_mod.WARM_GROWTH
                    or series.elapsed() >= warm_max_s)

        def booted(guest, started):
            wall0 = time.time() - (time.monotonic() - started)
            waiting.wait_for(lambda: guest.agent_ping(timeout=2), 600,
                             interval=0.2, what='the agent of %s'
                             % guest.name)
            agent_at = time.time()
            app.start(guest)
            addr = waiting.wait_for(guest.leased_ipv4, 300, interval=0.2,
                                    what='a DHCP lease for %s' % guest.name)
            deadline = time.monotonic() + 600 + warm_max_s
            if not ref:
                series = app.drive(netns, addr, guest.name, warmed,
                                   deadline)
                ref.update(rate=series.mean_rate(apps_mod.WARM_SPAN_S),
                           growth=series.growth(apps_mod.WARM_SPAN_S),
                           label=guest.name,
                           marker=app.resumed_marker(series, netns, addr))
                ref['warmed_s'] = series.elapsed()
                self.progress('%s: %.1f %s after %.0f s under load (the '
                              'last %.0f s over the %.0f s before: %.2f)' % (
                                  app_name, ref['rate'], app.rate_unit,
                                  ref['warmed_s'], apps_mod.WARM_SPAN_S,
                                  apps_mod.WARM_SPAN_S, ref['growth'] or 0))
            else:
                series = app.drive(netns, addr, guest.name, ready(
                    apps_mod.READY_FRACTION * ref['rate']), deadline)
            ready_at = series.ready_at(apps_mod.READY_FRACTION * ref['rate'],
                                       span)
            first_at = series.windows[0][0] - app.window_s
            cold.append({'ready_s': (ready_at or series.windows[-1][0])
                         - wall0,
                         'reached': ready_at is not None,
                         'agent_s': agent_at - wall0,
                         'first_answer_s': first_at - wall0,
                         'first_rate': series.first_rate(span)})
            return cold[-1]

        def spawned(clone, started):
            wall0 = time.time() - (time.monotonic() - started)
            addr = clone.identity['facts']['ipv4'].split('/')[0]
            threshold = apps_mod.READY_FRACTION * ref['rate']
            series = app.drive(netns, addr, ref['label'], ready(threshold),
                               time.monotonic() + 600)
            return clone, {
                'ready_s': series.ready_at(threshold, span) - wall0,
                'first_answer_s': series.windows[0][0] - app.window_s
                - wall0,
                'first_rate': series.first_rate(span),
                'resumed': app.resumed_marker(series, netns, addr)
                == ref['marker']}

        _, _, _, results = self.side_by_side(image, reps, app_name, booted,
                                             spawned)
        clones, measured = zip(*results)
        cold_s = [c['ready_s'] for c in cold]
        clone_s = [m['ready_s'] for m in measured]
        first = statistics.median(c['first_rate'] for c in cold)
        return {
            'app': app_name, 'rate_unit': app.rate_unit,
            'window_s': app.window_s, 'ready_span_s': span,
            'warm_span_s': apps_mod.WARM_SPAN_S,
            'warm_min_s': warm_s, 'warm_max_s': warm_max_s,
            # How long the source ran under load before it was captured.
            'warm_s': round(ref['warmed_s'], 1),
            'ready_fraction': apps_mod.READY_FRACTION,
            'warm_rate': round(ref['rate'], 2),
            'warm_growth': ref['growth'] and round(ref['growth'], 3),
            # The source's own boot is ready within its warm-up (the warm
            # rate is its own mean): False would mean it never got there.
            'source_reached_ready': cold[0]['reached'],
            'cold_s': _stats(cold_s),
            'cold_boot_to_agent_s': _stats([c['agent_s'] for c in cold]),
            'cold_agent_to_first_answer_s': _stats(
                [c['first_answer_s'] - c['agent_s'] for c in cold]),
            'cold_warmup_s': _stats(
                [c['ready_s'] - c['first_answer_s'] for c in cold]),
            'cold_first_span_rate': _stats([c['first_rate'] for c in cold]),
            'warm_over_cold_first_span': round(ref['rate'] / first, 2)
            if first else None,
            'clone_s': _stats(clone_s),
            'clone_first_answer_s': _stats(
                [m['first_answer_s'] for m in measured]),
            'clone_first_span_rate': _stats(
                [m['first_rate'] for m in measured]),
            'clones_resumed_source': all(m['resumed'] for m in measured),
            'ratio_cold_over_clone': round(
                statistics.median(cold_s) / statistics.median(clone_s), 2),
            'clone_profile': _clone_profile(clones)}

    def compression(self, formats, reps):
        """Memory image size and restore time per compression format.

        The engine has no compression option, and libvirt compresses save
        images only when qemu.conf's ``save_image_format`` says so (global
        to libvirtd). So a guest is saved once, raw; its QEMU stream is
        compressed by the program libvirt would run (``<format> -c``) into
        a save image whose header names the format, and libvirt's own
        restore reads it, piping the stream through ``<format> -dc`` into
        QEMU as it does for the images it compresses itself.
        """
        guest, _ = self.boot_ready('zip')
        work = os.path.join(self.guest_image.work_dir, guest.name)
        raw_path = os.path.join(work, 'raw.save')
        guest.save(raw_path)
        self.sources.remove(guest.name)
        with open(raw_path, 'rb') as f:
            save = saveimage.read(f, os.fstat(f.fileno()).st_size,
                                  raw_path)
        rows = []
        try:
            for fmt in formats:
                path, compress_s = _compressed_copy(raw_path, save, fmt,
                                                    work)
                restore_s = []
                for _ in range(reps):
                    started = time.monotonic()
                    self.host.restore(path)
                    restore_s.append(time.monotonic() - started)
                    self.host.lookup(guest.name).remove()
                rows.append({
                    'format': fmt,
                    'size_mib': round(os.path.getsize(path) / 2 ** 20, 1),
                    'compress_s': round(compress_s, 2),
                    'restore_s': _stats(restore_s)})
                if path != raw_path:
                    os.unlink(path)
        finally:
            self.guest_image.remove(self.host, guest.name)
        return rows

    def engine_for(self, **overrides):
        return engine_mod.Engine(conf_mod.derive(self.conf, **overrides),
                                 host=self.host)

    def scale(self, image, counts):
        """Concurrent clones: wall time, per-clone spawn, memory, disk."""
        rows = []
        stream_size = image.manifest.files['memory']['size']
        for count in counts:
            started = time.monotonic()
            clones = self.engine.spawn(image.name, count=count)
            wall = time.monotonic() - started
            rss = [_rss_mib(self.host.lookup(c.name).qemu_pid())
                   for c in clones]
            disk = [_allocated_mib(c.path) for c in clones]
            big = [c.name for c in clones
                   for f in os.listdir(c.path)
                   if os.path.getsize(os.path.join(c.path, f))
                   >= stream_size // 2]
            rows.append({
                'clones': count, 'wall_s': round(wall, 3),
                'per_clone_spawn_s': _stats([c.spawn_s for c in clones]),
                'per_clone_restore_s': _stats([c.restore_s for c in clones]),
                'per_clone_rss_mib': round(statistics.mean(rss), 1),
                'per_clone_disk_mib': round(statistics.mean(disk), 3),
                'memory_stream_copies': 1 + len(big)})
            for clone in clones:
                self.engine.destroy(clone.name)
        return rows


def _clone_profile(clones):
    """Where a clone's time to sshd went: restore, each re-identification
    step (guest-side time), the rest (agent round trips, host side) and, of
    the network step, the wait for the DHCP server's answer."""
    steps = {}
    for clone in clones:
        for step in clone.identity['steps']:
            steps.setdefault(step['step'], []).append(step['seconds'] or 0.0)
    rest = [c.spawn_s - c.restore_s
            - sum(s['seconds'] or 0.0 for s in c.identity['steps'])
            for c in clones]
    return {'spawn_s': _stats([c.spawn_s for c in clones]),
            'restore_s': _stats([c.restore_s for c in clones]),
            # A list: the steps' order survives the sorted JSON.
            'steps': [{'step': step, 'seconds': _stats(v)}
                      for step, v in steps.items()],
            'agent_round_trips_s': _stats(rest),
            'dhcp_wait_s': _stats([c.identity['facts'].get('dhcp_wait_s')
                                   for c in clones])}


# What libvirt 9.0 runs for each save_image_format, and the header value.
_COMPRESSION = {'raw': saveimage.Compression.RAW,
                'lzop': saveimage.Compression.LZOP,
                'gzip': saveimage.Compression.GZIP,
                'bzip2': saveimage.Compression.BZIP2,
                'xz': saveimage.Compression.XZ}


def _compressed_copy(raw_path, save, fmt, work):
    """A save image of ``save``'s stream compressed as ``fmt``;
    (path, seconds the compression took)."""
    if fmt == 'raw':
        return raw_path, 0.0
    path = os.path.join(work, 'image.%s' % fmt)
    header = saveimage.encode(save.domain_xml, save.cookie,
                              was_running=save.header.was_running,
                              compression=_COMPRESSION[fmt])
    started = time.monotonic()
    with open(raw_path, 'rb') as src, open(path, 'wb') as dst:
        dst.write(header)
        dst.flush()
        src.seek(save.stream_offset)
        # Through a pipe, as libvirt feeds QEMU's stream to the program.
        proc = subprocess.Popen([shutil.which(fmt) or fmt, '-c'],
                                stdin=subprocess.PIPE, stdout=dst)
        with proc.stdin:
            shutil.copyfileobj(src, proc.stdin, 1 << 20)
        if proc.wait() != 0:
            raise RuntimeError('%s -c exited %d' % (fmt, proc.returncode))
    return path, time.monotonic() - started


def machine_facts(host):
    return {'hostname': platform.node(), 'cpus': os.cpu_count(),
            'memory_gib': round(os.sysconf('SC_PHYS_PAGES')
                                * os.sysconf('SC_PAGE_SIZE') / 2 ** 30, 1),
            'kernel': platform.release(), 'python': platform.python_version(),
            'libvirt': host.libvirt_version(), 'qemu': host.qemu_version(),
            'accelerator': 'tcg'}


# The suite's sections, in the order they run; ``run(sections=...)`` picks
# some. "core" is the busybox time to ready, restore floor, capture pause and
# scale, which share one source and its image.
SECTIONS = ('core', 'size', 'compression', 'lazy', 'sshd', 'warm', 'jvm',
            'postgres', 'platforms')


def run(conf, quick=False, progress=print, debian_guest_dir=None,
        netns='nls-test', apps_guest_dir=None, sections=None,
        checkpoint=None, platform_uri=None, platform_virsh=None):
    """Run the suite on the ``[live_snapshot]`` group ``conf``; returns the
    result dict (see ``doc/source/benchmarks.rst``).

    The Debian sections (until sshd answers; with a workload that warms up
    before it serves) run when ``debian_guest_dir`` is given, the
    application sections (a JVM, PostgreSQL) when ``apps_guest_dir`` is,
    both only when ``conf.clone_network`` names the test network in
    ``netns``. The platforms section runs when ``platform_uri`` names a
    second libvirt host (driven by the command line ``platform_virsh``; see
    :mod:`nova_live_snapshot.bench.platforms`). ``sections`` (names from
    :data:`SECTIONS`) runs only those.
    ``checkpoint(result)``, if given, is called after each section, so that
    a long run that is stopped keeps what it measured.
    """
    sections = set(SECTIONS if sections is None else sections)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise ValueError('unknown benchmark sections %s (known: %s)'
                         % (', '.join(sorted(unknown)), ', '.join(SECTIONS)))
    bench = Bench(conf, progress)
    reps = 2 if quick else 5
    counts = [1, 2] if quick else [1, 2, 4, 8]
    sizes = [128, 256] if quick else [128, 512, 1024]
    formats = ['raw', 'lzop', 'gzip'] + ([] if quick else ['xz'])
    debian_reps = QUICK_GUEST_REPS if quick else 3
    warm_cpu_s = 5 if quick else 20
    result = {'quick': quick, 'machine': machine_facts(bench.host),
              'guest': dict(bench.guest_image.meta),
              'sections': [name for name in SECTIONS if name in sections]}
    on_network = bool(conf.clone_network)
    debian = bool(debian_guest_dir and on_network)

    def size():
        progress('restore time against RAM %s MiB' % sizes)
        result['size'] = bench.size(sizes, 1 if quick else 3)

    def compression():
        progress('memory image compression %s' % formats)
        result['compression'] = bench.compression(formats, 1 if quick else 3)

    def lazy():
        lazy_sizes = [128, 256] if quick else [128, 256, 1024]
        lazy_count = 2 if quick else 8
        progress('lazy against eager clones, %s MiB, %d concurrent'
                 % (lazy_sizes, lazy_count))
        result['lazy'] = lazy_mod.measure(bench, lazy_sizes, lazy_count,
                                          reps=2 if quick else 3)

    def sshd():
        progress('Debian guest: cold boot against clone, until sshd '
                 'answers (%d each)' % debian_reps)
        result['sshd_ready'] = bench.sshd_ready(debian_guest_dir, netns,
                                                debian_reps)
        result['ready_ratio_cold_over_clone'] = \
            result['sshd_ready']['ratio_cold_over_clone']
        result['ready_ratio_guest'] = 'debian, sshd'

    def warm():
        progress('Debian guest: cold boot and a %g s warm-up against '
                 'clone, until the workload serves (%d each)'
                 % (warm_cpu_s, debian_reps))
        result['warm_ready'] = bench.warm_ready(debian_guest_dir, netns,
                                                debian_reps, warm_cpu_s)
        result['ready_ratio_cold_over_clone_warm'] = \
            result['warm_ready']['ratio_cold_over_clone']
        result['warmup_s'] = result['warm_ready']['warmup_s']['median']

    def app(name):
        def measure():
            progress('apps guest, %s: cold boot, start and warm-up against '
                     'a clone captured warm, until it serves at %d %% of '
                     'its warm throughput (%d each)'
                     % (name, 100 * apps_mod.READY_FRACTION, debian_reps))
            result['%s_ready' % name] = bench.app_ready(
                apps_guest_dir, netns, name, debian_reps,
                warm_s=60 if quick else 120,
                warm_max_s=240 if quick else 600)
            result['%s_ratio_cold_over_clone' % name] = \
                result['%s_ready' % name]['ratio_cold_over_clone']
        return measure

    def platforms():
        progress('restore on this platform against %s' % platform_uri)
        result['platforms'] = platforms_mod.measure(
            bench, platform_uri, platform_virsh,
            memory_mib=512 if quick else 1024, reps=2 if quick else 3,
            stats=_stats)

    runnable = {
        'core': lambda: _core(bench, result, reps, counts),
        'size': size, 'compression': compression, 'lazy': lazy,
        'sshd': sshd if debian else None, 'warm': warm if debian else None,
        'jvm': app('jvm') if apps_guest_dir and on_network else None,
        'postgres': app('postgres') if apps_guest_dir and on_network
        else None,
        'platforms': platforms if platform_uri and platform_virsh else None}
    if 'core' in sections:
        result['ready_ratio_guest'] = 'busybox, workload'
    try:
        for name in SECTIONS:
            if name in sections and runnable[name] is not None:
                _run_section(bench, result, name, runnable[name])
                if checkpoint is not None:
                    checkpoint(result)
        return result
    finally:
        bench.close()


def _run_section(bench, result, name, measure):
    """Run one section; a section that fails is recorded in
    ``result['errors']`` (and its traceback logged) so that the others
    still run and a long run keeps what it measured. The command exits
    non-zero when any section failed, and the smoke test asserts there
    were none."""
    try:
        measure()
    except Exception as e:  # noqa: B902 - recorded, reported, fails the run
        LOG.exception('benchmark section %s failed', name)
        bench.progress('section %s FAILED: %s' % (name, e))
        result.setdefault('errors', {})[name] = '%s: %s' % (
            type(e).__name__, e)


def _core(bench, result, reps, counts):
    """The sections that share the busybox source and its image."""
    progress = bench.progress
    progress('booting the source (cold)')
    source, cold_s = bench.boot_ready()
    testbed.read_workload(source)
    progress('capturing')
    image = bench.capture(source).image
    progress('time to ready, cold boot against clone (%d each)' % reps)
    result['ready'] = bench.ready(image.name, cold_s, reps)
    result['ready_ratio_cold_over_clone'] = \
        result['ready']['ratio_cold_over_clone']
    progress('restore floor (%d each)' % reps)
    result['restore_floor'] = bench.restore_floor(image.name, reps)
    result['spawn_over_virsh_restore'] = \
        result['restore_floor']['spawn_over_virsh_restore']
    progress('capture pause (%d each)' % reps)
    result['capture'] = bench.capture_pause(source, reps)
    result['capture_pause_ms_median'] = \
        result['capture']['live_tmpfs']['pause_ms']['median']
    progress('scale %s' % counts)
    result['scale'] = bench.scale(image, counts)
    bench.drop_source(source)
