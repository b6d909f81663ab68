"""What a compute host can restore, as placement traits, and what a live
image requires of the host its clones land on.

A live image resumes only on a host whose QEMU loads its memory stream: the
same architecture, a QEMU that has the image's machine type and is no
older than the one that captured it, and the guest's CPU model. Each
compute host advertises these facts as ``CUSTOM_LIVE_SNAPSHOT_*`` traits on
its resource provider and every live image requires the ones it needs
(``trait:<name> = required`` image properties, which Nova turns into the
scheduler's required traits), so that the scheduler never picks a host
that cannot restore it. The spawn-time check
(:func:`nova_live_snapshot.clone.host_reasons`) stays the last word: a
trait can be stale, and an image's owner can edit its properties.

QEMU loads migration streams from older releases, not from newer ones, so
a host advertises every release from 6.0 to its own (three minor releases a
year, ``.0`` to ``.2``, since QEMU 5) and an image requires the release
that captured it; the patch level is left to the spawn-time check.
"""

import re

from nova_live_snapshot import protocol

__all__ = ['host_traits', 'image_traits', 'PREFIX']

#: Every compatibility trait starts with it (and so with protocol.TRAIT,
#: which the driver's clean-up of a clone's image properties relies on).
PREFIX = protocol.TRAIT + '_'
_OLDEST_QEMU = 6


def _trait(kind, value):
    """``CUSTOM_LIVE_SNAPSHOT_<KIND>_<VALUE>``, the value upper-cased with
    everything but letters and digits as ``_`` (placement allows
    ``[A-Z0-9_]`` only)."""
    return '%s%s_%s' % (PREFIX, kind, re.sub(r'[^A-Z0-9]', '_',
                                             value.upper()))


def _release(version):
    """(major, minor) of a dotted QEMU version."""
    major, minor = version.split('.')[:2]
    return int(major), int(minor)


def host_traits(arch, machine_types, qemu_version, cpu_models):
    """The traits of a host whose QEMU ``qemu_version`` runs ``arch``
    guests with ``machine_types`` and ``cpu_models``."""
    traits = {_trait('ARCH', arch)}
    traits |= {_trait('MACHINE', m) for m in machine_types}
    traits |= {_trait('CPU', m) for m in cpu_models}
    own = _release(qemu_version)
    for major in range(min(_OLDEST_QEMU, own[0]), own[0] + 1):
        last = own[1] if major == own[0] else 2
        traits |= {_trait('QEMU', '%d.%d' % (major, minor))
                   for minor in range(last + 1)}
    return traits


def image_traits(arch, machine, qemu_version, cpu_model):
    """The traits a host needs to restore an image captured on ``arch``
    with ``machine``, ``qemu_version`` and ``cpu_model`` (empty: none
    named)."""
    required = {_trait('ARCH', arch), _trait('MACHINE', machine),
                _trait('QEMU', '%d.%d' % _release(qemu_version))}
    if cpu_model:
        required.add(_trait('CPU', cpu_model))
    return required
