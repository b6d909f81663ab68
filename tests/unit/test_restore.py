"""The parts of the restore seam that need no domain: the request's
checks, the choice between lazy and eager, the comparison of a clone's XML
with its image's, and the feeder that writes a clone's header and the
shared memory stream into a FIFO (a real FIFO, read here as libvirt would).
"""

import errno
import logging
import os
import threading

import pytest

from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import restore
from nova_live_snapshot import waiting


def _spec(**changes):
    spec = domainxml.DomainSpec(name='img-clone-1', disk_path='/c/disk.qcow2',
                                console_log='/c/console.log',
                                machine='pc-i440fx-7.2', link_up=False)
    return spec.with_identity(**changes)


IMAGE_FACTS = domainxml.facts(domainxml.render(_spec(name='source')),
                              'image XML')


def _request(**changes):
    spec = _spec()
    fields = dict(image='img', image_facts=IMAGE_FACTS,
                  domain_xml=domainxml.render(spec),
                  persistent_xml=domainxml.render(spec.with_identity(
                      link_up=True)),
                  memory=restore.Memory('/img/memory.save', object()),
                  fifo_dir='/c', hostname='img-clone-1')
    fields.update(changes)
    return restore.RestoreRequest(**fields)


def test_a_consistent_request_is_eager_unless_it_says_lazy():
    request = _request()
    assert request.mode == restore.EAGER
    assert request.name == 'img-clone-1'
    assert request.clone_facts.nic_models == ('virtio',)
    lazy = _request(mode=restore.LAZY, template=lambda: 'template')
    assert lazy.template() == 'template'


@pytest.mark.parametrize('changes, reason', [
    (dict(mode='fast'), "mode 'fast' is neither eager nor lazy"),
    (dict(mode=restore.LAZY), 'a lazy restore needs a template'),
    (dict(template=lambda: None), 'an eager restore maps no template'),
    (dict(memory=None), 'it names no memory stream'),
    (dict(hostname=None, prepared=object()), 'an exact copy is not '
     're-identified'),
    (dict(persistent_xml=domainxml.render(_spec(name='other'))),
     'defined as other'),
])
def test_an_inconsistent_request_is_refused_naming_why(changes, reason):
    with pytest.raises(exception.InvalidRestoreRequest, match=reason) as e:
        _request(**changes)
    assert 'img' in str(e.value)
    # A caller's bug, not an image's: a ValueError too.
    assert isinstance(e.value, ValueError)


def test_a_request_to_reidentify_needs_a_mac():
    spec = _spec()
    xml = domainxml.render(spec).replace('<mac address', '<nomac address')
    persistent = domainxml.render(spec)
    with pytest.raises(exception.InvalidRestoreRequest, match='no MAC'):
        _request(domain_xml=xml, persistent_xml=persistent)
    # An exact copy is not re-identified: no MAC needed.
    assert _request(domain_xml=xml, persistent_xml=persistent,
                    hostname=None).hostname is None


def test_the_clone_xml_that_fits_its_image_passes():
    restore.check_against_image('img', IMAGE_FACTS,
                                domainxml.render(_spec()), 'clone XML')


def test_every_difference_from_the_image_is_named():
    xml = domainxml.render(_spec(memory_mib=256, vcpus=2, machine='pc'))
    with pytest.raises(exception.IncompatibleImage) as e:
        restore.check_against_image('img', IMAGE_FACTS, xml, 'clone XML')
    message = str(e.value)
    assert 'img' in message
    assert 'the image has 128 MiB of memory, the clone 256 MiB' in message
    assert 'the image has 1 vCPUs, the clone 2' in message
    assert ('the image was captured on machine type pc-i440fx-7.2, the '
            'clone would run pc') in message


def test_a_template_that_can_be_had_is_chosen():
    assert restore.choose_template(lambda: 'template', False) == 'template'
    assert restore.choose_template(lambda: 'template', True) == 'template'


def _no_template():
    raise exception.TemplateNoRoom(image='img', path='/t', free_mib=1,
                                   needed_mib=144)


