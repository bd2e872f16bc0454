"""A worker killed with SIGKILL while a coroutine job (``async def``,
awaited on its event loop, issue 15) runs there, on a ZEO server: a
sibling recovers the job once the dead worker's death interval has
passed, and runs it again to completion, as any job."""
import signal

from tests.processes import jobfuncs
from tests.processes.conftest import (
    settled, Client, waitFor, readUUID, startLines, DEATH)


def test_killed_worker_coroutine_job_is_recovered_by_a_sibling(
        processes, zeo, tmp_path):
    victim = processes.worker('victim', zeo.uri)
    client = Client(zeo.uri)
    try:
        victim_uuid = readUUID(waitFor(
            lambda: (tmp_path / 'victim.uuid').exists() and
            tmp_path / 'victim.uuid', 30, 'the uuid file'))
        waitFor(lambda: client.activeDispatchers() == {victim_uuid}, 60,
                'the first worker')
        [job_oid] = client.put((jobfuncs.holdAsync, 1, str(tmp_path)))
        waitFor(lambda: startLines(tmp_path), 60, 'the coroutine start')
        assert startLines(tmp_path) == [(1, victim.pid)]
        sibling = processes.worker('sibling', zeo.uri)
        waitFor(lambda: len(client.activeDispatchers()) == 2, 60,
                'the sibling worker')

        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        (tmp_path / 'release-1').touch()
        waitFor(lambda: client.completed([job_oid]), DEATH + 30,
                'recovery of the coroutine job')

        job = client.job(job_oid)
        assert job.result == [1, sibling.pid]
        assert job.annotations['runs'] == 1  # only the sibling's committed
        assert job.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}
        assert startLines(tmp_path) == [(1, victim.pid), (1, sibling.pid)]
        queue = client.queue()
        assert queue.dispatchers[victim_uuid].activated is None
        assert len(queue) == 0
        settled(client)
        assert sibling.alive
    finally:
        client.close()
