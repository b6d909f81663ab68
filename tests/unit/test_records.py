"""A host's own state records (records): written whole, read back as the
untrusted input they are, since QEMU can reach the directories they sit
in."""

import json
import os

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
