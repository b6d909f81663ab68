"""Files no QEMU may write belong to the service's own user, whoever that is
(ownership.py, liveimage.py, virt/disks.py): root for the engine, an
unprivileged user for nova-compute, which takes a file back from the QEMU
user only through Nova's privsep daemon.

The unprivileged cases run in a forked child that really drops to another
user (these tests run as root, as every suite here does), and the privsep
case talks to a real privsep daemon of Nova's own sys_admin context,
forked while the child was still root, as ``privsep-helper`` would be
started through sudo.
"""

import grp
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import uuid

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import liveimage
from nova_live_snapshot import ownership
from nova_live_snapshot import testbed
from nova_live_snapshot.virt import disks

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='changes users: run as root')

#: The unprivileged service user of these tests, and the QEMU group.
SERVICE = pwd.getpwnam('nobody')
QEMU_GROUP = testbed.QEMU_USER


@pytest.fixture
def workdir():
    """A directory the service user owns, traversable by QEMU."""
    path = '/var/tmp/nls-unit-own-%s' % uuid.uuid4().hex[:8]
    os.mkdir(path, 0o711)
    os.chown(path, SERVICE.pw_uid, SERVICE.pw_gid)
    yield path
    shutil.rmtree(path)


def as_service(fn, groups=(), before_drop=None):
    """``fn()`` in a forked child running as the service user with the
    supplementary ``groups`` (gids); its value, or the exception it raised.
    ``before_drop()`` runs in the child while it is still root."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            if before_drop is not None:
                before_drop()
            os.setgroups(list(groups))
            os.setgid(SERVICE.pw_gid)
            os.setuid(SERVICE.pw_uid)
            try:
                result = ('value', fn())
            except Exception as e:
                result = ('error', e)
            with os.fdopen(write_end, 'wb') as f:
                pickle.dump(result, f)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, 'rb') as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == 'error':
        raise value
    return value


def _make(path, uid=SERVICE.pw_uid, gid=SERVICE.pw_gid, mode=0o600):
    with open(path, 'wb') as f:
        f.write(b'frozen')
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def test_as_root_a_shared_file_is_root_s():
    """The standalone engine's guarantee is unchanged: root owns what it
    shares read-only with QEMU."""
    assert (ownership.service_uid(), ownership.service_gid()) == (0, 0)


def test_an_unprivileged_service_shares_read_only_files_as_their_owner(
        workdir):
    """The file stays the service user's, 0440 with the QEMU group: the
    QEMU user can read it and can neither write it nor change its mode."""
    qemu_gid = grp.getgrnam(QEMU_GROUP).gr_gid
    path = _make(os.path.join(workdir, 'disk.qcow2'))
    store = liveimage.ImageStore(os.path.join(workdir, 'images'), QEMU_GROUP)
    os.chown(store.root, SERVICE.pw_uid, SERVICE.pw_gid)
    as_service(lambda: store.share_read_only(path), groups=[qemu_gid])
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (SERVICE.pw_uid, qemu_gid)
    assert stat.S_IMODE(st.st_mode) == 0o440
    assert testbed.qemu_user_can_write(path) == {}


def test_a_service_outside_the_qemu_group_is_told_to_join_it(workdir):
    path = _make(os.path.join(workdir, 'disk.qcow2'))
    store = liveimage.ImageStore(os.path.join(workdir, 'images'), QEMU_GROUP)
    with pytest.raises(exception.NotInQemuGroup, match='usermod -aG'):
        as_service(lambda: store.share_read_only(path))
    assert os.stat(path).st_uid == SERVICE.pw_uid


def test_a_file_someone_else_owns_is_never_shared(workdir):
    """An unprivileged service without a privileged chown cannot take a
    file back; it refuses to share one that another user (here: the QEMU
    user) could rewrite."""
    qemu = pwd.getpwnam(testbed.QEMU_USER)
    qemu_gid = grp.getgrnam(QEMU_GROUP).gr_gid
    path = _make(os.path.join(workdir, 'ram'), qemu.pw_uid, qemu.pw_gid,
                 0o660)
    store = liveimage.ImageStore(os.path.join(workdir, 'images'), QEMU_GROUP)
    os.chown(store.root, SERVICE.pw_uid, SERVICE.pw_gid)
    with pytest.raises(exception.ForeignOwner, match='uid %d' % qemu.pw_uid):
        as_service(lambda: store.share_with_qemu(path, 0o660),
                   groups=[qemu_gid])


def test_nova_s_base_file_stays_the_service_user_s_without_privsep(workdir):
    """A base file nova-compute made is locked down unprivileged: write
    bits off for group and others, the read bit for QEMU on."""
    path = _make(os.path.join(workdir, 'base'), mode=0o664)
    # No privileged chown: had lock_down needed one, this would fail.
    as_service(lambda: disks.lock_down(path))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (SERVICE.pw_uid, SERVICE.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o644


def test_what_libvirtd_wrote_as_root_is_taken_back_through_privsep(workdir):
    """A capture's memory file, root's and 0600 as libvirtd writes it,
    becomes the unprivileged service's through Nova's privsep daemon (and
    without one the service says it cannot)."""
    import nova.privsep.path  # noqa: F401
    from oslo_privsep import priv_context
    path = _make(os.path.join(workdir, 'memory'), 0, 0)
    with pytest.raises(exception.ForeignOwner, match='uid 0'):
        as_service(lambda: ownership.take_back(path))

    def take_back():
        ownership.use_privileged_chown(disks.privileged_chown)
        ownership.take_back(path)
        with open(path, 'rb') as f:
            return f.read()
    assert as_service(take_back, before_drop=lambda: nova.privsep.
                      sys_admin_pctxt.start(
                          method=priv_context.Method.FORK)) == b'frozen'
    assert os.stat(path).st_uid == SERVICE.pw_uid


def _capabilities(pid):
    """The effective and permitted capability masks of ``pid``."""
    with open('/proc/%d/status' % pid) as f:
        fields = dict(line.split(':\t', 1) for line in f)
    return int(fields['CapEff'], 16), int(fields['CapPrm'], 16)


def test_a_base_libvirt_gave_to_qemu_is_taken_back_through_nova_s_privsep(
        workdir):
    """libvirt's DAC driver left Nova's base file to the QEMU user; the
    unprivileged service gets it back through Nova's sys_admin privsep
    daemon, which holds exactly that context's capabilities and nothing
    else, never through root of its own."""
    # Imported before the child drops to a user that may not read the
    # interpreter's own directories.
    import nova.privsep
    import nova.privsep.path  # noqa: F401
    from oslo_privsep import priv_context
    qemu = pwd.getpwnam(testbed.QEMU_USER)
    path = _make(os.path.join(workdir, 'base'), qemu.pw_uid, qemu.pw_gid,
                 0o664)
    context = nova.privsep.sys_admin_pctxt
    declared = sum(1 << cap for cap in context.conf.capabilities)

    def start_daemon():
        context.start(method=priv_context.Method.FORK)

    def lock_down_and_look():
        ownership.use_privileged_chown(disks.privileged_chown)
        disks.lock_down(path)
        me = os.getpid()
        with open('/proc/%d/task/%d/children' % (me, me)) as f:
            daemons = [int(p) for p in f.read().split()]
        return os.getuid(), [_capabilities(p) for p in daemons]
    uid, daemon_caps = as_service(lock_down_and_look,
                                  before_drop=start_daemon)
    assert uid == SERVICE.pw_uid
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (SERVICE.pw_uid, SERVICE.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert daemon_caps == [(declared, declared)]


def test_qemu_img_runs_under_limits(tmp_path, monkeypatch):
    """Every qemu-img run has its resource limits (processutils' prlimit
    wrapper): the files it makes are 0600, and under a limit too small for
    it qemu-img fails, with an error that says so."""
    from oslo_concurrency import processutils

    from nova_live_snapshot import qemuimg
    base, overlay = str(tmp_path / 'base'), str(tmp_path / 'overlay')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'],
                   check=True)
    qemuimg.create_overlay(base, overlay)
    assert stat.S_IMODE(os.stat(overlay).st_mode) == 0o600
    assert qemuimg.info(overlay)['backing-filename'] == base
    monkeypatch.setattr(qemuimg, 'LIMITS', processutils.ProcessLimits(
        address_space=8 << 20))
    with pytest.raises(exception.LiveSnapshotError, match='qemu-img info'):
        qemuimg.info(overlay)
