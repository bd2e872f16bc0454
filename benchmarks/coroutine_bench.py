"""Coroutine jobs (issue 15): an agent of size 200 runs 200 ``async def``
jobs that each ``await asyncio.sleep(1)``, with a real dispatcher on a
FileStorage, in this process.  They are awaited on the dispatcher's event
loop, so they all sleep at once -- about 1 s plus the commits -- on a few
threads, not 200.

    python benchmarks/coroutine_bench.py [--jobs N] [--seconds S]

Prints the wall time from releasing the jobs (the agent was held at size
0 while they were put) to the last completion, how many slept at once,
and the threads: the agent's worker threads and all of the dispatcher's
(worker threads, the event loop's thread, its commit threads).
"""
import argparse
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(directory, count=200, seconds=1.0, poll_interval=0.05):
    """Figures of one run (see the module docstring)."""
    from zcasync.job import Job

    from benchmarks import jobs
    from benchmarks.support import BenchmarkError, waitFor
    from benchmarks.zcasync_bench import (
        AGENT, Database, InProcessDispatcher, LogWatch, newUUID)
    data = Database(directory)
    dispatcher = None
    try:
        me = newUUID()
        agent = data.addAgent(me, 0)
        for i in range(count):
            data.queue.put(Job(jobs.sleepAsync, seconds))
        data.tm.commit()
        jobs.awaitingAtMost(reset=True)
        dispatcher = InProcessDispatcher(data.db, me, poll_interval)
        with LogWatch() as log:
            dispatcher.start()
            data.setSize(agent, count)
            start = time.perf_counter()
            end = waitFor(lambda: log.check('coroutine jobs') or
                          data.completed(agent), count, 'coroutine jobs')
            log.check('coroutine jobs')
        wall = end - start
        workers = [t for t in threading.enumerate()
                   if t.name == "zcasync ''/%s" % AGENT]
        everything = [t for t in threading.enumerate()
                      if t.name.startswith('zcasync ')]
        at_once = jobs.awaitingAtMost()
        if at_once < count:
            raise BenchmarkError('only %d of %d coroutine jobs slept at once'
                                 % (at_once, count))
        return {'coroutines wall': wall, 'coroutines at once': at_once,
                'coroutines worker threads': len(workers),
                'coroutines threads': len(everything)}
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        data.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='benchmarks/coroutine_bench.py')
    parser.add_argument('--jobs', type=int, default=200)
    parser.add_argument('--seconds', type=float, default=1.0)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix='zcasync-coroutines-')
    os.environ.setdefault('ZC_ASYNC_UUID', os.path.join(workdir, 'uuid.txt'))
    root = os.path.dirname(HERE)
    if sys.path and os.path.abspath(sys.path[0] or '.') == HERE:
        sys.path[0] = root
    elif root not in sys.path:
        sys.path.insert(0, root)
    import logging
    import shutil
    logging.getLogger('zcasync').addHandler(logging.NullHandler())
    try:
        figures = measure(workdir, args.jobs, args.seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print('%d coroutine jobs, each asyncio.sleep(%g), agent size %d, '
          'FileStorage, real dispatcher:' % (args.jobs, args.seconds,
                                              args.jobs))
    print('  wall time, release to last completion: %.3f s'
          % figures['coroutines wall'])
    print('  sleeping at once: %d' % figures['coroutines at once'])
    print("  the agent's worker threads: %d; all the dispatcher's threads "
          '(workers, event loop, commit threads): %d'
          % (figures['coroutines worker threads'],
             figures['coroutines threads']))


if __name__ == '__main__':
    main()
