"""Worker thread pools: a dead thread is replaced, also when the pool is
being shrunk at the same moment (the stop request must not take the last
thread with it)."""
import threading

import transaction

from zcasync import testing
from zcasync.workers import AgentThreadPool


class FakeDispatcher:
    """What a pool needs of a dispatcher; `_perform` runs scripted jobs."""

    def __init__(self, db):
        self.db = db
        self.gates = {name: threading.Event() for name in 'AB'}
        self.started = set()
        self.done = []

    def _growPool(self, difference):
        pass

    def _perform(self, conn, tm, job_id, poll_key, pool):
        self.started.add(job_id)
        if job_id in self.gates:
            self.gates[job_id].wait(10)
        if job_id == 'A':
            raise SystemExit('the thread dies')
        self.done.append(job_id)


def test_thread_dying_while_the_pool_shrinks_is_replaced(db):
    dispatcher = FakeDispatcher(db)
    pool = AgentThreadPool(dispatcher, '', 'main')
    pool.setSize(2)
    pool.perform('A', None)
    pool.perform('B', None)
    testing.wait(lambda: dispatcher.started == {'A', 'B'})
    pool.setSize(1)  # a stop request waits in the queue: both are busy
    dispatcher.gates['A'].set()  # A's thread dies
    testing.wait(lambda: len(pool._threads) == 2,
                 message='the dead thread was not replaced')
    dispatcher.gates['B'].set()
    pool.perform('C', None)
    testing.wait(lambda: 'C' in dispatcher.done,
                 message='no thread left to run C')
    testing.wait(lambda: len(pool._threads) == 1)
    pool.close()
    testing.wait(lambda: not pool._threads)
    transaction.abort()
