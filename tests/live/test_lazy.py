"""Lazy clones (``restore_mode = lazy``): a per-host template mapped
copy-on-write, on a real libvirtd with real guests."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import host as host_mod
from nova_live_snapshot import template as template_mod
from nova_live_snapshot import testbed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _sh(guest, script):
    rc, out, err = guest.agent_exec(['/bin/sh', '-c', script])
    assert rc == 0, err
    return out.decode().strip()


@pytest.fixture(scope='module')
def lazy(bed):
    """An engine of the session's bed in lazy mode."""
    return bed.engine_with(restore_mode='lazy')


def _fd_flags(pid, fd):
    """The open flags of descriptor ``fd`` of process ``pid``: the "flags:"
    line of its fdinfo (octal), which is not its first ("pos:" is)."""
    with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key == 'flags':
                return int(value.strip(), 8)
    raise AssertionError('no flags in /proc/%d/fdinfo/%s' % (pid, fd))


def _template_of(engine, image):
    template = engine.templates.get(engine.images.get(image).template_key)
    assert template is not None
    return template


def test_lazy_clones_resume_the_captured_state_and_are_reidentified(
        bed, source, golden, lazy):
    """Two lazy clones carry the source's in-memory token and a counter
    from the capture point on; each is re-identified exactly as an eager
    clone (every step reported, a new MAC inside the guest, its own
    hostname and DHCP lease); libvirt sees ordinary persistent domains whose
    next start is a boot, and the template lists them as its users."""
    result, before, _ = golden
    clones = bed.spawn(result.image.name, count=2, engine=lazy)
    try:
        guests = [bed.host.lookup(c.name) for c in clones]
        template = _template_of(lazy, result.image.name)
        for clone, guest in zip(clones, guests):
            assert clone.restore_mode == 'lazy'
            state = testbed.read_workload(guest)
            assert state.token == before.token
            assert state.counter >= before.counter
            report = clone.identity
            assert report['agent'] and report['reset'], report
            steps = {s['step']: s['status'] for s in report['steps']}
            for step in ('mac', 'entropy', 'hostname', 'clock', 'network',
                         'hooks'):
                assert steps[step] == 'done', (step, report)
            assert guest.is_persistent() and guest.is_running()
            assert domainxml.lazy_ram_file(guest.xml()) == \
                template.memory_path
            # The definition boots next time: no passthrough in it.
            assert 'qemu:commandline' not in guest.xml(inactive=True)

        macs = [_sh(g, 'cat /sys/class/net/eth0/address') for g in guests]
        assert macs == [c.mac for c in clones]
        assert _sh(source, 'cat /sys/class/net/eth0/address') not in macs
        names = [_sh(g, 'hostname') for g in guests]
        assert len(set(names)) == 2 and _sh(source, 'hostname') not in names
        addrs = [c.identity['facts']['ipv4'] for c in clones]
        assert len(set(addrs)) == 2 and None not in addrs
        for addr in addrs:
            assert bed.ping(addr.split('/')[0])

        listed = {t['image']: t for t in lazy.list_templates()}
        entry = listed[result.image.name]
        assert entry['clones'] == sorted(c.name for c in clones)
        assert entry['memory_mib'] == result.image.memory_mib
        assert 0 < entry['tmpfs_bytes'] <= (
            result.image.memory_mib + 1) * 1024 * 1024
    finally:
        bed.destroy_all(clones, engine=lazy)


def test_a_lazy_clone_is_off_the_network_until_re_identified(
        bed, golden, lazy):
    """The template's device state carries the NIC link of the stream it
    came from (up): a lazy exact copy on the shared network, never
    re-identified, still sees no carrier and gets no DHCP lease."""
    result, _, _ = golden
    copies = bed.spawn(result.image.name, exact_copy=True, engine=lazy)
    try:
        copy = bed.host.lookup(copies[0].name)
        # (carrier, lease)
        assert bed.on_the_network(copy) == (False, False)
    finally:
        bed.destroy_all(copies, engine=lazy)


