"""An agent's slots (``zcasync.workerpool.AgentThreadPool``) when two idle
worker threads take jobs claimed ahead at once while a coroutine run holds
a slot without a thread: the agent's size is never exceeded."""
import itertools
import threading

from zcasync.workerpool import AgentThreadPool, Run

WAIT = 20


class StubDispatcher:
    def _growPool(self, difference):
        pass


class StubRunner:
    dispatcher = StubDispatcher()


def test_two_threads_taking_buffered_jobs_at_once_respect_the_size():
    pool = AgentThreadPool(StubRunner(), '', 'main')
    pool.size = 2
    pool.detached['c'] = Run((b'c', ''), 'c', None, True)  # on the loop
    pool._buffer.extend([Run((b'n1', ''), None, None),
                         Run((b'n2', ''), None, None)])
    original = pool.popBuffered
    popped = [threading.Event(), threading.Event()]
    order = itertools.count()

    def popBuffered(*args, **kwargs):
        # both threads look at the buffer before either goes on
        i = next(order)
        run = original(*args, **kwargs)
        popped[i].set()
        if run is not None:
            assert popped[1 - i].wait(WAIT)
        return run
    pool.popBuffered = popBuffered
    results = {}

    def take(i):
        results[i] = pool._nextWork(None)
    threads = [threading.Thread(target=take, args=(i,), daemon=True)
               for i in range(2)]
    for thread in threads:
        thread.start()
    for event in popped:
        assert event.wait(WAIT)
    # one took a job; the other found the slots full and waits for work
    for i in range(2):
        pool._queue.put(None)
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    taken = [run for run in results.values() if run is not None]
    assert len(taken) == 1, results
    assert pool.buffered() == 1
