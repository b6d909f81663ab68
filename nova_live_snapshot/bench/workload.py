"""What the benchmarks wait for inside a guest: a TCP service that answers
with a one-line banner, probed from inside the test network's namespace
(nothing outside it reaches the guests).

Two services: sshd (``SSH-2.0-...``), and a workload that warms up in memory
before it serves (:data:`WARM_PROGRAM`), started through the guest agent
once the guest has booted, as an application would be at boot.
"""

import dataclasses
import re
import subprocess
import sys
import time

__all__ = ['WARM_PORT', 'WarmBanner', 'start_warm', 'wait_banner',
           'parse_warm', 'warm_prefix']

WARM_PORT = 8080

# Python 3 for python3-minimal (no json): fills a bounded cache whose entries
# are chains of SHA-256 until it has used ``cpu_s`` seconds of CPU, then
# serves one line per connection. The token is random per start: a clone that
# resumed the warm process answers with its source's token, a process that
# started again would not.
WARM_PROGRAM = r'''
import hashlib, os, socket, sys, time
cpu_s, port, label = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
started = time.monotonic()
token = os.urandom(16).hex()
cache, cap, n = {}, 50000, 0
while time.process_time() < cpu_s:
    value = hashlib.sha256(b"%d" % n).digest()
    for _ in range(20):
        value = hashlib.sha256(value).digest()
    cache[n % cap] = value
    n += 1
warmup_s = time.monotonic() - started
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("", port))
srv.listen(16)
line = ("WARM label=%s token=%s entries=%d computed=%d warmup_s=%.3f "
        "cpu_s=%.3f\n" % (label, token, len(cache), n, warmup_s,
                           time.process_time())).encode()
while True:
    conn, _ = srv.accept()
    try:
        conn.sendall(line)
    except OSError:
        pass
    conn.close()
'''

_WARM_RE = re.compile(r'^WARM label=(\S+) token=([0-9a-f]{32}) entries=(\d+) '
                      r'computed=(\d+) warmup_s=([0-9.]+) cpu_s=([0-9.]+)$')


@dataclasses.dataclass(frozen=True)
class WarmBanner:
    """What the warm workload says about itself."""

    label: str          # the name of the domain it started in
    token: str
    entries: int
    computed: int
    warmup_s: float     # its own wall time from start to serving
    cpu_s: float


def parse_warm(line):
    m = _WARM_RE.match(line.strip())
    if not m:
        raise ValueError('unexpected warm workload banner %r' % line)
    return WarmBanner(label=m.group(1), token=m.group(2),
                      entries=int(m.group(3)), computed=int(m.group(4)),
                      warmup_s=float(m.group(5)), cpu_s=float(m.group(6)))


def warm_prefix(name):
    """How the banner of the workload started in domain ``name`` (or in
    its source, for a clone) begins."""
    return 'WARM label=%s ' % name


def start_warm(guest, cpu_s):
    """Start the warm workload in ``guest`` through its agent, detached
    from the agent (it outlives the exec that starts it), labelled with the
    domain's name: every cold boot of the Debian guest has the same DHCP
    client identifier, hence address, so a probe may reach another test
    bed's boot; the label tells them apart."""
    rc, _, err = guest.agent_exec(
        ['/bin/sh', '-c', 'python3 -c "$1" "$2" "$3" "$4" </dev/null '
         '>/dev/null 2>&1 &', 'sh', WARM_PROGRAM, str(cpu_s),
         str(WARM_PORT), guest.name])
    if rc != 0:
        raise RuntimeError('starting the warm workload in %s: %s'
                           % (guest.name, err.decode(errors='replace')))


_PROBE = """
import socket, sys, time
addr, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
deadline = time.time() + float(sys.argv[4])
while time.time() < deadline:
    try:
        with socket.create_connection((addr, port), timeout=1) as s:
            s.settimeout(5)
            data = s.recv(256)
            if data.startswith(prefix):
                print(data.decode(errors="replace").splitlines()[0])
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
"""


def wait_banner(netns, addr, port, prefix, deadline):
    """Wait until the service at ``addr``:``port`` sends a line starting
    with ``prefix``, probing from inside network namespace ``netns``;
    returns that line.

    :raises TimeoutError: nothing answered so by ``deadline`` (monotonic).
    """
    remaining = max(1.0, deadline - time.monotonic())
    proc = subprocess.run(['ip', 'netns', 'exec', netns, sys.executable,
                           '-c', _PROBE, addr, str(port), prefix,
                           str(remaining)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TimeoutError('nothing at %s:%d answered %r' % (addr, port,
                                                             prefix))
    return proc.stdout.strip()
