"""The few ``qemu-img`` operations the engine needs, each one function.

Files are created mode 0600 (the umask of the child is 077): overlays and
flattened disks hold guest data. libvirt hands an overlay to the QEMU user
when a domain starts (dynamic ownership).
"""

import json
import os
import subprocess

from nova_live_snapshot import exception

__all__ = ['create_overlay', 'convert', 'info']


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


def info(path, chain=False):
    """``qemu-img info`` as a dict (a list of dicts with ``chain``)."""
    args = ['info', '-U', '--output=json']
    if chain:
        args.append('--backing-chain')
    return json.loads(_run(args + [path]))
