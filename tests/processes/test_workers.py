"""Three worker processes share 300 queued jobs, on a ZEO server and on
RelStorage/PostgreSQL (history-free): every job completes exactly once and
each worker runs some.

How "exactly once" is checked: each job appends ``run N PID`` to a log
file before its transaction commits (every execution leaves a line, even
one whose transaction is aborted) and increments ``annotations['runs']``
inside the transaction (committed executions).  So: one line per job, one
committed run per job, the result's pid is the pid of the line, and the
pids are the three workers'.
"""
import collections

import pytest

from tests.processes import jobfuncs
from tests.processes.conftest import (
    settled,
    Client, waitFor, readUUID, runLines)

COUNT = 300


@pytest.mark.parametrize('backend', ['zeo', 'postgres'])
def test_three_workers_share_300_jobs(request, processes, tmp_path,
                                      backend):
    if backend == 'zeo':
        uri = request.getfixturevalue('zeo').uri
    else:
        uri = request.getfixturevalue('postgres')
        Client(uri).close()  # create RelStorage's schema once, up front
    workers = [processes.worker('worker-%d' % i, uri) for i in range(3)]
    client = Client(uri)
    try:
        uuids = {readUUID(waitFor(
            lambda w=w: (tmp_path / (w.name + '.uuid')).exists() and
            tmp_path / (w.name + '.uuid'), 30, 'uuid file')) for w in workers}
        waitFor(lambda: client.activeDispatchers() == uuids, 60,
                'three activated workers')
        log = str(tmp_path / 'runs.log')
        oids = client.put(*[(jobfuncs.record, n, log, 0.02)
                            for n in range(COUNT)])
        waitFor(lambda: client.completed(oids), 180, 'all jobs to complete',
                interval=0.5)

        pids = {w.pid for w in workers}
        ran_by = {}
        for n, oid in enumerate(oids):
            job = client.job(oid)
            assert job.result == [n, job.result[1]], job.result
            assert job.annotations['runs'] == 1
            ran_by[n] = job.result[1]
        lines = runLines(log)
        assert sorted(lines) == sorted(ran_by.items())  # one line per job
        per_worker = collections.Counter(ran_by.values())
        assert set(per_worker) == pids, per_worker
        settled(client)
        assert len(client.queue()) == 0
        print('jobs per worker:', dict(per_worker))
    finally:
        client.close()
    for worker in workers:
        worker.signal(15)
    for worker in workers:
        assert worker.wait(30) == 0
