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


def measure(rounds):
    with tempfile.TemporaryDirectory() as directory:
        data = Database(directory)
        me = newUUID()
        data.addAgent(me, 2)
        running = InProcessDispatcher(data.db, me, poll_interval=5)
        running.start()
        notice, coroutine, forced = [], [], []
        try:
            for i in range(rounds):
                name = 'n%d' % i
                job = data.queue.put(Job(jobs.untilCancelled, name))
                data.tm.commit()
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.ACTIVE, 'the job to start')
                start = time.monotonic()
                job.cancel(grace=60)
                waitUntil(lambda: name in jobs.NOTICED, 'the job to notice',
                          timeout=60, interval=0.0005)
                notice.append(jobs.NOTICED[name] - start)
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.COMPLETED, 'the job to complete')
            for i in range(rounds):
                name = 'c%d' % i
                job = data.queue.put(Job(jobs.awaitCancelled, name))
                data.tm.commit()
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.ACTIVE, 'the job to start')
                start = time.monotonic()
                job.cancel(grace=60)
                waitUntil(lambda: name in jobs.NOTICED, 'the task cancelled',
                          timeout=60, interval=0.0005)
                coroutine.append(jobs.NOTICED[name] - start)
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.COMPLETED, 'the job to complete')
            for i in range(rounds):
                name = 'f%d' % i
                job = data.queue.put(Job(jobs.block, name, 60))
                data.tm.commit()
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.ACTIVE, 'the job to start')
                start = time.monotonic()
                job.cancel(grace=0)
                waitUntil(lambda: (data.tm.begin(), job.status)[1] ==
                          interfaces.COMPLETED, 'the forced completion',
                          timeout=60, interval=0.0005)
                forced.append(time.monotonic() - start)
                jobs.release(name)
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
