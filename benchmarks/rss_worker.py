"""The worker whose memory is measured, run by ``run.py`` in a child
process: ``python -m benchmarks.rss_worker DIRECTORY UUID COUNT SIZE
POLL_INTERVAL``.

``DIRECTORY/Data.fs`` already holds COUNT no-op jobs and dispatcher UUID's
agent at size 0.  This process runs an in-process dispatcher (a reactor
thread, as a worker does), waits for its first poll, measures its RSS,
releases the jobs, waits until all are COMPLETED, measures again and
prints the figures as one JSON line.
"""
import json
import os
import sys
import time
import uuid


def main(argv):
    directory, me = argv[1], uuid.UUID(argv[2])
    count, size, poll_interval = int(argv[3]), int(argv[4]), float(argv[5])
    os.environ.setdefault('ZC_ASYNC_UUID',
                          os.path.join(directory, 'uuid.txt'))
    from benchmarks import support
    from benchmarks import zcasync_bench as bench
    data = bench.Database(directory)
    agent = data.queue.dispatchers[me][bench.AGENT]
    dispatcher = bench.InProcessDispatcher(data.db, me, poll_interval)
    peak = [0, 0.0]

    def progress():
        now = time.monotonic()
        if now - peak[1] > 1:
            peak[:] = [max(peak[0], support.rss()), now]
        log.check('RSS worker drain')
        return data.completed(agent)
    log = bench.LogWatch()
    try:
        with log:
            dispatcher.start()
            before = support.rss()
            goal = data.completed(agent) + count
            data.setSize(agent, size)
            start = time.perf_counter()
            end = support.waitFor(progress, goal, 'RSS worker drain')
            after = support.rss()
            dispatcher.stop()
            log.check('RSS worker drain')
    finally:
        dispatcher.stop()
        data.close()
    print(json.dumps({'rss before': before, 'rss after': after,
                      'rss peak': max(peak[0], after),
                      'drain': count / (end - start)}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
