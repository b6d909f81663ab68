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

The traits are few on purpose. nova-compute makes sure every trait of its
provider exists with one ``GET /traits?name=in:...`` listing them all; Nova's
own traits already take about 2,100 characters of that request line here,
and with every machine type and alias (86 traits in all) placement's WSGI
server answered 414 (its 4,094-byte limit) and the host never reported.
So a host advertises only the versioned machine types of QEMU 6.0 and later
(``pc-i440fx-7.2``, ``pc-q35-7.2``: what guests are created with), and an
image of an older or unversioned machine type requires no machine trait
(the spawn-time check still refuses a host without it).
"""

import re

from nova_live_snapshot import protocol

__all__ = ['host_traits', 'image_traits', 'PREFIX']

#: Every compatibility trait starts with it (and so with protocol.TRAIT,
#: which the driver's clean-up of a clone's image properties relies on).
PREFIX = protocol.TRAIT + '_'
_OLDEST_QEMU = 6
_VERSIONED_MACHINE = re.compile(r'-([0-9]+)\.([0-9]+)\Z')


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


def _recent_machine(machine):
    """Whether ``machine`` is a versioned machine type of QEMU 6.0 or
    later, the only ones with traits."""
    match = _VERSIONED_MACHINE.search(machine)
    return bool(match) and int(match.group(1)) >= _OLDEST_QEMU


def host_traits(arch, machine_types, qemu_version, cpu_models):
    """The traits of a host whose QEMU ``qemu_version`` runs ``arch``
    guests with ``machine_types`` and ``cpu_models``."""
    traits = {_trait('ARCH', arch)}
    traits |= {_trait('MACHINE', m) for m in machine_types
               if _recent_machine(m)}
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
    required = {_trait('ARCH', arch),
                _trait('QEMU', '%d.%d' % _release(qemu_version))}
    if _recent_machine(machine):
        required.add(_trait('MACHINE', machine))
    if cpu_model:
        required.add(_trait('CPU', cpu_model))
    return required
