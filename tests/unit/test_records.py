"""A host's own state records (records): written whole, read back as the
untrusted input they are, since QEMU can reach the directories they sit
in."""

import json
import os
import threading

import pytest

from nova_live_snapshot import clone as clone_mod
from nova_live_snapshot import exception
from nova_live_snapshot import records
from nova_live_snapshot.virt import journal as journal_mod


def test_a_record_round_trips_with_mode_0600(tmp_path):
    path = str(tmp_path / 'r.json')
    records.write(path, {'a': 1, 'b': [1, 2]})
    assert records.read(path) == {'a': 1, 'b': [1, 2]}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not os.path.exists(path + '.tmp')


@pytest.mark.parametrize('content, reason', [
    (b'[' * 100000 + b']' * 100000, 'nested too deeply'),
    (b'{"a": 1, "a": 2}', 'appears twice'),
    (b'{"a": NaN}', 'not a JSON number'),
    (b'[1, 2]', 'not a JSON object'),
    (b'\xff\xfe', 'not UTF-8'),
    (b'{"a": ' + b' ' * records.MAX_BYTES + b'1}', 'larger than'),
    (b'{', 'not JSON'),
])
def test_a_bad_record_is_unreadable_with_its_reason(tmp_path, content,
                                                    reason):
    path = tmp_path / 'r.json'
    path.write_bytes(content)
    with pytest.raises(exception.UnreadableRecord) as e:
        records.read(str(path))
    assert reason in str(e.value) and str(path) in str(e.value)
    # Callers that skip a bad record catch ValueError.
    assert isinstance(e.value, ValueError)


def test_a_symlinked_record_is_not_followed(tmp_path):
    secret = tmp_path / 'elsewhere.json'
    secret.write_text('{"a": 1}')
    link = tmp_path / 'r.json'
    link.symlink_to(secret)
    with pytest.raises(exception.UnreadableRecord, match='symbolic link'):
        records.read(str(link))


def test_a_fifo_is_not_a_record_and_does_not_block(tmp_path):
    path = tmp_path / 'r.json'
    os.mkfifo(path)
    with pytest.raises(exception.UnreadableRecord, match='regular file'):
        records.read(str(path))


def test_write_replaces_a_planted_symlink_instead_of_writing_through_it(
        tmp_path):
    target = tmp_path / 'target'
    target.write_text('keep')
    (tmp_path / 'r.json.tmp').symlink_to(target)
    with pytest.raises(OSError):
        records.write(str(tmp_path / 'r.json'), {'a': 1})
    assert target.read_text() == 'keep'


def test_clone_records_that_are_not_a_clones_are_skipped_and_named(tmp_path):
    clones = clone_mod.CloneManager.__new__(clone_mod.CloneManager)
    clones.root = str(tmp_path)
    for name, content in (('a', '{"name": "a"}'), ('b', '[]'),
                          ('c', '{"unknown": 1}')):
        os.mkdir(tmp_path / name)
        (tmp_path / name / clone_mod.CLONE_RECORD).write_text(content)
    assert clones.list() == []
    with pytest.raises(exception.UnreadableRecord, match='c'):
        clones.get('c')
    with pytest.raises(exception.CloneNotFound):
        clones.get('d')


def test_an_unreadable_capture_journal_is_removed_and_replaced(tmp_path):
    journal = journal_mod.Journal(str(tmp_path))
    (tmp_path / 'x.capture.json').write_text('{"image_id": "x"')
    (tmp_path / 'y.capture.json').write_text(json.dumps({'image_id': 'y'}))
    assert list(journal.entries()) == [{'image_id': 'y'}]
    assert not (tmp_path / 'x.capture.json').exists()
    (tmp_path / 'z.capture.json').write_text('[')
    journal.write('z', overlay='/p')
    assert journal.read('z') == {'image_id': 'z', 'overlay': '/p'}


def _dead_pid():
    """A process id that no process has (one that just exited)."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def test_a_partial_directory_names_its_owner_and_is_never_an_entry(tmp_path):
    path = records.make_partial(str(tmp_path), 'img', 'writer.pid',
                                suffix='abcd1234')
    assert os.path.basename(path) == '.partial-img-abcd1234'
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert records.owner_alive(path, 'writer.pid')
    other = records.make_partial(str(tmp_path), 'img', 'writer.pid')
    assert other != path and os.path.basename(other).startswith(
        records.PARTIAL_PREFIX + 'img-')


def test_the_sweep_takes_only_partials_whose_owner_is_gone(tmp_path):
    root = str(tmp_path)
    live = records.make_partial(root, 'live', 'owner.pid')
    dead = records.make_partial(root, 'dead', 'owner.pid')
    with open(os.path.join(dead, 'owner.pid'), 'w') as f:
        f.write(str(_dead_pid()))
    ownerless = records.make_partial(root, 'ownerless', 'owner.pid')
    os.unlink(os.path.join(ownerless, 'owner.pid'))
    os.mkdir(tmp_path / 'published')
    seen = []
    removed = records.sweep_partials(root, 'owner.pid',
                                     before_remove=seen.extend)
    assert removed == sorted([os.path.basename(dead),
                              os.path.basename(ownerless)])
    assert seen == [os.path.join(root, name) + '/' for name in removed]
    assert sorted(os.listdir(root)) == sorted(
        [os.path.basename(live), 'published'])
    assert records.sweep_partials(str(tmp_path / 'none'), 'owner.pid') == []


def test_free_space_is_what_an_unprivileged_writer_may_use(tmp_path):
    st = os.statvfs(tmp_path)
    assert records.free_mib(str(tmp_path)) == (
        st.f_bavail * st.f_frsize // (1024 * 1024))


def test_a_lock_excludes_other_threads_of_the_process(tmp_path):
    """What the stores rely on inside one nova-compute: a lock held by one
    thread is not held by another (POSIX record locks would be)."""
    path = str(tmp_path / 'entry.lock')

    def try_lock(got):
        with records.lock(path, blocking=False) as other:
            got.append(other)

    with records.lock(path) as held:
        assert held is not None
        got = []
        thread = threading.Thread(target=try_lock, args=(got,))
        thread.start()
        thread.join(10)
        assert got == [None]
    with records.lock(path, blocking=False) as again:
        assert again is not None
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_readers_share_a_lock_that_a_writer_shared_and_writers_wait(
        tmp_path):
    path = str(tmp_path / 'entry.lock')
    with records.lock(path) as writer:
        writer.share()
        with records.lock(path, shared=True, blocking=False) as reader:
            assert reader is not None
        with records.lock(path, blocking=False) as other_writer:
            assert other_writer is None


def test_a_directory_is_locked_without_a_lock_file(tmp_path):
    with records.lock(str(tmp_path)) as held:
        assert held is not None
        with records.lock(str(tmp_path), blocking=False) as other:
            assert other is None
    assert os.listdir(tmp_path) == []
