"""The instance UUID file: created when missing, read back, refused with a
clear error when it does not hold a UUID."""
import uuid

import pytest

from zcasync import instanceuuid


def test_missing_file_is_created_with_an_explanation(tmp_path):
    path = tmp_path / 'deep' / 'folder' / 'uuid.txt'
    value = instanceuuid.readUUID(str(path))
    assert isinstance(value, uuid.UUID)
    text = path.read_text()
    first, rest = text.split('\n', 1)
    assert uuid.UUID(first) == value
    assert 'ZC_ASYNC_UUID' in rest
    assert 'its own file' in rest
    # read back, unchanged
    assert instanceuuid.readUUID(str(path)) == value
    assert path.read_text() == text


def test_two_files_get_different_uuids(tmp_path):
    assert instanceuuid.readUUID(str(tmp_path / 'a.txt')) != \
        instanceuuid.readUUID(str(tmp_path / 'b.txt'))


def test_existing_uuid_is_read(tmp_path):
    path = tmp_path / 'uuid.txt'
    value = uuid.uuid4()
    path.write_text(str(value) + '\n\nwhatever the operator wrote\n')
    assert instanceuuid.readUUID(str(path)) == value


@pytest.mark.parametrize('content', ['not a uuid\n', '', '\n1234\n'])
def test_corrupt_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / 'uuid.txt'
    path.write_text(content)
    with pytest.raises(ValueError) as raised:
        instanceuuid.readUUID(str(path))
    message = str(raised.value)
    assert str(path) in message
    assert 'does not start with a UUID' in message
    assert 'remove it' in message and 'ZC_ASYNC_UUID' in message
    assert path.read_text() == content  # left for the operator to see


def test_path_and_module_uuid_follow_the_environment(tmp_path, monkeypatch):
    path = tmp_path / 'process-1.txt'
    monkeypatch.setenv('ZC_ASYNC_UUID', str(path))
    assert instanceuuid.path() == str(path)
    assert instanceuuid.readUUID() == instanceuuid.readUUID(str(path))
    monkeypatch.delenv('ZC_ASYNC_UUID')
    monkeypatch.chdir(tmp_path)
    assert instanceuuid.path() == str(tmp_path / 'uuid.txt')


def test_getUUID_is_the_module_uuid():
    assert instanceuuid.getUUID() is instanceuuid.UUID
    assert instanceuuid.UUID == instanceuuid.readUUID(instanceuuid.path())


def test_the_uuid_is_read_on_first_use_from_the_environment(
        tmp_path, monkeypatch):
    path = tmp_path / 'first-use.txt'
    value = uuid.uuid4()
    path.write_text(value.hex + '\n')
    previous = instanceuuid.getUUID()
    monkeypatch.setenv('ZC_ASYNC_UUID', str(path))
    instanceuuid._reset()
    try:
        assert instanceuuid.currentUUID() is None  # nothing read yet
        assert instanceuuid.UUID == value
        assert instanceuuid.getUUID() is instanceuuid.UUID
        assert instanceuuid.currentUUID() == value
    finally:
        monkeypatch.undo()
        instanceuuid._reset()
    assert instanceuuid.UUID == previous


def test_racing_creators_end_with_one_complete_file(tmp_path):
    """Processes starting at once on one path all read the same UUID; the
    file never shows half-written."""
    import threading
    path = str(tmp_path / 'raced.txt')
    results, start = [], threading.Barrier(8)

    def create():
        start.wait()
        results.append(instanceuuid.readUUID(path))
    threads = [threading.Thread(target=create) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert uuid.UUID(open(path).readline().strip()) == results[0]
    assert [p.name for p in tmp_path.iterdir()] == ['raced.txt']
