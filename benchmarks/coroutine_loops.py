"""Which event loop design for coroutine jobs: one shared loop thread, or
one loop per worker thread?  (issue 15; the figures are quoted in
``zcasync.coroutines``.)

Both designs get the same work from 4 submitting threads (the runner's
worker threads): coroutines handed over with ``call_soon_threadsafe``,
each reporting back to the submitter through a ``concurrent.futures``
Future (as a run's completion goes back to a thread that commits).  Two
loads: 200 coroutines sleeping 1 s (the issue's case: about 1 s either
way), and many tiny coroutines (the hand-over cost).

    python benchmarks/coroutine_loops.py [--quick]
"""
import asyncio
import concurrent.futures
import sys
import threading
import time

SUBMITTERS = 4


class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       daemon=True)
        self.thread.start()

    def submit(self, make):
        future = concurrent.futures.Future()

        def begin():
            task = self.loop.create_task(make())
            task.add_done_callback(lambda t: future.set_result(t.result()))
        self.loop.call_soon_threadsafe(begin)
        return future

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def measure(loops, count, make):
    """Wall seconds for `count` coroutines from SUBMITTERS threads spread
    over `loops` (LoopThreads)."""
    futures = []
    lock = threading.Lock()

    def submitter(index):
        mine = []
        for i in range(index, count, SUBMITTERS):
            mine.append(loops[i % len(loops)].submit(make))
        with lock:
            futures.extend(mine)
    started = time.perf_counter()
    threads = [threading.Thread(target=submitter, args=(i,))
               for i in range(SUBMITTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent.futures.wait(futures)
    return time.perf_counter() - started


async def sleepy():
    await asyncio.sleep(1)


async def tiny():
    await asyncio.sleep(0)


def main(argv):
    quick = '--quick' in argv
    tinies = 2000 if quick else 20000
    for name, nloops in (('shared loop thread', 1),
                         ('one loop per worker thread', SUBMITTERS)):
        loops = [LoopThread() for i in range(nloops)]
        try:
            sleeping = measure(loops, 200, sleepy)
            small = measure(loops, tinies, tiny)
        finally:
            for loop in loops:
                loop.stop()
        print('%-28s 200 x sleep(1): %.3f s   %d tiny: %.3f s (%.0f/s)'
              % (name, sleeping, tinies, small, tinies / small))


if __name__ == '__main__':
    main(sys.argv[1:])
