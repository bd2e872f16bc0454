"""Callbacks of a job (issue 2, section 3): what they receive, how each
commits, and the two races of adding a callback from another connection
while the job finishes."""
import operator
import threading

import pytest
import transaction
import ZODB.POSException

import zcasync
from zcasync import retry
from zcasync.interfaces import CALLBACKS, COMPLETED, NEW
from zcasync.job import Job

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support


# --- module-level callables ----------------------------------------------

def fail(message):
    raise ValueError(message)


def double(value):
    return value * 2


def describe(result):
    if zcasync.utils.isFailure(result):
        return 'failure: %s' % result.getErrorMessage()
    return 'success: %r' % (result,)


def onSuccess(result):
    return ('success', result)


def onFailure(failure):
    return ('failure', failure.type.__name__)


def parentAsCommitted(result):
    """A callback reading its parent from a second connection."""
    me = support.currentJob()
    status, stored = support.storedState(
        me._p_jar.db(), me.parent._p_oid, 'status', 'result')
    return (status, stored, result)


def writeRoot(key, result):
    support.root()[key] = result
    return result


def siblingAsCommitted(name, result):
    """Read another callback (root[name]) from a second connection."""
    db = support.currentJob()._p_jar.db()
    with support.otherConnection(db) as other:
        sibling = other.root()[name]
        return (sibling.status, sibling.result)


_events = {}


def blockUntilReleased(result):
    _events['started'].set()
    assert _events['release'].wait(30), 'the test never released me'
    return result


def store(conn, job, name='job'):
    conn.root()[name] = job
    conn.transaction_manager.commit()
    return job


# --- what callbacks receive ----------------------------------------------

def test_callback_receives_the_result(conn, db):
    job = store(conn, Job(operator.mul, 6, 7))
    callback = job.addCallback(describe)
    conn.transaction_manager.commit()
    assert callback.status == NEW and callback.parent is job
    job()
    assert callback.result == 'success: 42'
    assert support.storedState(db, callback._p_oid, 'status', 'result') == (
        COMPLETED, 'success: 42')


def test_callback_receives_the_failure(conn):
    job = store(conn, Job(fail, 'bad input'))
    callback = job.addCallback(describe)
    job()
    assert callback.result == 'failure: bad input'


def test_callbacks_are_not_chained(conn):
    job = store(conn, Job(operator.add, 1, 2))
    first = job.addCallback(double)
    second = job.addCallback(double)
    job()
    assert (job.result, first.result, second.result) == (3, 6, 6)


def test_chain_by_adding_a_callback_to_a_callback(conn, db):
    job = store(conn, Job(operator.add, 1, 2))
    chained = job.addCallback(double).addCallback(double)
    job()
    assert chained.result == 12
    assert support.storedState(db, chained._p_oid, 'status') == (COMPLETED,)


def test_addCallbacks_routes_by_outcome(conn):
    good = store(conn, Job(operator.add, 1, 2), 'good')
    bad = store(conn, Job(fail, 'oops'), 'bad')
    routed = [job.addCallbacks(onSuccess, onFailure) for job in (good, bad)]
    only_success = [job.addCallbacks(success=onSuccess)
                    for job in (good, bad)]
    only_failure = [job.addCallbacks(failure=onFailure)
                    for job in (good, bad)]
    good()
    bad()
    assert routed[0].result == ('success', 3)
    assert routed[1].result == ('failure', 'ValueError')
    # a missing side passes the result through
    assert only_success[0].result == ('success', 3)
    assert only_success[1].result.check(ValueError)
    assert only_failure[0].result == 3
    assert only_failure[1].result == ('failure', 'ValueError')


def test_addCallbacks_refuses_unstorable_callables():
    with pytest.raises(TypeError, match='cannot store'):
        Job(operator.add, 1, 2).addCallbacks(success=lambda r: r)


def test_callback_options():
    job = Job(operator.add, 1, 2)
    callback = job.addCallback(double, failure_log_level=40,
                               retry_policy_factory='NeverRetry')
    assert callback.failure_log_level == 40
    assert isinstance(callback.getRetryPolicy(), retry.NeverRetry)
    # the default policy of a callback retries forever
    other = job.addCallback(double)
    assert isinstance(other.getRetryPolicy(), retry.RetryCommonForever)


def test_a_callback_must_be_a_new_unplaced_job():
    job = Job(operator.add, 1, 2)
    callback = job.addCallback(double)
    with pytest.raises(ValueError, match='belongs nowhere else'):
        Job(operator.add, 3, 4).addCallback(callback)


# --- commits ---------------------------------------------------------------

def test_result_is_committed_with_CALLBACKS_before_callbacks_run(conn):
    job = store(conn, Job(operator.mul, 2, 21))
    callback = job.addCallback(parentAsCommitted)
    job()
    assert callback.result == (CALLBACKS, 42, 42)


def test_each_callback_commits_on_its_own(conn, db):
    job = store(conn, Job(operator.add, 1, 2))
    first = conn.root()['first'] = job.addCallback(
        Job(writeRoot, 'from first'))
    job.addCallback(fail)
    third = job.addCallback(Job(siblingAsCommitted, 'first'))
    conn.transaction_manager.commit()
    job()
    # the third callback saw the first one committed, with its result
    assert third.result == (COMPLETED, 3)
    with support.otherConnection(db) as other:
        root = other.root()
        assert root['from first'] == 3
        stored = root['job']
        assert (stored.status, stored.result) == (COMPLETED, 3)
        failed = stored.callbacks[1]
        assert failed.status == COMPLETED and failed.result.check(ValueError)
        assert [c.status for c in stored.callbacks] == [COMPLETED] * 3
    assert first.result == 3


