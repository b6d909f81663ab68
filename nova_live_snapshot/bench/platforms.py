"""The platforms section of the benchmark suite: a plain save and restore of
the same guest on this host's libvirt and QEMU and on a second libvirt host
(the next platform of issue 17, ``make backports-bench``), side by side.

Each platform runs one busybox source with ``memory_mib`` of RAM, half of it
filled with random data in a tmpfs inside the guest (memory a workload
touched, which no save format leaves out). Each round saves and restores
both sources once per save format their platform offers, so every figure
sees the same load: ``raw`` (libvirt's stream, the only format before
libvirt 11.2 / QEMU 9.0), and where offered ``sparse`` (QEMU's
``mapped-ram``: each page at a fixed offset of the file) and ``sparse``
restored over parallel channels (QEMU's multifd).

The saves and restores go through each platform's own ``virsh``: libvirt
9.0's Python binding types ``parallel.channels`` as an unsigned long long,
which libvirt 11.3 refuses (it wants an int). The save files are on disk,
written just before they are read (in the page cache, as the engine's
memory images usually are), under ``/var/tmp``, which the second host must
see at the same path.
"""

import os
import shlex
import shutil
import subprocess
import tempfile
import time

from nova_live_snapshot import host as host_mod
from nova_live_snapshot import restore as restore_mod
from nova_live_snapshot import testbed

__all__ = ['measure', 'formats']

CHANNELS = 2


def formats(libvirt_version, qemu_version):
    """{label: (save arguments, restore arguments)} of the save formats a
    platform offers, for its virsh."""
    offered = {'raw': ([], [])}
    if (restore_mod.version_tuple(libvirt_version) >= (11, 2, 0)
            and restore_mod.version_tuple(qemu_version) >= (9, 0, 0)):
        offered['sparse'] = (['--image-format', 'sparse'], [])
        offered['sparse, %d channels' % CHANNELS] = (
            ['--image-format', 'sparse', '--parallel-channels',
             str(CHANNELS)], ['--parallel-channels', str(CHANNELS)])
    return offered


class _Platform:
    """One libvirt host: its connection, its virsh and its source."""

    def __init__(self, label, host, virsh):
        self.label = label
        self.host = host
        self.virsh = virsh
        self.facts = {'libvirt': host.libvirt_version(),
                      'qemu': host.qemu_version()}
        self.formats = formats(self.facts['libvirt'], self.facts['qemu'])
        self.source = None

    def run(self, *args):
        """Run one virsh command; its wall time."""
        started = time.monotonic()
        proc = subprocess.run(self.virsh + ['-q'] + list(args),
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError('%s: virsh %s: %s' % (
                self.label, ' '.join(args), proc.stderr.strip()))
        return time.monotonic() - started


def _fill(guest, mib):
    rc, _, err = guest.agent_exec(
        ['/bin/sh', '-c', 'mkdir -p /run/fill && mount -t tmpfs -o size=%dm '
         'tmpfs /run/fill && dd if=/dev/urandom of=/run/fill/blob bs=1M '
         'count=%d 2>&1' % (mib + 8, mib)], timeout=600)
    if rc != 0:
        raise RuntimeError('filling guest memory: %s' % err)


def measure(bench, uri, virsh, memory_mib=1024, reps=3, stats=None):
    """Save and restore a ``memory_mib`` guest on this host and on the
    libvirt host at ``uri`` (driven by the command line ``virsh``, e.g.
    ``chroot <root> virsh -c qemu:///system``), ``reps`` rounds.

    :returns: {'memory_mib', 'touched_mib', 'platforms': {label: {'libvirt',
        'qemu', 'formats': {format: {'save_s', 'restore_s', 'file_mib',
        'allocated_mib'}}}}}
    """
    stats = stats or (lambda values: values)
    platforms = [
        # No URI: virsh's default, the one the host's connection used.
        _Platform('stock', bench.host, ['virsh'] + (
            ['-c', bench.host.uri] if bench.host.uri else [])),
        _Platform('next', host_mod.Host(uri), shlex.split(virsh))]
    touched = memory_mib // 2
    # Under /var/tmp, which the second host sees at the same path
    # (tools/backports-host.sh binds it), traversable by QEMU.
    work = tempfile.mkdtemp(prefix='nls-bench-platforms-', dir='/var/tmp')
    os.chmod(work, 0o711)
    # User-mode networking: the same NIC backend on both hosts whatever
    # networks they have.
    image = testbed.TestGuest(bench.conf.test_guest_dir, work, network=None)
    times = {p.label: {f: {'save_s': [], 'restore_s': []} for f in p.formats}
             for p in platforms}
    sizes = {p.label: {} for p in platforms}
    try:
        for p in platforms:
            bench.progress('platforms: booting a %d MiB source on %s '
                           '(libvirt %s, QEMU %s)' % (
                               memory_mib, p.label, p.facts['libvirt'],
                               p.facts['qemu']))
            p.source = bench.name('plat-%s' % p.label)
            guest = image.boot(p.host, p.source, memory_mib=memory_mib)
            testbed.wait_ready(guest, timeout=300)
            _fill(guest, touched)
        for _ in range(reps):
            for p in platforms:
                for fmt, (save_args, restore_args) in p.formats.items():
                    path = os.path.join(work, p.source, 'plat.save')
                    times[p.label][fmt]['save_s'].append(
                        p.run('save', p.source, path, *save_args))
                    st = os.stat(path)
                    sizes[p.label][fmt] = {
                        'file_mib': round(st.st_size / 2 ** 20, 1),
                        'allocated_mib': round(st.st_blocks * 512 / 2 ** 20,
                                               1)}
                    times[p.label][fmt]['restore_s'].append(
                        p.run('restore', path, *restore_args))
                    os.unlink(path)
    finally:
        for p in platforms:
            if p.source:
                image.remove(p.host, p.source)
        shutil.rmtree(work, ignore_errors=True)
    return {'memory_mib': memory_mib, 'touched_mib': touched,
            'platforms': {p.label: dict(p.facts, formats={
                fmt: dict(sizes[p.label][fmt],
                          save_s=stats(times[p.label][fmt]['save_s']),
                          restore_s=stats(times[p.label][fmt]['restore_s']))
                for fmt in p.formats}) for p in platforms}}