def test_without_a_template_the_restore_falls_back_to_eager_when_allowed(
        caplog):
    caplog.set_level(logging.WARNING, logger=restore.__name__)
    assert restore.choose_template(_no_template, True) is None
    (warning,) = caplog.records
    assert 'Restoring eagerly instead' in warning.getMessage()
    assert 'lazy_fallback_to_eager' in warning.getMessage()
    assert '/t' in warning.getMessage()


def test_without_a_template_and_no_fallback_the_restore_is_refused(caplog):
    with pytest.raises(exception.TemplateNoRoom):
        restore.choose_template(_no_template, False)
    assert not caplog.records


def test_only_a_template_error_falls_back():
    """Anything else is a failure, not a reason to restore eagerly."""
    def broken():
        raise exception.HypervisorError(operation='create domain',
                                        reason='refused')
    with pytest.raises(exception.HypervisorError):
        restore.choose_template(broken, True)


def _read_all(fifo, out):
    with open(fifo, 'rb') as f:
        out.append(f.read())


def _feed(feeder, fifo):
    """Run ``feeder`` against a reader of ``fifo``, as libvirt reads it;
    what the reader got, as a one-item list."""
    out = []
    reader = threading.Thread(target=_read_all, args=(fifo, out))
    reader.start()
    feeder.start()
    feeder.join(30)
    reader.join(30)
    return out


@pytest.fixture
def memory(tmp_path):
    path = tmp_path / 'memory.save'
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    return str(path), data


def test_feeder_writes_the_header_then_the_stream_slice(tmp_path, memory):
    """The clone's own header, then the image's QEMU stream from its
    offset, spliced from the one shared file: byte for byte."""
    path, data = memory
    fifo = str(tmp_path / 'clone' / 'restore.fifo')
    os.makedirs(os.path.dirname(fifo))
    os.mkfifo(fifo, 0o600)
    header = b'LibvirtQemudSave' + b'\0' * 76 + b'<domain/>\0'
    offset = 4096
    feeder = restore._Feeder(fifo, header, path, offset, len(data) - offset)
    out = _feed(feeder, fifo)
    assert not feeder.is_alive() and feeder.error is None
    assert out == [header + data[offset:]]


