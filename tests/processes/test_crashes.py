"""Workers killed with SIGKILL in the middle of jobs, on a ZEO server.

- a job with the default policy is recovered by a sibling once the dead
  worker's death interval has passed, runs again there and completes;
  a NeverRetry job held by the same worker completes with AbortedError and
  never runs again;
- a job that kills its worker every time stops being retried after its
  policy's limit (``jobfuncs.RetryTwice``: 2 interruptions allowed instead
  of the default 9, to keep the test short) and completes with AbortedError;
- a worker restarted with the UUID file of a killed worker waits until its
  old record is found dead, then starts and recovers its own job.

``jobfuncs.hold`` jobs log ``start N PID`` and then wait for a release
file, so the test knows which process runs a job and decides when it may
finish.
"""
import signal

from zcasync.interfaces import AbortedError
from zcasync.utils import isFailure

from tests.processes import jobfuncs
from tests.processes.conftest import (
    settled,
    Client, waitFor, readUUID, startLines, DEATH)


def started(directory, count):
    return waitFor(lambda: len(startLines(directory)) >= count and
                   startLines(directory), 60, '%d job start(s)' % count)


def test_killed_worker_jobs_are_recovered_by_a_sibling(processes, zeo,
                                                       tmp_path):
    victim = processes.worker('victim', zeo.uri)
    client = Client(zeo.uri)
    try:
        victim_uuid = readUUID(waitFor(
            lambda: (tmp_path / 'victim.uuid').exists() and
            tmp_path / 'victim.uuid', 30, 'the uuid file'))
        waitFor(lambda: client.activeDispatchers() == {victim_uuid}, 60,
                'the first worker')
        [normal] = client.put((jobfuncs.hold, 1, str(tmp_path)))
        [never] = client.put((jobfuncs.hold, 2, str(tmp_path)),
                             retry_policy_factory='NeverRetry')
        starts = started(tmp_path, 2)
        assert {pid for n, pid in starts} == {victim.pid}
        sibling = processes.worker('sibling', zeo.uri)
        waitFor(lambda: len(client.activeDispatchers()) == 2, 60,
                'the sibling worker')

        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        (tmp_path / 'release-1').touch()
        (tmp_path / 'release-2').touch()
        waitFor(lambda: client.completed([normal, never]), DEATH + 30,
                'recovery of both jobs')

        job = client.job(normal)
        assert job.result == [1, sibling.pid]
        assert job.annotations['runs'] == 1
        assert job.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}
        job = client.job(never)
        assert isFailure(job.result)
        assert job.result.check(AbortedError)
        assert 'runs' not in job.annotations
        # job 1 ran again in the sibling; job 2 never ran again
        assert startLines(tmp_path) == [
            (1, victim.pid), (2, victim.pid), (1, sibling.pid)] or \
            startLines(tmp_path) == [
            (2, victim.pid), (1, victim.pid), (1, sibling.pid)]
        queue = client.queue()
        assert queue.dispatchers[victim_uuid].activated is None
        assert len(queue) == 0
        settled(client)
        assert sibling.alive
    finally:
        client.close()


def test_a_job_that_kills_its_worker_stops_after_the_policy_limit(
        processes, zeo, tmp_path):
    client = Client(zeo.uri)
    workers = [processes.worker('worker-a', zeo.uri),
               processes.worker('worker-b', zeo.uri)]
    try:
        waitFor(lambda: len(client.activeDispatchers()) == 2, 60,
                'two workers')
        [killer] = client.put((jobfuncs.killWorker, 1, str(tmp_path)),
                              retry_policy_factory=jobfuncs.RetryTwice)
        deaths = 0

        def doneOrReplace():
            nonlocal deaths
            for worker in list(workers):
                if not worker.alive:
                    workers.remove(worker)
                    deaths += 1
                    workers.append(processes.worker(
                        'worker-%d' % (deaths + 2), zeo.uri))
            return client.completed([killer])
        waitFor(doneOrReplace, 3 * (DEATH + 20), 'the killer job to give up',
                interval=0.2)

        job = client.job(killer)
        assert isFailure(job.result) and job.result.check(AbortedError)
        assert job.annotations['zcasync.RetryTwice'] == {'interruption': 3}
        starts = startLines(tmp_path)
        assert len(starts) == 3 == deaths  # ran 3 times, killed 3 workers
        assert len({pid for n, pid in starts}) == 3
        assert len(client.queue()) == 0
        settled(client)
    finally:
        client.close()


def test_a_restarted_worker_waits_for_its_old_record_and_recovers(
        processes, zeo, tmp_path):
    uuid_file = tmp_path / 'same.uuid'
    death = 6  # long enough for the new worker to start before it passes
    first = processes.worker('first', zeo.uri, uuid_file, death=death)
    client = Client(zeo.uri)
    try:
        uuid = readUUID(waitFor(lambda: uuid_file.exists() and uuid_file,
                                30, 'the uuid file'))
        waitFor(lambda: client.activeDispatchers() == {uuid}, 60,
                'the worker')
        [oid] = client.put((jobfuncs.hold, 7, str(tmp_path)))
        started(tmp_path, 1)
        first.signal(signal.SIGKILL)
        first.wait(10)
        (tmp_path / 'release-7').touch()
        again = processes.worker('again', zeo.uri, uuid_file, death=death)
        waitFor(lambda: client.completed([oid]), death + 30,
                'the restarted worker to recover its job')
        assert client.job(oid).result == [7, again.pid]
        assert startLines(tmp_path) == [(7, first.pid), (7, again.pid)]
        assert 'waiting up to' in again.text()
        assert client.activeDispatchers() == {uuid}
    finally:
        client.close()
