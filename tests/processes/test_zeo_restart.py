"""The ZEO server is stopped (SIGTERM) for a few seconds while three
workers run jobs and a producer queues them, then started again on the
same port and file: workers and producer reconnect by themselves, and every
job the producer queued completes once.

Exactly once, as committed: ``annotations['runs']`` is 1 for every job.
An execution whose commit was cut by the outage is aborted and retried by
its worker (the default policy retries ``ClientDisconnected``); such
re-executions show as repeated ``run N PID`` lines from the *same*
process, and the test prints how many there were.  A job executed by two
different processes would be a real double run and fails the test.

The workers' death interval is long here (30 s), so that the outage is not
mistaken for dead workers.
"""
import collections
import signal
import sys
import time

import ZODB.utils

from tests.processes.conftest import Client, settled, waitFor, runLines

OUTAGE = 2.0  # seconds the server stays down once every worker noticed


def produced(path):
    if not path.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in
            path.read_text().splitlines() if line.strip()]


def test_workers_and_producer_survive_a_server_restart(processes, zeo,
                                                       tmp_path):
    workers = [processes.worker('worker-%d' % i, zeo.uri, None, death=30)
               for i in range(3)]
    client = Client(zeo.uri)
    try:
        waitFor(lambda: len(client.activeDispatchers()) == 3, 60,
                'three workers')
    finally:
        client.close()
    log, out, stop = (tmp_path / 'runs.log', tmp_path / 'produced.txt',
                      tmp_path / 'stop')
    producer = processes.start('producer', [
        sys.executable, '-m', 'tests.processes.producer', zeo.uri,
        str(log), str(out), str(stop)])
    waitFor(lambda: len(produced(out)) >= 30, 60, 'the first jobs')

    zeo.stop()
    before = len(produced(out))
    waitFor(lambda: all('Disconnected from storage' in w.text()
                        for w in workers), 30, 'workers to notice')
    time.sleep(OUTAGE)  # the outage itself
    assert len(produced(out)) <= before + 1  # nothing committed meanwhile
    zeo.start()
    waitFor(lambda: len(produced(out)) >= before + 30, 90,
            'the producer to queue again')
    stop.touch()
    assert producer.wait(60) == 0

    jobs = produced(out)
    client = Client(zeo.uri)
    try:
        oids = [ZODB.utils.p64(oid) for n, oid in jobs]
        waitFor(lambda: client.completed(oids), 120, 'every job',
                interval=0.5)
        pids = {w.pid for w in workers}
        for (n, oid), p64 in zip(jobs, oids):
            job = client.job(p64)
            assert job.result[0] == n and job.result[1] in pids, job.result
            assert job.annotations['runs'] == 1
        runs = collections.defaultdict(list)
        for n, pid in runLines(log):
            runs[n].append(pid)
        for n, oid in jobs:
            assert len(set(runs[n])) == 1, (n, runs[n])  # one process each
        repeated = sum(len(r) - 1 for r in runs.values())
        print('%d jobs, %d re-executed after an aborted commit'
              % (len(jobs), repeated))
        assert len(client.queue()) == 0
        settled(client)
    finally:
        client.close()
    for worker in workers:
        assert worker.alive
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert 'thought it dead' not in ''.join(w.text() for w in workers)