def test_feeder_reports_a_stream_shorter_than_promised(tmp_path, memory):
    path, data = memory
    fifo = str(tmp_path / 'short.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = restore._Feeder(fifo, b'h', path, 0, len(data) + 100)
    out = _feed(feeder, fifo)
    assert isinstance(feeder.error, EOFError)
    assert '100 bytes early' in str(feeder.error)
    assert out == [b'h' + data]


def _open_files():
    names = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            names.append(os.readlink('/proc/self/fd/' + fd))
        except OSError:
            continue
    return names


def test_release_frees_a_feeder_whose_reader_never_came(tmp_path, memory):
    """A restore that fails before libvirt opens the FIFO must not leave
    the feeder waiting for ever."""
    path, data = memory
    fifo = str(tmp_path / 'unread.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = restore._Feeder(fifo, b'header', path, 0, len(data))
    feeder.start()
    # The stream is larger than the pipe: with no reader draining it, the
    # feeder waits in write() for room.
    wchan = '/proc/self/task/%d/wchan' % feeder.native_id
    waiting.wait_for(lambda: open(wchan).read() in (
        'pipe_write', 'pipe_wait_writable'), 10,
                     interval=0.01, what='the feeder to wait for room')
    feeder.release()
    feeder.join(30)
    assert not feeder.is_alive()
    assert feeder.error is not None and feeder.error.errno == errno.EPIPE
    assert fifo not in _open_files()


def test_a_feeder_released_before_it_ran_does_not_wait(tmp_path, memory):
    """The restore may fail before the feeder's thread first runs: nothing
    it does after that waits for a reader."""
    path, data = memory
    fifo = str(tmp_path / 'early.fifo')
    os.mkfifo(fifo, 0o600)
    feeder = restore._Feeder(fifo, b'header', path, 0, len(data))
    feeder.release()
    feeder.start()
    feeder.join(30)
    assert not feeder.is_alive()
    assert feeder.error is not None and feeder.error.errno == errno.EPIPE
    # Neither end stays open.
    assert fifo not in _open_files()


@pytest.mark.parametrize('version, reads', [
    ('9.0.0', 1), ('11.1.0', 1), ('11.2.0', 2), ('11.3.0', 2)])
def test_the_fifo_carries_a_header_per_open_of_libvirt_s_restore(
        version, reads):
    """libvirt 11.2+ reads the header in an open of its own before the
    restore's open (bookworm-backports' 11.3: "image magic is incorrect"
    with one header)."""
    assert restore.header_reads(version) == reads


class _Guest:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def resume(self):
        self.log.append(('resume', self.name))

    def remove(self):
        self.log.append(('remove', self.name))


class _Host:
    """What the restorer asks of a host on the lazy path; says what it was
    asked, in order."""

    def __init__(self, log):
        self.log = log
        self.defined = set()

    def define(self, xml):
        name = domainxml.facts(xml, 'test').name
        self.defined.add(name)
        self.log.append(('define', name))

    def find(self, name):
        return _Guest(self.log, name) if name in self.defined else None


class _Template:
    memory_path = '/t/memory.ram'
    ram_readonly = True


class _Templates:
    def __init__(self, log, fail=None):
        self.log, self.fail = log, fail

    def restore(self, template, xml):
        if self.fail:
            raise self.fail
        self.log.append(('map', domainxml.lazy_ram_file(xml)))
        return _Guest(self.log, domainxml.facts(xml, 'test').name)


def _lazy(log, acquire, **changes):
    def template():
        log.append(('acquire',))
        return acquire()
    return _request(mode=restore.LAZY, template=template, hostname=None,
                    **changes)


def test_a_clone_is_defined_then_restored_over_its_definition():
    """The order both callers rely on: Nova builds the config drive from
    the definition (after_define), and a lazy template is had only then
    (it is built from the instance's disks)."""
    log = []
    restorer = restore.Restorer(_Host(log), templates=lambda: _Templates(log))
    restored = restorer.restore(
        _lazy(log, _Template), after_define=lambda: log.append(('drive',)))
    assert log == [('define', 'img-clone-1'), ('drive',), ('acquire',),
                   ('map', '/t/memory.ram'), ('resume', 'img-clone-1')]
    assert restored.mode == restore.LAZY
    assert restored.guest.name == 'img-clone-1'


def test_a_paused_restore_is_left_paused():
    log = []
    restorer = restore.Restorer(_Host(log), templates=lambda: _Templates(log))
    restorer.restore(_lazy(log, _Template), paused=True)
    assert ('resume', 'img-clone-1') not in log


def test_a_clone_that_cannot_resume_the_image_is_refused_before_anything():
    log = []
    restorer = restore.Restorer(_Host(log), templates=lambda: _Templates(log))
    spec = _spec(vcpus=4)
    with pytest.raises(exception.IncompatibleImage, match='4'):
        restorer.restore(_lazy(log, _Template,
                               domain_xml=domainxml.render(spec),
                               persistent_xml=domainxml.render(spec)))
    assert log == []


def test_a_failed_spawn_leaves_no_domain():
    log = []
    failure = exception.HypervisorError(operation='create domain',
                                        reason='refused')
    restorer = restore.Restorer(
        _Host(log), templates=lambda: _Templates(log, fail=failure))
    with pytest.raises(exception.HypervisorError):
        restorer.spawn_clone(_lazy(log, _Template))
    assert log[-1] == ('remove', 'img-clone-1')


def test_an_exact_copy_is_not_reidentified():
    log = []
    restorer = restore.Restorer(_Host(log), templates=lambda: _Templates(log))
    restored, report = restorer.spawn_clone(_lazy(log, _Template))
    assert report is None and restored.mode == restore.LAZY
