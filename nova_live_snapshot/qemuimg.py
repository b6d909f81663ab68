"""The few ``qemu-img`` operations the engine needs, each one function.

Files are created mode 0600 (the umask of the child is 077): overlays and
flattened disks hold guest data. libvirt hands an overlay to the QEMU user
when a domain starts (dynamic ownership).
"""

import json
import os
import subprocess

from oslo_concurrency import processutils

from nova_live_snapshot import exception

__all__ = ['create_overlay', 'convert', 'info', 'info_untrusted',
           'UNTRUSTED_LIMITS']

# What qemu-img may use on a file that came from elsewhere: Nova's own
# limits for images (nova/virt/images.py QEMU_IMG_LIMITS), since a crafted
# qcow2 can make it allocate or loop without end.
UNTRUSTED_LIMITS = processutils.ProcessLimits(cpu_time=30,
                                              address_space=1 << 30)


def _run(args):
    try:
        return subprocess.run(['qemu-img'] + args, check=True,
                              capture_output=True, text=True,
                              preexec_fn=lambda: os.umask(0o077)).stdout
    except subprocess.CalledProcessError as e:
        raise exception.LiveSnapshotError(
            'qemu-img %s failed: %s' % (args[0], e.stderr.strip())) from None


def create_overlay(backing, path, backing_format='qcow2'):
    """A new qcow2 ``path`` whose backing file is ``backing``."""
    _run(['create', '-q', '-f', 'qcow2', '-F', backing_format, '-b', backing,
          path])


def convert(source, dest):
    """Flatten ``source`` and its backing chain into a standalone qcow2.

    ``-U``: the chain is still open (read-only) in the source's QEMU.
    """
    _run(['convert', '-U', '-O', 'qcow2', source, dest])


def info_untrusted(path, fmt, chain=False):
    """``qemu-img info`` of a file from an image, as a dict: its format
    given, never probed (``-f``), under :data:`UNTRUSTED_LIMITS`. Call it
    only once the file's checksum matched its authenticated record. With
    ``chain``, the list of the whole backing chain (formats as recorded in
    each layer).

    :raises LiveSnapshotError: qemu-img refused the file or hit a limit.
    """
    try:
        out, _err = processutils.execute(
            'qemu-img', 'info', '-U', '-f', fmt, '--output=json',
            *(['--backing-chain'] if chain else []), path,
            prlimit=UNTRUSTED_LIMITS, env_variables={'LC_ALL': 'C'})
    except processutils.ProcessExecutionError as e:
        raise exception.LiveSnapshotError(
            'qemu-img info failed: %s' % (e.stderr or '').strip()
            or 'exit code %s (resource limit?)' % e.exit_code) from None
    try:
        return json.loads(out)
    except ValueError:
        raise exception.LiveSnapshotError(
            'qemu-img info printed no JSON') from None


def info(path, chain=False):
    """``qemu-img info`` as a dict (a list of dicts with ``chain``)."""
    args = ['info', '-U', '--output=json']
    if chain:
        args.append('--backing-chain')
    return json.loads(_run(args + [path]))
