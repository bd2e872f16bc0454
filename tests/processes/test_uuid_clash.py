"""Two workers started with the same UUID file: the second reports the
clash in one line and exits with code 8; the first keeps working."""
from tests.processes import jobfuncs
from tests.processes.conftest import Client, waitFor, readUUID


def test_second_worker_with_the_same_uuid_exits_and_first_keeps_working(
        processes, zeo, tmp_path):
    uuid_file = tmp_path / 'shared.uuid'
    first = processes.worker('first', zeo.uri, uuid_file)
    client = Client(zeo.uri)
    try:
        uuid = readUUID(waitFor(lambda: uuid_file.exists() and uuid_file,
                                30, 'the uuid file'))
        waitFor(lambda: client.activeDispatchers() == {uuid}, 60,
                'the first worker')
        second = processes.worker('second', zeo.uri, uuid_file)
        assert second.wait(60) == 8
        errors = [line for line in second.text().splitlines()
                  if line.startswith('zcasync worker: error: ')]
        assert errors == [
            'zcasync worker: error: UUID %s is in use by another live '
            "process in queue '': every worker needs its own UUID file "
            '(give each one --uuid-file PATH, or ZC_ASYNC_UUID); do not '
            'copy UUID files between workers' % uuid]
        assert 'Traceback' not in second.text()

        log = str(tmp_path / 'runs.log')
        [oid] = client.put((jobfuncs.record, 1, log))
        waitFor(lambda: client.completed([oid]), 30, 'the job')
        assert client.job(oid).result == [1, first.pid]
        assert first.alive
        assert client.activeDispatchers() == {uuid}
        assert 'CRITICAL' not in first.text()  # never thought itself dead
    finally:
        client.close()
