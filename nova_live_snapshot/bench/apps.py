"""Real applications in the apps guest: a JVM whose throughput depends on
its JIT warm-up, and PostgreSQL 15 serving a pgbench data set from a warm
buffer cache (``tools/apps-guest/``).

"Ready" is measured from outside the guest, from the test network's
namespace on the host, as a client sees it: the service answers at 90 % of
its warm throughput. The warm throughput is the mean rate of the last
:data:`WARM_SPAN_S` seconds of the first (source) boot after a fixed
warm-up under load; cold boots and clones are then ready from the start of
the first :data:`READY_SPAN_S` seconds whose mean rate reaches
:data:`READY_FRACTION` of it (spans, not single windows: on a shared TCG
host one window's rate varies by an order of magnitude).

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

__all__ = ['READY_FRACTION', 'READY_SPAN_S', 'WARM_SPAN_S', 'WARM_GROWTH',
           'Series',
           'Jvm', 'Postgres', 'APPS']

# "Ready": a span of READY_SPAN_S seconds at this fraction of the warm
# throughput or above; the warm throughput is the mean of the source's last
# WARM_SPAN_S seconds.
READY_FRACTION = 0.9
READY_SPAN_S = 5.0
WARM_SPAN_S = 20.0
# Warm: the last WARM_SPAN_S seconds' mean rate at most this many times the
# span before's (the rate stopped growing).
WARM_GROWTH = 1.1

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
    window of ``window_s`` seconds, the wall time (``time.time()``) being
    when the window's line arrived, i.e. the window's end."""

    window_s: float
    banner: str = None
    windows: list = dataclasses.field(default_factory=list)

    def mean_rate(self, seconds):
        """The mean rate of the windows of the last ``seconds``."""
        n = max(1, round(seconds / self.window_s))
        rates = [r for _, r in self.windows[-n:]]
        return statistics.mean(rates) if rates else None

    def first_rate(self, seconds):
        """The mean rate of the first ``seconds`` of windows."""
        n = max(1, round(seconds / self.window_s))
        rates = [r for _, r in self.windows[:n]]
        return statistics.mean(rates) if rates else None

    def ready_at(self, threshold, span_s):
        """When the service started serving at ``threshold``: the start of
        the first span of ``span_s`` seconds of consecutive windows whose
        mean rate is ``threshold`` or above (one noisy window is not
        ready; a span is), or None while there is no such span."""
        n = max(1, round(span_s / self.window_s))
        rates = [r for _, r in self.windows]
        for i in range(len(rates) - n + 1):
            if statistics.mean(rates[i:i + n]) >= threshold:
                return self.windows[i][0] - self.window_s
        return None

    def elapsed(self):
        """Seconds from the first window's start to the last one's end."""
        if not self.windows:
            return 0.0
        return self.windows[-1][0] - self.windows[0][0] + self.window_s

    def growth(self, seconds):
        """The mean rate of the last ``seconds`` over that of the
        ``seconds`` before (how much the rate still grew)."""
        n = max(1, round(seconds / self.window_s))
        rates = [r for _, r in self.windows]
        if len(rates) < 2 * n:
            return None
        before = statistics.mean(rates[-2 * n:-n])
        return statistics.mean(rates[-n:]) / before if before else None


class _App:
    """One application of the apps guest: how to start it in a guest and
    how to drive it from the namespace."""

    name = None
    rate_unit = None
    window_s = 1.0

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
        series = Series(self.window_s)
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
    window_s = 1.0

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
