"""The few ``qemu-img`` operations the engine needs, each one function.

Files are created mode 0600 (the umask of the child is 077): overlays and
flattened disks hold guest data. libvirt hands an overlay to the QEMU user
when a domain starts (dynamic ownership).

Every run goes through oslo.concurrency's ``processutils`` under resource
limits, as Nova runs ``qemu-img``: :data:`UNTRUSTED_LIMITS` on files that
came from elsewhere, :data:`LIMITS` on this host's own (a flattening copy
may take minutes of CPU, but no ``qemu-img`` needs more than a few hundred
MiB of address space).
"""

import json
import os

from oslo_concurrency import processutils

from nova_live_snapshot import exception

__all__ = ['create_overlay', 'convert', 'info', 'info_untrusted',
           'LIMITS', 'UNTRUSTED_LIMITS']

# What qemu-img may use on a file that came from elsewhere: Nova's own
# limits for images (nova/virt/images.py QEMU_IMG_LIMITS), since a crafted
# qcow2 can make it allocate or loop without end.
UNTRUSTED_LIMITS = processutils.ProcessLimits(cpu_time=30,
                                              address_space=1 << 30)


#: What qemu-img may use on this host's own files (overlays, flattening a
#: live image's disk): no runaway allocation, and an end even if it hangs.
LIMITS = processutils.ProcessLimits(cpu_time=1800, address_space=2 << 30)


def _umask():
    os.umask(0o077)


def _run(args):
    try:
        out, _err = processutils.execute(
            'qemu-img', *args, prlimit=LIMITS, preexec_fn=_umask,
            env_variables={'LC_ALL': 'C'})
        return out
    except processutils.ProcessExecutionError as e:
        raise exception.LiveSnapshotError(
            'qemu-img %s failed: %s' % (args[0], (e.stderr or '').strip()
                                        or 'exit code %s (resource limit?)'
                                        % e.exit_code)) from None


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
