"""The benchmark suite: what is measured, and how.

Each measurement returns plain data; :func:`run` assembles the result that
``--json`` prints and :mod:`nova_live_snapshot.bench.report` renders.
"""

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid as uuidlib

from nova_live_snapshot import conf as conf_mod
from nova_live_snapshot import engine as engine_mod
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import testbed

__all__ = ['run']


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return {'median': None, 'min': None, 'max': None, 'n': 0}
    return {'median': round(statistics.median(values), 4),
            'min': round(min(values), 4), 'max': round(max(values), 4),
            'n': len(values)}


def _qemu_pid(name):
    with open('/var/run/libvirt/qemu/%s.pid' % name) as f:
        return int(f.read().strip())


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
        save image of the same guest, and against starting it paused."""
        engine_s, spawn_s, plain_s, paused_s = [], [], [], []
        for _ in range(reps):
            (clone,) = self.engine.spawn(image_name, exact_copy=True)
            engine_s.append(clone.restore_s)
            self.engine.destroy(clone.name)
            (clone,) = self.engine.spawn(image_name)
            spawn_s.append(clone.spawn_s)
            self.engine.destroy(clone.name)
        # A plain save image: save a source, then restore it as it is.
        guest, _ = self.boot_ready('plain')
        save_path = os.path.join(self.guest_image.work_dir, guest.name,
                                 'plain.save')
        for _ in range(reps):
            guest.save(save_path)
            started = time.monotonic()
            self.host.restore(save_path)
            plain_s.append(time.monotonic() - started)
            guest = self.host.lookup(guest.name)
        os.unlink(save_path)
        for _ in range(reps):
            # The same domain (own overlay and log), started paused: QEMU's
            # start-up, which every restore pays too.
            name = self.name('paused')
            started = time.monotonic()
            self.guest_image.boot(self.host, name, paused=True)
            paused_s.append(time.monotonic() - started)
            self.guest_image.remove(self.host, name)
        eng, plain, paused = (statistics.median(engine_s),
                              statistics.median(plain_s),
                              statistics.median(paused_s))
        return {'engine_restore_s': _stats(engine_s),
                'engine_spawn_with_identity_s': _stats(spawn_s),
                'virsh_restore_s': _stats(plain_s),
                'start_paused_s': _stats(paused_s),
                'spawn_over_virsh_restore': round(eng / plain, 3),
                'engine_above_floor_s': round(eng - plain, 3),
                'virsh_restore_above_qemu_start_s': round(plain - paused, 3)}

    def capture_pause(self, guest, reps):
        """Pause of the source per capture mode and memory placement."""
        variants = {
            'live_tmpfs': {},
            'live_disk': {'memory_staging': 'never'},
            'save_tmpfs': {'capture_mode': 'save'},
        }
        out = {}
        for label, overrides in variants.items():
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

    def sshd_ready(self, guest_dir, netns, reps):
        """On the Debian guest: cold boot until sshd answers, against clone
        spawn (restore and re-identification, new host keys included) until
        sshd answers on the clone's new address."""
        debian = testbed.TestGuest(guest_dir, self.guest_image.work_dir,
                                   network=self.conf.clone_network)
        cold_s, clone_s = [], []
        source = None
        for _ in range(reps):
            name = self.name('deb')
            started = time.monotonic()
            guest = debian.boot(self.host, name)
            addr = host_mod.wait_for(guest.leased_ipv4, 300, interval=0.2,
                                     what='a DHCP lease for %s' % name)
            _wait_ssh(netns, addr, started + 300)
            cold_s.append(time.monotonic() - started)
            if source is None:
                source = guest
                testbed.wait_ready(source, timeout=120)
                self.sources.append(name)
            else:
                debian.remove(self.host, name)
        image = self.capture(source).image
        for _ in range(reps):
            started = time.monotonic()
            (clone,) = self.engine.spawn(image.name)
            addr = clone.identity['facts']['ipv4'].split('/')[0]
            _wait_ssh(netns, addr, started + 300)
            clone_s.append(time.monotonic() - started)
            self.engine.destroy(clone.name)
        self.engine.delete_image(image.name)
        self.images.pop()
        debian.remove(self.host, source.name)
        self.sources.remove(source.name)
        return {'cold_s': _stats(cold_s), 'clone_s': _stats(clone_s),
                'ratio_cold_over_clone': round(
                    statistics.median(cold_s) / statistics.median(clone_s),
                    2)}

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
            rss = [_rss_mib(_qemu_pid(c.name)) for c in clones]
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


_SSH_PROBE = """
import socket, sys, time
addr, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        with socket.create_connection((addr, 22), timeout=1) as s:
            s.settimeout(5)
            if s.recv(4).startswith(b'SSH-'):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
"""


def _wait_ssh(netns, addr, deadline):
    """Wait until sshd at ``addr`` sends its banner, probing from inside the
    test network's namespace (nothing outside it can reach the guests)."""
    remaining = max(1.0, deadline - time.monotonic())
    rc = subprocess.run(['ip', 'netns', 'exec', netns, sys.executable, '-c',
                         _SSH_PROBE, addr, str(remaining)]).returncode
    if rc != 0:
        raise TimeoutError('sshd at %s did not answer' % addr)


def machine_facts(host):
    return {'hostname': platform.node(), 'cpus': os.cpu_count(),
            'memory_gib': round(os.sysconf('SC_PHYS_PAGES')
                                * os.sysconf('SC_PAGE_SIZE') / 2 ** 30, 1),
            'kernel': platform.release(), 'python': platform.python_version(),
            'libvirt': host.libvirt_version(), 'qemu': host.qemu_version(),
            'accelerator': 'tcg'}


def run(conf, quick=False, progress=print, debian_guest_dir=None,
        netns='nls-test'):
    """Run the suite on the ``[live_snapshot]`` group ``conf``; returns the
    result dict (see ``doc/source/benchmarks.rst``).

    The Debian sshd-ready section runs when ``debian_guest_dir`` is given
    and ``conf.clone_network`` names the test network in ``netns``.
    """
    bench = Bench(conf, progress)
    reps = 2 if quick else 5
    counts = [1, 2] if quick else [1, 2, 4, 8]
    sizes = [128, 256] if quick else [128, 512, 1024]
    result = {'quick': quick, 'machine': machine_facts(bench.host),
              'guest': dict(bench.guest_image.meta)}
    try:
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
        progress('restore time against RAM %s MiB' % sizes)
        result['size'] = bench.size(sizes, 1 if quick else 3)
        if debian_guest_dir and conf.clone_network:
            progress('Debian guest: cold boot against clone, until sshd '
                     'answers (%d each)' % (2 if quick else 3))
            result['sshd_ready'] = bench.sshd_ready(
                debian_guest_dir, netns, 2 if quick else 3)
            result['ready_ratio_cold_over_clone'] = \
                result['sshd_ready']['ratio_cold_over_clone']
            result['ready_ratio_guest'] = 'debian, sshd'
        else:
            result['ready_ratio_guest'] = 'busybox, workload'
        return result
    finally:
        bench.close()
