"""Real applications in the apps guest: a JVM whose throughput depends on
its JIT warm-up, and PostgreSQL 15 serving a pgbench data set from a warm
buffer cache (``tools/apps-guest/``).

"Ready" is measured from outside the guest, from the test network's
namespace on the host, as a client sees it: the service answers at 90 % of
its warm throughput. The warm throughput is what the first (source) boot
reaches once its request rate stops growing; cold boots and clones are then
timed until a one-window rate reaches :data:`READY_FRACTION` of it.

Two drivers, one shape: a process in the namespace that prints one rate per
window on stdout, read here as it comes. For the JVM it is a small Python
client (:data:`_JIT_CLIENT`, one connection, one request after the other);
for PostgreSQL it is ``pgbench -S -P 1`` from the host's postgresql-client.
"""

import dataclasses
import logging
import re
import shutil
import statistics
import subprocess
import sys
import time

from nova_live_snapshot import exception

LOG = logging.getLogger(__name__)

__all__ = ['READY_FRACTION', 'Series', 'Jvm', 'Postgres', 'APPS']

# "Ready": one window at this fraction of the warm throughput or above.
READY_FRACTION = 0.9

# Runs in the test network's namespace: connects (retrying until it is
# told to stop), checks the banner, then sends one request after the other
# and prints "RATE <requests per second>" per window, flushed.
_JIT_CLIENT = r'''
import socket, sys, time
addr, port, prefix, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    float(sys.argv[4])
while True:
    try:
        s = socket.create_connection((addr, port), timeout=2)
        s.settimeout(60)
        f = s.makefile("rwb", buffering=0)
        banner = f.readline().decode(errors="replace").strip()
        if banner.startswith(prefix):
            break
        s.close()
    except OSError:
        pass
    time.sleep(0.1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("BANNER " + banner, flush=True)
seed, count, t0 = 0, 0, time.monotonic()
while True:
    seed += 1
    f.write(b"%d\n" % seed)
    if not f.readline().strip().lstrip(b"-").isdigit():
        sys.exit("bad answer")
    count += 1
    now = time.monotonic()
    if now - t0 >= window:
        print("RATE %.3f" % (count / (now - t0)), flush=True)
        count, t0 = 0, now
'''

_PGBENCH_RATE = re.compile(r'^progress: [0-9.]+ s, ([0-9.]+) tps')


@dataclasses.dataclass
class Series:
    """What a driver saw: the banner (if any) and (wall time, rate) per
    window, wall time as ``time.time()`` when the window's line arrived."""

    banner: str = None
    windows: list = dataclasses.field(default_factory=list)

    def first_at(self, threshold):
        """The wall time of the first window at ``threshold`` or above."""
        for t, rate in self.windows:
            if rate >= threshold:
                return t
        return None

    def plateau(self, k):
        """The median rate of the last ``k`` windows when it is no more
        than 10 % above the median of the ``k`` before (the rate stopped
        growing), else None."""
        if len(self.windows) < 2 * k:
            return None
        rates = [r for _, r in self.windows]
        last = statistics.median(rates[-k:])
        before = statistics.median(rates[-2 * k:-k])
        return last if before > 0 and last <= 1.1 * before else None


class _App:
    """One application of the apps guest: how to start it in a guest and
    how to drive it from the namespace."""

    name = None
    rate_unit = None
    window_s = 1.0
    # Windows compared for the plateau (see Series.plateau).
    plateau_windows = 5

    def __init__(self, meta):
        self.meta = meta

    def start(self, guest):
        """Start the service in ``guest`` through its agent (systemd)."""
        rc, _, err = guest.agent_exec(['/bin/sh', '-c', self.start_script(
            guest)], timeout=60)
        if rc != 0:
            raise exception.BenchmarkError(
                what='starting %s in %s' % (self.name, guest.name),
                reason=err.decode(errors='replace').strip() or 'rc %d' % rc)

    def start_script(self, guest):
        return 'systemctl start --no-block %s' % self.meta['unit']

    def argv(self, addr, label):
        raise NotImplementedError

    def parse(self, line):
        """(kind, value) for a line of the driver's output, or None."""
        raise NotImplementedError

    def drive(self, netns, addr, label, stop, deadline):
        """Drive the service at ``addr`` from ``netns`` until
        ``stop(series)`` is true; returns the Series. A driver that exits
        (the service not up yet, its connection refused) is started again.

        :raises TimeoutError: ``stop`` was not satisfied by ``deadline``
            (monotonic).
        """
        series = Series()
        argv = ['ip', 'netns', 'exec', netns] + self.argv(addr, label)
        while time.monotonic() < deadline:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                for line in proc.stdout:
                    parsed = self.parse(line)
                    if parsed is None:
                        continue
                    kind, value = parsed
                    if kind == 'banner':
                        series.banner = value
                    else:
                        series.windows.append((time.time(), value))
                        LOG.debug('%s at %s: %.2f', self.name, addr, value)
                        if stop(series):
                            return series
                    if time.monotonic() >= deadline:
                        break
            finally:
                proc.kill()
                proc.wait()
            time.sleep(0.2)     # between two attempts to connect
        raise TimeoutError('%s at %s: not done by the deadline (%d windows, '
                           'last %s)' % (self.name, addr, len(series.windows),
                                         series.windows[-1:]))

    def resumed_marker(self, series, netns, addr):
        """What tells a resumed service from a restarted one."""
        raise NotImplementedError


class Jvm(_App):
    """The JIT-sensitive Java service (tools/apps-guest/java)."""

    name = 'jvm'
    rate_unit = 'requests/s'
    window_s = 0.5
    plateau_windows = 10

    def start_script(self, guest):
        return ('echo LABEL=%s >/run/nls-apps.env && %s'
                % (guest.name, super().start_script(guest)))

    def argv(self, addr, label):
        return [sys.executable, '-c', _JIT_CLIENT, addr,
                str(self.meta['port']), 'JIT label=%s ' % label,
                str(self.window_s)]

    def parse(self, line):
        if line.startswith('BANNER '):
            return 'banner', line[7:].strip()
        if line.startswith('RATE '):
            return 'rate', float(line.split()[1])
        return None

    def resumed_marker(self, series, netns, addr):
        # The JVM's random token: a restarted JVM has another.
        return series.banner


class Postgres(_App):
    """PostgreSQL 15 under ``pgbench -S`` (select only, one client)."""

    name = 'postgres'
    rate_unit = 'transactions/s'
    window_s = 1.0
    plateau_windows = 5

    def argv(self, addr, label):
        pgbench = shutil.which('pgbench') or '/usr/bin/pgbench'
        return [pgbench, '-h', addr, '-p', str(self.meta['port']),
                '-U', self.meta['user'], '-n', '-S', '-c', '1',
                '-T', '3600', '-P', '1', self.meta['database']]

    def parse(self, line):
        m = _PGBENCH_RATE.match(line)
        return ('rate', float(m.group(1))) if m else None

    def resumed_marker(self, series, netns, addr):
        # The postmaster's start time: a restarted server has another.
        psql = shutil.which('psql') or '/usr/bin/psql'
        proc = subprocess.run(
            ['ip', 'netns', 'exec', netns, psql, '-h', addr, '-p',
             str(self.meta['port']), '-U', self.meta['user'], '-qAt', '-c',
             'SELECT pg_postmaster_start_time()', self.meta['database']],
            capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise exception.BenchmarkError(
                what='asking %s for its start time' % addr,
                reason=proc.stderr.strip())
        return proc.stdout.strip()


APPS = {'jvm': Jvm, 'postgres': Postgres}
