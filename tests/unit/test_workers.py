"""The runner's worker threads (zcasync.runner): a dead thread is replaced,
also when the pool is being shrunk at the same moment; a thread whose
connection cannot be opened keeps trying instead of dying; closing a pool
drops the runs no thread has started and joins the threads (issue 9,
cases 2 and 4)."""
import threading

import transaction

from zcasync import testing
from zcasync.runner import AgentThreadPool, Run, Runner


class FakeDispatcher:
    """What a runner needs of a dispatcher."""

    def __init__(self, db):
        self.db = db
        self.reconciles = 0

    def _growPool(self, difference):
        pass

    def _reconcileSoon(self):
        self.reconciles += 1


class ScriptedRunner(Runner):
    """`perform` runs scripted jobs: gates to block on, 'A' kills its
    thread."""

    def __init__(self, dispatcher):
        super().__init__(dispatcher)
        self.gates = {name: threading.Event() for name in 'AB'}
        self.started = set()
        self.done = []

    def perform(self, conn, tm, run, pool):
        self.started.add(run.job_id)
        if run.job_id in self.gates:
            self.gates[run.job_id].wait(10)
        if run.job_id == 'A':
            raise SystemExit('the thread dies')
        self.done.append(run.job_id)


def run(name):
    return Run(name, 'token-' + name, None)


def test_thread_dying_while_the_pool_shrinks_is_replaced(db):
    runner = ScriptedRunner(FakeDispatcher(db))
    pool = runner.pool('', 'main')
    pool.setSize(2)
    pool.perform(run('A'))
    pool.perform(run('B'))
    testing.wait(lambda: runner.started == {'A', 'B'})
    assert pool.known() == {'A', 'B', 'token-A', 'token-B'}
    pool.setSize(1)  # a stop request waits in the queue: both are busy
    runner.gates['A'].set()  # A's thread dies
    # the lost run is reported (its dispatcher reconciles soon); its
    # replacement takes the queued stop request, so B's thread stays
    testing.wait(lambda: runner.dispatcher.reconciles == 1)
    assert not {'A', 'token-A'} & pool.known()
    runner.gates['B'].set()
    pool.perform(run('C'))
    testing.wait(lambda: 'C' in runner.done,
                 message='no thread left to run C')
    testing.wait(lambda: len(pool._threads) == 1)
    pool.close()
    testing.wait(lambda: not pool._threads)
    transaction.abort()


def test_close_drops_unstarted_runs_and_joins(db):
    runner = ScriptedRunner(FakeDispatcher(db))
    pool = runner.pool('', 'main')
    pool.setSize(1)
    pool.perform(run('B'))  # blocks the only thread
    testing.wait(lambda: 'B' in runner.started)
    pool.perform(run('C'))
    pool.perform(run('D'))  # queued behind B
    assert pool.known() == {'B', 'token-B', 'token-C', 'token-D'}
    dropped = runner.close()
    assert sorted(r.job_id for r in dropped) == ['C', 'D']
    assert pool.perform(run('E')) is False  # a closed pool takes nothing
    assert runner.join(0.1) != []  # B still runs
    runner.gates['B'].set()
    assert runner.join(10) == []
    assert runner.done == ['B']  # C, D and E never started
    assert runner.started == {'B'}


class FailingOpen:
    """A DB whose open() fails the first `failures` times."""

    def __init__(self, db, failures):
        self.db = db
        self.failures = failures
        self.calls = 0

    def open(self, **kw):
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError('the storage server is not reachable (test)')
        return self.db.open(**kw)


class RecordingRunner(Runner):

    def __init__(self, dispatcher):
        super().__init__(dispatcher)
        self.ran = []

    def perform(self, conn, tm, run, pool):
        self.ran.append((run.job_id, conn is not None))


def test_a_thread_whose_connection_fails_to_open_keeps_trying(db,
                                                              monkeypatch):
    from zcasync import runner as runnermodule
    monkeypatch.setattr(runnermodule, 'OPEN_RETRY', (0.01,))
    dispatcher = FakeDispatcher(FailingOpen(db, 3))
    runner = RecordingRunner(dispatcher)
    pool = runner.pool('', 'main')
    pool.setSize(1)
    pool.perform(run('X'))
    testing.wait(lambda: runner.ran == [('X', True)],
                 message='the run never got a connection')
    assert dispatcher.db.calls == 4
    assert len(pool._threads) == 1
    runner.close()
    assert runner.join(10) == []
