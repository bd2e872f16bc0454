"""Unique jobs put by two processes at once over ZEO (issue 14): for each
key, both processes' transactions read the database before either commits
(``unique_producer`` synchronises them), one commit conflicts, its retry
returns the first job, and the queue ends with exactly one job per key.
A worker then runs them, which frees the keys."""
import sys

from tests.processes import jobfuncs
from tests.processes.conftest import Client, waitFor

COUNT = 20


def readOut(path):
    pairs, conflicts = {}, None
    with open(path) as f:
        for line in f:
            first, second = line.split()
            if first == 'conflicts':
                conflicts = int(second)
            else:
                pairs[int(first)] = int(second)
    return pairs, conflicts


def test_two_processes_putting_the_same_keys_end_with_one_job_each(
        processes, zeo, tmp_path):
    client = Client(zeo.uri)
    try:
        from zcasync.interfaces import KEY
        from zcasync.queue import Queue, Queues
        for attempt in client.tm.attempts(5):
            with attempt:
                client.conn.root()[KEY] = Queues()
                client.conn.root()[KEY][''] = Queue()
        producers = [processes.start(name, [
            sys.executable, '-m', 'tests.processes.unique_producer',
            zeo.uri, str(tmp_path), name, other, str(COUNT)])
            for name, other in (('a', 'b'), ('b', 'a'))]
        for producer in producers:
            assert producer.wait(60) == 0, producer.text()
        a, conflicts_a = readOut(tmp_path / 'a.out')
        b, conflicts_b = readOut(tmp_path / 'b.out')
        assert a == b and len(a) == COUNT  # both got the same job per key
        # every key was a real race: one of the two commits conflicted
        assert conflicts_a + conflicts_b == COUNT
        queue = client.queue()
        assert len(queue) == COUNT
        assert sorted(job.unique_key for job in queue) == sorted(
            'key-%d' % i for i in range(COUNT))
        assert {job.args[0]: int.from_bytes(job._p_oid, 'big')
                for job in queue} == a

        # a worker runs them; completed jobs free their keys
        processes.worker('worker', zeo.uri)
        oids = [job._p_oid for job in queue]
        waitFor(lambda: client.completed(oids), 60, 'the jobs to run')
        queue = client.queue()
        assert len(queue._unique) == 0
        from zcasync.job import Job
        for attempt in client.tm.attempts(5):
            with attempt:
                fresh = client.queue().put(
                    Job(jobfuncs.record, 99, str(tmp_path / 'runs.log')),
                    unique_key='key-0')
        assert fresh._p_oid not in oids
    finally:
        client.close()
