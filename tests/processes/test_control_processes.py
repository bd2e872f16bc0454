"""Cancel running jobs across processes (issue 15): the test process
(another ZEO client) cancels jobs that a worker process runs.  A
cooperative job hears it through the invalidations its worker listens to
and stops on its own; a job that ignores it is completed anyway after the
grace period, its late result discarded, and the worker goes on running
jobs with its full size.  A coroutine job's task is cancelled (asyncio's
CancelledError at its await) and its slot freed."""
import os
import time

import pytest

from zcasync import control
from zcasync import interfaces
from tests.processes import jobfuncs
from tests.processes.conftest import Client, settled, startLines, waitFor


@pytest.fixture
def client(zeo):
    c = Client(zeo.uri)
    yield c
    c.close()


def noticed(directory):
    path = os.path.join(str(directory), 'noticed.log')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(n), float(t)) for word, n, t in
                (line.split() for line in f)]


def test_cancel_running_jobs_in_a_worker_process(processes, zeo, client,
                                                 tmp_path):
    worker = processes.worker('worker', zeo.uri, size=2)
    waitFor(lambda: client.activeDispatchers(), 60, 'the worker to start')
    [coop, stuck] = [client.put((jobfuncs.cooperate, 1, str(tmp_path)))[0],
                     client.put((jobfuncs.hold, 2, str(tmp_path)))[0]]
    waitFor(lambda: len(startLines(tmp_path)) == 2, 60, 'both jobs to start')

    # the cooperative job: asked with a long grace, it stops on its own
    job = client.job(coop)
    assert job.status == interfaces.ACTIVE
    asked = time.time()
    assert job.cancel(grace=30) == control.STOPPING
    [(n, when)] = waitFor(lambda: noticed(tmp_path), 30,
                          'the job to notice it was cancelled')
    latency = when - asked
    print('cancelled() became true %.3f s after the cancel' % latency)
    assert latency < 30  # (on its own, before the grace period ended)
    waitFor(lambda: client.completed([coop]), 30, 'the job to complete')
    result = client.job(coop).result
    assert result.check(interfaces.CancelledError)

    # the job that ignores it: completed after its grace period
    job = client.job(stuck)
    assert job.cancel(grace=0.5) == control.STOPPING
    waitFor(lambda: client.completed([stuck]), 30, 'the forced completion')
    assert client.job(stuck).result.check(interfaces.CancelledError)
    # its slot is free and its thread replaced: two more jobs run at once
    more = client.put((jobfuncs.hold, 3, str(tmp_path)),
                      (jobfuncs.hold, 4, str(tmp_path)))
    waitFor(lambda: len(startLines(tmp_path)) == 4, 60,
            'two more jobs to run at once')
    for n in (2, 3, 4):
        (tmp_path / ('release-%d' % n)).touch()
    waitFor(lambda: client.completed(more), 30, 'the other jobs')
    settled(client)
    # the ignoring run returned late: its result was discarded
    waitFor(lambda: 'was handed to another run' in worker.text(), 30,
            'the late run to be refused')
    job = client.job(stuck)
    assert job.result.check(interfaces.CancelledError)
    assert 'runs' not in job.annotations  # its commit never landed
    assert [client.job(oid).result[0] for oid in more] == [3, 4]


def test_cancel_a_running_coroutine_job_in_a_worker_process(
        processes, zeo, client, tmp_path):
    processes.worker('worker', zeo.uri, size=1)
    waitFor(lambda: client.activeDispatchers(), 60, 'the worker to start')
    [oid] = client.put((jobfuncs.awaitCancel, 1, str(tmp_path)))
    waitFor(lambda: len(startLines(tmp_path)) == 1, 60, 'the job to start')
    job = client.job(oid)
    assert job.status == interfaces.ACTIVE
    asked = time.time()
    assert job.cancel(grace=30) == control.STOPPING
    # CancelledError at its await, with zcasync.local.cancelled() true
    [(n, when)] = waitFor(lambda: noticed(tmp_path), 30,
                          'the task to be cancelled')
    print('the coroutine was cancelled %.3f s after the cancel'
          % (when - asked))
    assert when - asked < 30  # (before the grace period ended)
    waitFor(lambda: client.completed([oid]), 30, 'the job to complete')
    result = client.job(oid).result
    assert result.check(interfaces.CancelledError)
    assert 'cancelled while it ran' in result.getErrorMessage()
    # its slot (the agent's only one) is free: the next job runs
    [after] = client.put((jobfuncs.holdAsync, 2, str(tmp_path)))
    waitFor(lambda: len(startLines(tmp_path)) == 2, 60, 'the next job')
    (tmp_path / 'release-2').touch()
    waitFor(lambda: client.completed([after]), 30, 'the next job to end')
    assert client.job(after).result[0] == 2