def test_a_write_in_one_lazy_clone_is_private(bed, source, golden, lazy):
    """Clone A writes 16 MiB of random data and a marker into guest RAM (a
    tmpfs inside the guest); clone B, the source and a clone spawned
    afterwards from the same template see none of it, and the template's
    RAM file has the checksum it was built with."""
    result, before, _ = golden
    first = bed.spawn(result.image.name, count=2, engine=lazy)
    later = []
    try:
        a, b = (bed.host.lookup(c.name) for c in first)
        secret = 'written-by-%s' % first[0].name
        _sh(a, 'dd if=/dev/urandom of=/run/blob bs=1M count=16 2>/dev/null; '
               'echo %s > /run/marker' % secret)
        assert _sh(a, 'cat /run/marker') == secret
        later = bed.spawn(result.image.name, engine=lazy)
        c = bed.host.lookup(later[0].name)
        for guest in (b, c, source):
            assert _sh(guest, 'cat /run/marker 2>/dev/null || true') == ''
            assert testbed.read_workload(guest).token == before.token
        template = _template_of(lazy, result.image.name)
        assert lazy.templates.verify(template)
        assert sorted(lazy.templates.users(template)) == sorted(
            x.name for x in first + later)
    finally:
        bed.destroy_all(first + later, engine=lazy)


def test_deleting_the_clones_and_the_image_removes_the_template(
        bed, source, lazy):
    """A template outlives its clones while its image exists (the next
    clone needs no build), is kept while a clone maps it, and goes with the
    image once no clone maps it."""
    image = lazy.capture(source.name, bed.name('lazydoomed')).image
    clones = bed.spawn(image.name, count=2, engine=lazy)
    template = _template_of(lazy, image.name)
    assert os.path.isdir(template.path)
    lazy.destroy(clones[0].name)
    assert lazy.templates.users(template) == [clones[1].name]
    with pytest.raises(exception.ImageInUse):
        lazy.delete_image(image.name)
    lazy.destroy(clones[1].name)
    assert os.path.isdir(template.path)          # the image is still here
    assert lazy.templates.users(template) == []
    lazy.delete_image(image.name)
    assert not os.path.exists(template.path)
    assert image.name not in [t['image'] for t in lazy.list_templates()]


def test_no_room_in_tmpfs_is_a_clear_error_unless_eager_is_allowed(
        bed, golden):
    """With a tmpfs too small for the template the spawn fails naming the
    directory, what it has and what the template needs, and leaves no file
    there and no clone; with lazy_fallback_to_eager the clone is restored
    eagerly instead."""
    result, before, _ = golden
    tiny = bed.tmpfs('tiny-templates', '8m')
    strict = bed.engine_with(restore_mode='lazy', template_dir=tiny)
    clones_before = {c.name for c in bed.engine.clones.list()}
    with pytest.raises(exception.TemplateNoRoom) as err:
        bed.spawn(result.image.name, engine=strict)
    message = str(err.value)
    assert tiny in message and 'needs %d MiB' % (
        result.image.memory_mib + template_mod.STATE_HEADROOM_MIB) in message
    assert 'lazy_fallback_to_eager' in message
    assert os.listdir(tiny) == []
    assert {c.name for c in bed.engine.clones.list()} == clones_before

    relaxed = bed.engine_with(restore_mode='lazy', template_dir=tiny,
                              lazy_fallback_to_eager=True)
    clones = bed.spawn(result.image.name, engine=relaxed)
    try:
        assert clones[0].restore_mode == 'eager'
        guest = bed.host.lookup(clones[0].name)
        assert testbed.read_workload(guest).token == before.token
        assert os.listdir(tiny) == []
    finally:
        bed.destroy_all(clones, engine=relaxed)


def _template_domain(host, image_id, timeout=60):
    """The domain building ``image_id``'s template, once its QEMU runs."""
    prefix = 'nls-template-%s-' % image_id[:8]
    run_dir = host.qemu_run_dir()

    def running():
        for name in host.domain_names():
            if name.startswith(prefix) and os.path.exists(
                    os.path.join(run_dir, '%s.pid' % name)):
                return name
        return None
    return host_mod.wait_for(running, timeout, interval=0.01,
                             what='a template build of %s' % image_id)