def test_a_raising_callback_does_not_break_the_parent(conn, db):
    job = store(conn, Job(operator.add, 2, 2))
    bad = job.addCallback(fail)
    after = job.addCallback(double)
    job()
    assert job.result == 4 and job.status == COMPLETED
    assert bad.result.getErrorMessage() == '4'
    assert after.result == 8


def test_callback_added_to_a_completed_job_runs_at_once(conn, db):
    job = store(conn, Job(operator.add, 2, 3))
    job()
    callback = job.addCallback(double)
    assert (callback.status, callback.result) == (COMPLETED, 10)
    assert support.storedState(db, callback._p_oid, 'result') == (10,)
    failed = store(conn, Job(fail, 'late'), 'failed')
    failed()
    assert failed.addCallback(describe).result == 'failure: late'


def test_callback_added_to_a_completed_unstored_job():
    job = Job(operator.add, 2, 3)
    job()
    assert job.addCallback(double).result == 10


# --- races with a second connection ----------------------------------------

@pytest.mark.timeout(60)
def test_callback_added_while_callbacks_run_still_runs(db):
    """Race 1: connection A runs the job; its first callback blocks while
    connection B adds a second callback and commits."""
    _events.update(started=threading.Event(), release=threading.Event())
    tm_a = transaction.TransactionManager()
    conn_a = db.open(transaction_manager=tm_a)
    job = store(conn_a, Job(operator.add, 20, 1))
    job.addCallback(blockUntilReleased)
    tm_a.commit()
    errors = []

    def run():
        try:
            job()
        except Exception as e:  # reported below
            errors.append(e)
    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert _events['started'].wait(30)
        with support.otherConnection(db) as conn_b:
            parent = conn_b.root()['job']
            assert parent.status == CALLBACKS
            late = parent.addCallback(double)
            conn_b.transaction_manager.commit()
            late_oid = late._p_oid
    finally:
        _events['release'].set()
        worker.join(30)
    assert not worker.is_alive() and errors == []
    assert support.storedState(db, late_oid, 'status', 'result') == (
        COMPLETED, 42)
    assert support.storedState(db, job._p_oid, 'status') == (COMPLETED,)
    tm_a.abort()
    conn_a.close()


class AtFinalCommit:
    """Synchronizer: runs `action` once, just before the commit that stores
    `job` COMPLETED."""

    def __init__(self, tm, job, action):
        self.job, self.action, self.done = job, action, False
        self.tm = tm
        tm.registerSynch(self)

    def newTransaction(self, txn):
        pass

    def beforeCompletion(self, txn):
        if not self.done and self.job._status == COMPLETED:
            self.done = True
            self.action()

    def afterCompletion(self, txn):
        pass


def test_callback_committed_just_before_the_final_commit_is_run(db):
    """Race 2, first side: B commits a callback just before A's final
    COMPLETED commit; A gets a ConflictError, retries, runs it."""
    tm_a = transaction.TransactionManager()
    conn_a = db.open(transaction_manager=tm_a)
    job = store(conn_a, Job(operator.add, 40, 2))
    job.addCallback(double)
    tm_a.commit()
    added = []

    def addFromB():
        with support.otherConnection(db) as conn_b:
            late = conn_b.root()['job'].addCallback(describe)
            conn_b.transaction_manager.commit()
            added.append(late._p_oid)
    hook = AtFinalCommit(tm_a, job, addFromB)
    job()
    tm_a.unregisterSynch(hook)
    assert hook.done and len(added) == 1
    assert support.storedState(db, added[0], 'status', 'result') == (
        COMPLETED, 'success: 42')
    assert [c.status for c in job.callbacks] == [COMPLETED, COMPLETED]
    tm_a.abort()
    conn_a.close()


def test_callback_added_before_but_committed_after_the_final_commit(db):
    """Race 2, other side: B adds a callback while the job is in CALLBACKS
    but commits after A's final commit; B gets a ConflictError, retries,
    and the callback runs at once since the job is now COMPLETED."""
    tm_a = transaction.TransactionManager()
    conn_a = db.open(transaction_manager=tm_a)
    job = store(conn_a, Job(operator.add, 40, 2))
    job.addCallback(double)
    tm_a.commit()
    tm_b = transaction.TransactionManager()
    conn_b = db.open(transaction_manager=tm_b)

    def addInB():
        tm_b.begin()   # B sees the job as committed now: in CALLBACKS
        parent = conn_b.root()['job']
        assert parent.status == CALLBACKS
        parent.addCallback(describe)
    hook = AtFinalCommit(tm_a, job, addInB)
    job()
    tm_a.unregisterSynch(hook)
    assert hook.done
    with pytest.raises(ZODB.POSException.ConflictError):
        tm_b.commit()
    tm_b.abort()
    outcomes = []
    for attempt in tm_b.attempts(3):
        with attempt:
            parent = conn_b.root()['job']
            late = parent.addCallback(describe)
            outcomes.append((parent.status, late.status))
    assert outcomes == [(COMPLETED, COMPLETED)]
    assert support.storedState(db, late._p_oid, 'result') == ('success: 42',)
    with support.otherConnection(db) as other:
        assert len(other.root()['job'].callbacks) == 2
    tm_b.abort()
    conn_b.close()
    tm_a.abort()
    conn_a.close()
