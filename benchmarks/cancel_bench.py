"""How long a cancel takes to reach a running job, and to complete a job
that ignores it (in-process dispatcher, FileStorage in a temp dir):

    .venv/bin/python -m benchmarks.cancel_bench [ROUNDS]

- *notice*: from the commit of ``job.cancel()`` (another connection, as
  another process would) until ``zcasync.local.cancelled()`` is true in
  the job (``benchmarks.jobs.untilCancelled``, which looks every 1 ms):
  the invalidation reaches the dispatcher, its reactor reads the request.
- *coroutine*: the same for a coroutine job
  (``benchmarks.jobs.awaitCancelled``): until ``asyncio.CancelledError``
  is raised at its await (its task cancelled).
- *forced*: a job that ignores the request (``benchmarks.jobs.block``),
  cancelled with ``grace=0``: from the commit until the job reads
  COMPLETED with CancelledError, the agent's thread replaced.

Prints the median and the 95th percentile of each, in milliseconds.
"""
import sys
import tempfile
import time

from zcasync import interfaces
from zcasync.job import Job

from benchmarks import jobs
from benchmarks.support import median, percentile, waitUntil
from benchmarks.zcasync_bench import Database, InProcessDispatcher, newUUID


def _status(data, job):
    data.tm.begin()
    return job.status


def _noticed(data, job_factory, name, what):
    """Put a job, wait for its start, cancel it; seconds until the job
    noticed (``jobs.NOTICED``), once it completed."""
    job = data.queue.put(job_factory(name))
    data.tm.commit()
    waitUntil(lambda: _status(data, job) == interfaces.ACTIVE,
              'the job to start')
    start = time.monotonic()
    job.cancel(grace=60)
    waitUntil(lambda: name in jobs.NOTICED, what, timeout=60,
              interval=0.0005)
    waitUntil(lambda: _status(data, job) == interfaces.COMPLETED,
              'the job to complete')
    return jobs.NOTICED[name] - start


def _forced(data, name):
    """Seconds from a grace=0 cancel to the completion of a job that
    ignores it."""
    job = data.queue.put(Job(jobs.block, name, 60))
    data.tm.commit()
    waitUntil(lambda: _status(data, job) == interfaces.ACTIVE,
              'the job to start')
    start = time.monotonic()
    job.cancel(grace=0)
    waitUntil(lambda: _status(data, job) == interfaces.COMPLETED,
              'the forced completion', timeout=60, interval=0.0005)
    seconds = time.monotonic() - start
    jobs.release(name)
    return seconds


def measure(rounds):
    with tempfile.TemporaryDirectory() as directory:
        data = Database(directory)
        me = newUUID()
        data.addAgent(me, 2)
        running = InProcessDispatcher(data.db, me, poll_interval=5)
        running.start()
        try:
            notice = [_noticed(data, lambda n: Job(jobs.untilCancelled, n),
                               'n%d' % i, 'the job to notice')
                      for i in range(rounds)]
            coroutine = [_noticed(data,
                                  lambda n: Job(jobs.awaitCancelled, n),
                                  'c%d' % i, 'the task cancelled')
                         for i in range(rounds)]
            forced = [_forced(data, 'f%d' % i) for i in range(rounds)]
        finally:
            running.stop()
            data.db.close()
    return notice, coroutine, forced


def main(argv):
    rounds = int(argv[1]) if len(argv) > 1 else 20
    notice, coroutine, forced = measure(rounds)
    for what, values in (('cancelled() true after', notice),
                         ('coroutine task cancelled after', coroutine),
                         ('ignoring job completed after', forced)):
        print('%-30s median %6.1f ms  p95 %6.1f ms  (%d rounds)' % (
            what, 1000 * median(values), 1000 * percentile(values, 0.95),
            len(values)))


if __name__ == '__main__':
    main(sys.argv)
