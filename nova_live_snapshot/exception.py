"""Every error nova-live-snapshot raises.

One base class with a message template, as os-vif and Nova do: callers catch
:class:`LiveSnapshotError` (or a subclass they can act on) and show ``str(e)``,
which always says what was wrong and, where there is one, what to do.
"""

__all__ = [
    'LiveSnapshotError', 'HypervisorError', 'DomainNotFound', 'DomainNotRunning',
    'GuestAgentError', 'InsufficientSpace', 'CaptureFailed', 'ImageNotFound',
    'ImageExists', 'ImageInUse', 'InvalidLiveImage', 'ChecksumMismatch',
    'IncompatibleImage', 'UnsafeDomainXML', 'CloneSpawnFailed',
    'InvalidRestoreRequest', 'CloneNotFound',
    'TestGuestMissing', 'NotConfigured', 'UntrustedImage', 'WrongProject',
    'FlavorMismatch', 'TemplateError', 'TemplateNoRoom',
    'TemplateDirUnsuitable', 'TemplateBuildFailed', 'TemplateUnsafe',
    'NovaIncompatible', 'NotInQemuGroup', 'ForeignOwner',
    'BenchmarkError',
]


class LiveSnapshotError(Exception):
    """Base class: ``msg_fmt`` is filled from the keyword arguments."""

    msg_fmt = 'An unknown live-snapshot error occurred.'

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt % kwargs
        super().__init__(message)


class HypervisorError(LiveSnapshotError):
    """A libvirt call failed in a way the caller cannot correct by input."""

    msg_fmt = 'libvirt %(operation)s failed: %(reason)s'


class DomainNotFound(LiveSnapshotError):
    msg_fmt = 'No libvirt domain named or with UUID %(domain)s.'


class DomainNotRunning(LiveSnapshotError):
    msg_fmt = ('Domain %(domain)s is %(state)s; only a running domain can be '
               'captured into a live image.')


class GuestAgentError(LiveSnapshotError):
    msg_fmt = 'Guest agent of %(domain)s: %(reason)s'


class InsufficientSpace(LiveSnapshotError):
    msg_fmt = ('%(path)s has %(free_mib)d MiB free but %(what)s needs up to '
               '%(needed_mib)d MiB. Free space there or point the '
               '%(option)s option elsewhere.')


class CaptureFailed(LiveSnapshotError):
    msg_fmt = ('Capture of %(domain)s failed: %(reason)s. The domain keeps '
               'running and no image was written.')


class ImageNotFound(LiveSnapshotError):
    msg_fmt = 'No live image %(image)s in %(store)s.'


class ImageExists(LiveSnapshotError):
    msg_fmt = 'A live image named %(image)s already exists in %(store)s.'


class ImageInUse(LiveSnapshotError):
    msg_fmt = ('Live image %(image)s backs clones %(clones)s; destroy them '
               'before deleting the image.')


class InvalidLiveImage(LiveSnapshotError):
    """The image on disk is not what its manifest promises: refuse it."""

    msg_fmt = 'Live image %(image)s is not valid: %(reason)s'


class ChecksumMismatch(InvalidLiveImage):
    msg_fmt = ('Live image %(image)s is not valid: %(file)s has SHA-256 '
               '%(actual)s, the manifest says %(expected)s (the file was '
               'changed or damaged after capture).')


class IncompatibleImage(LiveSnapshotError):
    msg_fmt = 'Live image %(image)s cannot be restored here: %(reasons)s'


class UnsafeDomainXML(LiveSnapshotError):
    msg_fmt = 'Refusing domain XML from %(origin)s: %(reason)s'


class CloneSpawnFailed(LiveSnapshotError):
    msg_fmt = ('Spawning clone %(name)s from live image %(image)s failed: '
               '%(reason)s. Nothing of the clone was left behind.')


class InvalidRestoreRequest(LiveSnapshotError, ValueError):
    """A caller described a clone that cannot be restored as asked: a bug
    in the caller, not in the image (a ValueError too)."""

    msg_fmt = ('The restore of a clone of live image %(image)s was asked '
               'for inconsistently: %(reason)s.')


class CloneNotFound(LiveSnapshotError):
    msg_fmt = 'No clone named %(name)s in %(clone_dir)s.'


class TestGuestMissing(LiveSnapshotError):
    msg_fmt = ('The test guest is not built in %(path)s; run '
               'tools/build-test-guest.sh (make demo does it for you).')


# Lazy clones ----------------------------------------------------------------

