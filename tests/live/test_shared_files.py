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
import json
import subprocess

import pytest

QEMU_USER = 'libvirt-qemu'

# Run as the QEMU user: for each path, whether it can be opened for writing,
# or have its mode changed (which an owner can always do).
# The system Python: the test's own may live where that user cannot go.
PYTHON = '/usr/bin/python3'
_PROBE = r'''
import json, os, sys
out = {}
for path in sys.argv[1:]:
    verdict = []
    try:
        os.close(os.open(path, os.O_WRONLY))
        verdict.append('open for writing')
    except OSError:
        pass
    try:
        os.chmod(path, os.stat(path).st_mode & 0o7777)
        verdict.append('chmod')
    except OSError:
        pass
    out[path] = verdict
print(json.dumps(out))
'''


def qemu_can_write(*paths):
    """{path: [what the QEMU user could do to it]} for ``paths``, asked as
    that user with its supplementary groups."""
    try:
        user = pwd.getpwnam(QEMU_USER)
    except KeyError:
        pytest.fail('no %s user: libvirtd runs QEMU as someone else'
                    % QEMU_USER)
    groups = [g.gr_gid for g in grp.getgrall() if QEMU_USER in g.gr_mem]
    proc = subprocess.run(
        [PYTHON, '-I', '-c', _PROBE] + list(paths),
        user=user.pw_uid, group=user.pw_gid, extra_groups=groups,
        capture_output=True, text=True, check=True, cwd='/')
    return {p: v for p, v in json.loads(proc.stdout).items() if v}


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