def test_qemu_killed_mid_build_leaves_nothing(bed, golden):
    """QEMU killed while it builds a template: the spawn fails with a
    clear error, and no template file, partial directory, template domain
    or clone remains."""
    result, _, _ = golden
    tmpdir = os.path.join(bed.templates, 'killed-qemu')
    eng = bed.engine_with(restore_mode='lazy', template_dir=tmpdir)
    outcome = {}

    def spawn():
        try:
            outcome['clones'] = bed.spawn(result.image.name, engine=eng)
        except exception.LiveSnapshotError as e:
            outcome['error'] = e

    worker = threading.Thread(target=spawn)
    worker.start()
    name = _template_domain(bed.host, result.image.id)
    os.kill(bed.host.lookup(name).qemu_pid(), signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive()
    assert 'clones' not in outcome, 'the build finished before the kill'
    assert isinstance(outcome['error'], exception.TemplateBuildFailed), \
        outcome['error']
    assert 'Nothing of the template was left behind' in str(outcome['error'])
    assert os.listdir(tmpdir) == []
    assert bed.host.find(name) is None


def test_a_builder_that_dies_is_cleaned_up_by_the_next_engine(bed, golden):
    """The process building a template is killed (SIGKILL: no clean-up
    of its own): its partial directory and its paused template domain are
    removed when an engine next starts on the host."""
    result, _, _ = golden
    tmpdir = os.path.join(bed.templates, 'killed-builder')
    conf = bed.make_conf(restore_mode='lazy', template_dir=tmpdir)
    values = {k: getattr(conf, k) for k in (
        'connection_uri', 'image_dir', 'clone_dir', 'staging_dir',
        'template_dir', 'clone_network', 'restore_mode',
        'lazy_writable_templates')}
    script = ('import json, sys\n'
              'from nova_live_snapshot import conf, engine\n'
              'engine.Engine(conf.new(**json.loads(sys.argv[1])))'
              '.spawn(sys.argv[2], prefix=sys.argv[3])\n')
    child = subprocess.Popen(
        [sys.executable, '-c', script, json.dumps(values), result.image.name,
         'nlst-%s-clone' % bed.tag],
        env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        name = _template_domain(bed.host, result.image.id)
    finally:
        child.kill()
        child.wait(30)
    assert bed.host.find(name) is not None
    assert [e for e in os.listdir(tmpdir) if e.startswith('.partial-')]

    bed.engine_with(restore_mode='lazy', template_dir=tmpdir)
    assert os.listdir(tmpdir) == []
    assert bed.host.find(name) is None


def _virsh(host, *args):
    subprocess.run(['virsh', '-q', '-c', host.uri] + list(args),
                   check=True, capture_output=True, timeout=120)


def test_a_lazy_clone_is_an_ordinary_libvirt_domain(bed, golden, lazy):
    """What an operator does with virsh works on a lazy clone: its serial
    console carries on from the captured state, ``virsh destroy`` stops it
    (the template loses it as a user), ``virsh start`` boots it from its
    definition, which maps no template, into a fresh workload; the engine
    destroys it as any clone."""
    result, before, _ = golden
    clones = bed.spawn(result.image.name, engine=lazy)
    try:
        clone = clones[0]
        template = _template_of(lazy, result.image.name)

        def console_has(text):
            with open(clone.console_log, errors='replace') as f:
                return text in f.read()
        host_mod.wait_for(lambda: console_has(before.token), 30,
                          what="the source's token on the clone's console")

        _virsh(bed.host, 'destroy', clone.name)
        guest = bed.host.lookup(clone.name)
        assert guest.state() == 'shut off'
        assert clone.name not in lazy.templates.users(template)

        _virsh(bed.host, 'start', clone.name)
        testbed.wait_ready(guest, timeout=180)
        assert testbed.read_workload(guest).token != before.token
        assert domainxml.lazy_ram_file(guest.xml()) is None
    finally:
        bed.destroy_all(clones, engine=lazy)
    assert bed.host.find(clones[0].name) is None


def test_clones_on_another_kind_of_network_are_refused_clearly(bed, golden,
                                                               lazy):
    """A template holds a virtio-net state made on the clones' network (a
    tap); clones on QEMU's user-mode network could not load it: the spawn
    says so and what to do, and leaves no clone."""
    result, _, _ = golden
    lazy.templates.acquire(lazy.verify(result.image.name))
    usermode = bed.engine_with(restore_mode='lazy', clone_network=None)
    before = {c.name for c in usermode.clones.list()}
    with pytest.raises(exception.TemplateBuildFailed,
                       match="user-mode network.*delete the image"):
        bed.spawn(result.image.name, engine=usermode)
    assert {c.name for c in usermode.clones.list()} == before


def test_concurrent_first_spawns_build_one_template(bed, golden):
    """Two engines (as two processes would) spawn the first lazy clones of
    an image on a host at the same time: one template is built and both
    clones map it."""
    result, before, _ = golden
    tmpdir = os.path.join(bed.templates, 'concurrent')
    engines = [bed.engine_with(restore_mode='lazy', template_dir=tmpdir)
               for _ in range(2)]
    outcome = [None, None]

    def spawn(i):
        try:
            outcome[i] = bed.spawn(result.image.name, engine=engines[i])
        except exception.LiveSnapshotError as e:
            outcome[i] = e

    workers = [threading.Thread(target=spawn, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    clones = [c for o in outcome if isinstance(o, list) for c in o]
    try:
        assert len(clones) == 2, outcome
        assert os.listdir(tmpdir) == [result.image.template_key]
        template = engines[0].templates.get(result.image.template_key)
        assert engines[0].templates.users(template) == sorted(
            c.name for c in clones)
        for c in clones:
            assert testbed.read_workload(
                bed.host.lookup(c.name)).token == before.token
    finally:
        bed.destroy_all(clones, engine=engines[0])


def test_on_qemu_8_2_clones_map_the_template_read_only(bed, lazy, request):
    """Where QEMU has ``rom=off`` (8.2+; bookworm-backports' 10.0 in
    ``make backports-live``) the template's RAM file is root's and 0440, and
    a clone's QEMU runs with it opened read-only and mapped privately
    writable: its RAM backend asks ``readonly`` and ``rom=off``, the mapping
    of the file is private (copy-on-write) and no descriptor QEMU holds on
    it is open for writing. Skipped, and said so, on older QEMU (Debian 12's
    7.2), where the opt-in read-write path runs instead."""
    qemu = bed.host.qemu_version()
    if not lazy.templates.ram_readonly():
        pytest.skip('QEMU %s has no rom=off (8.2): clones open the template '
                    'read-write there' % qemu)
    # Only now: on an older QEMU the skip costs no boot and capture.
    result, before, _ = request.getfixturevalue('golden')
    clones = bed.spawn(result.image.name, engine=lazy)
    try:
        template = _template_of(lazy, result.image.name)
        assert template.ram_readonly, template.record
        st = os.stat(template.memory_path)
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o440)
        guest = bed.host.lookup(clones[0].name)
        pid = guest.qemu_pid()
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            args = f.read().split(b'\0')
        backends = [json.loads(a) for a in args
                    if a.startswith(b'{') and template.memory_path.encode()
                    in a]
        assert len(backends) == 1, args
        assert backends[0]['readonly'] is True
        assert backends[0]['rom'] == 'off' and backends[0]['share'] is False
        with open('/proc/%d/maps' % pid) as f:
            perms = {line.split()[1] for line in f
                     if line.rstrip('\n').endswith(template.memory_path)}
        assert perms and all(p.endswith('p') for p in perms), perms
        fd_dir = '/proc/%d/fd' % pid
        checked = 0
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(os.path.join(fd_dir, fd)) != \
                        template.memory_path:
                    continue
                flags = _fd_flags(pid, fd)
                assert flags & os.O_ACCMODE == os.O_RDONLY, (fd, flags)
                checked += 1
        assert checked, 'QEMU holds no descriptor of %s' % (
            template.memory_path)
        assert testbed.read_workload(guest).token == before.token
        assert lazy.templates.verify(template)
    finally:
        bed.destroy_all(clones, engine=lazy)