class TemplateError(LiveSnapshotError):
    """The lazy-mode template of an image cannot be had on this host; eager
    restore is an alternative when the operator allowed it."""


class TemplateNoRoom(TemplateError):
    msg_fmt = ('The template of live image %(image)s needs %(needed_mib)d MiB '
               'in %(path)s, which has %(free_mib)d MiB free. Free memory '
               'there, point [live_snapshot] template_dir at a larger tmpfs, '
               'or set [live_snapshot] lazy_fallback_to_eager = true to '
               'restore eagerly instead.')


class TemplateDirUnsuitable(TemplateError):
    msg_fmt = ('[live_snapshot] template_dir %(path)s is on %(fstype)s, not '
               'tmpfs: clones fault their memory in from the template, '
               'which must be RAM. Point it at a tmpfs (e.g. under /dev/shm).')


class TemplateUnsafe(TemplateError):
    msg_fmt = ('Lazy clones of live image %(image)s are refused on this host: '
               'its QEMU %(qemu)s opens a private RAM file read-write (read-only '
               'private mappings need QEMU 8.2), so any clone could rewrite the '
               'template memory every other clone of the image maps. Restore '
               'eagerly (restore_mode = eager, or lazy_fallback_to_eager = '
               'true), or accept that risk with [live_snapshot] '
               'lazy_writable_templates = true.')


class TemplateBuildFailed(TemplateError):
    msg_fmt = ('Building the lazy-mode template of live image %(image)s '
               'failed: %(reason)s. Nothing of the template was left behind.')


# Nova integration ------------------------------------------------------------

class NotConfigured(LiveSnapshotError):
    msg_fmt = ('Live snapshots are not configured on this host: %(reason)s. '
               'Set %(option)s in nova.conf.')


class UntrustedImage(InvalidLiveImage):
    """A live image whose signature does not verify: never restored."""

    msg_fmt = ('Live image %(image)s is refused: %(reason)s. Only live images '
               'this cloud captured can be restored.')


class WrongProject(LiveSnapshotError):
    msg_fmt = ('Live image %(image)s belongs to project %(owner)s; it cannot '
               'be restored in project %(project)s.')


class FlavorMismatch(LiveSnapshotError):
    msg_fmt = ('Live image %(image)s was captured from an instance with '
               '%(image_ram)d MiB RAM and %(image_vcpus)d vCPUs; flavor '
               '%(flavor)s has %(ram)d MiB and %(vcpus)d. A clone resumes the '
               'source machine and needs a flavor of the same size.')


class NotInQemuGroup(LiveSnapshotError):
    """The service's user may not give a file QEMU must read the QEMU
    group: it is not a member of that group (:mod:`ownership`)."""

    msg_fmt = ('%(user)s may not give %(path)s the group %(group)s, which '
               'QEMU runs in: add %(user)s to that group (usermod -aG '
               '%(group)s %(user)s) and restart the service, or set '
               '[live_snapshot] qemu_group to the group libvirt runs QEMU '
               'in (qemu.conf "group").')


class ForeignOwner(LiveSnapshotError):
    """A file the service shares with QEMU belongs to another user, and
    the service, not being root, cannot take it back (:mod:`ownership`)."""

    msg_fmt = ('%(path)s belongs to uid %(owner)s, not to %(user)s, which '
               'runs this service: something else changed it (libvirt\'s '
               'dynamic ownership?), so it cannot be shared with QEMU as '
               'read-only; remove it and let the service make it again.')


class NovaIncompatible(LiveSnapshotError):
    """The installed Nova lacks what the extension relies on
    (:mod:`nova_live_snapshot.selfcheck`): the service must not start."""

    msg_fmt = ('%(service)s cannot run nova-live-snapshot on Nova %(nova)s '
               '(tested with nova%(tested)s): %(missing)s. Install a Nova '
               'release in that range, or a nova-live-snapshot release made '
               'for Nova %(nova)s; the service does not start half-enabled.')


class UnreadableRecord(LiveSnapshotError, ValueError):
    """A host's own state record (nova_live_snapshot.records) cannot be
    trusted. A ValueError too: callers that skip a bad record go on."""

    msg_fmt = 'The record %(path)s cannot be read: %(reason)s'


class BenchmarkError(LiveSnapshotError):
    """A benchmark could not measure what it measures (not a slow result:
    benchmarks report speed, they never judge it)."""

    msg_fmt = 'Benchmark: %(what)s failed: %(reason)s'
