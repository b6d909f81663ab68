"""What clones share is never writable by any QEMU process (issue 14).

libvirt's DAC driver chowns every file of a starting domain's disk chain to
the QEMU user and, for backing files, never gives them back: after one clone
ran, a compromised QEMU could rewrite the frozen disk every other clone of
the image reads. These tests ask the QEMU user itself (``libvirt-qemu``,
with its groups), before, during and after a clone runs.
"""

import grp
import os
import pwd
import subprocess

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import testbed

QEMU_USER = testbed.QEMU_USER
qemu_can_write = testbed.qemu_user_can_write


def _image_files(engine, name):
    image = engine.images.get(name)
    return [image.disk_path, image.memory_path,
            os.path.join(image.path, 'manifest.json')]


def test_the_qemu_user_can_read_the_frozen_disk(bed, golden):
    """The fix must not lock QEMU out: it still opens the base read-only."""
    image = bed.engine.images.get(golden[0].image.name)
    user = pwd.getpwnam(QEMU_USER)
    groups = [g.gr_gid for g in grp.getgrall() if QEMU_USER in g.gr_mem]
    subprocess.run(['head', '-c', '1', image.disk_path], check=True,
                   capture_output=True, user=user.pw_uid, group=user.pw_gid,
                   extra_groups=groups)


def test_eager_clones_never_get_write_access_to_the_image(bed, golden):
    name = golden[0].image.name
    files = _image_files(bed.engine, name)
    assert qemu_can_write(*files) == {}, 'before any clone'
    clones = bed.spawn(name, count=1)
    try:
        assert qemu_can_write(*files) == {}, 'while a clone runs'
        # The clone's own overlay is its QEMU's to write: the probe works.
        assert qemu_can_write(clones[0].overlay) != {}
    finally:
        bed.destroy_all(clones)
    assert qemu_can_write(*files) == {}, 'after the clone was destroyed'
    st = os.stat(files[0])
    assert st.st_uid == 0 and st.st_mode & 0o222 == 0


def test_the_shared_guest_cache_stays_root_s(bed):
    """Sources boot on overlays of the one guest cache every session
    shares: booting one leaves the cache out of QEMU's hands. (The cache
    is put back first: engines before this fix handed it to QEMU.)"""
    os.chown(bed.guest_image.disk, 0, 0)
    os.chmod(bed.guest_image.disk, 0o644)
    name = bed.name('cache')
    bed.guest_image.boot(bed.host, name, paused=True)
    try:
        assert qemu_can_write(bed.guest_image.disk) == {}
    finally:
        bed.guest_image.remove(bed.host, name)


def test_lazy_clones_never_get_write_access_to_the_template(bed, golden):
    """On a QEMU that opens the template read-only (8.2+), a lazy clone
    runs and nothing of the template or image is QEMU's to write. On an
    older QEMU (Debian 12's 7.2) lazy mode is refused by default, clearly
    and leaving nothing behind; with the fallback the clone is eager."""
    name = golden[0].image.name
    tmpdir = os.path.join(bed.templates, 'strict')
    strict = bed.engine_with(restore_mode='lazy', template_dir=tmpdir,
                             lazy_writable_templates=False)
    files = _image_files(strict, name)
    if not strict.templates.ram_readonly():
        before = bed.our_domains()
        with pytest.raises(exception.TemplateUnsafe,
                           match='lazy_writable_templates'):
            bed.spawn(name, engine=strict)
        assert bed.our_domains() == before
        assert strict.clones.list() == []
        assert not os.path.exists(tmpdir) or os.listdir(tmpdir) == []
        fallback = bed.engine_with(restore_mode='lazy', template_dir=tmpdir,
                                   lazy_writable_templates=False,
                                   lazy_fallback_to_eager=True)
        clones = bed.spawn(name, engine=fallback)
        try:
            assert [c.restore_mode for c in clones] == ['eager']
            assert qemu_can_write(*files) == {}
        finally:
            bed.destroy_all(clones, engine=fallback)
        return
    clones = bed.spawn(name, engine=strict)
    try:
        assert [c.restore_mode for c in clones] == ['lazy']
        template = strict.templates.get(
            strict.images.get(name).template_key)
        assert qemu_can_write(template.memory_path, template.state_path,
                              *files) == {}
    finally:
        bed.destroy_all(clones, engine=strict)
    assert qemu_can_write(*files) == {}


def test_opted_in_writable_templates_are_still_root_s(bed, golden):
    """Where the operator accepted clones opening the template read-write
    (QEMU < 8.2), its files are still root's (no QEMU can change their
    mode or replace them) and its device state is not QEMU's at all."""
    name = golden[0].image.name
    eng = bed.engine_with(restore_mode='lazy',
                          template_dir=os.path.join(bed.templates, 'optin'))
    clones = bed.spawn(name, engine=eng)
    try:
        template = eng.templates.get(eng.images.get(name).template_key)
        found = qemu_can_write(template.memory_path, template.state_path)
        assert template.state_path not in found
        assert 'chmod' not in found.get(template.memory_path, [])
        assert os.stat(template.memory_path).st_uid == 0
    finally:
        bed.destroy_all(clones, engine=eng)
