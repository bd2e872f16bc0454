"""Coroutine jobs without a dispatcher (zcasync.coroutines, issue 15):
called directly (``job()``, run to completion with asyncio.run), in
immediate mode, from inside a running event loop (refused), the retry
policy and callbacks on the same path as other jobs, zcasync.local inside,
a requested stop (the run's zcasync.control.RunControl) turned into the
task's cancellation, zcasync.local.cancelled() inside, and snooze.  FileStorage in a temp dir."""
import asyncio
import functools
import threading

import persistent
import pytest
import ZODB.POSException

import zcasync
from zcasync import control
from zcasync import coroutines
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.interfaces import COMPLETED, NEW
from zcasync.job import Job

WAIT = 20

#: what the coroutines saw
SEEN = {}
#: name -> threading.Event
EVENTS = {}


async def add(a, b):
    await asyncio.sleep(0)
    return a + b


async def whoAmI():
    await asyncio.sleep(0)
    SEEN['job'] = zcasync.local.getJob()
    try:
        zcasync.local.getDispatcher()
    except ValueError as e:
        SEEN['no dispatcher'] = str(e)
    return zcasync.local.getJob()._p_oid


async def failing(message):
    await asyncio.sleep(0)
    raise RuntimeError(message)


async def conflictOnce(name):
    """Raises ConflictError the first time (the default policy retries a
    transaction error), returns the number of calls after."""
    SEEN[name] = SEEN.get(name, 0) + 1
    await asyncio.sleep(0)
    if SEEN[name] == 1:
        raise ZODB.POSException.ConflictError()
    return SEEN[name]


def returnsCoroutine(a, b):
    """A sync callable that gives a coroutine."""
    return add(a, b)


async def waitForStop(name):
    """Tell the test it awaits, then wait (up to WAIT s); records the
    CancelledError it gets."""
    EVENTS[name].set()
    try:
        await asyncio.sleep(WAIT)
    except asyncio.CancelledError:
        SEEN[name] = 'cancelled'
        raise
    return 'never stopped'


class Tally(persistent.Persistent):
    """A persistent object with a coroutine method."""

    total = 0

    async def bump(self, step):
        await asyncio.sleep(0)
        self.total += step
        return self.total

    async def __call__(self):
        return 'called'


def record(result):
    SEEN.setdefault('callbacks', []).append(result)
    return 'called back with %r' % (result,)


async def recordAsync(result):
    await asyncio.sleep(0)
    SEEN.setdefault('async callbacks', []).append(result)
    return result


@pytest.fixture(autouse=True)
def clean():
    SEEN.clear()
    EVENTS.clear()
    yield
    zcasync.local.setRunControl()


def stored(conn, job):
    conn.root()['job'] = job
    conn.transaction_manager.commit()
    return job


# --- recognising coroutine callables ----------------------------------------

def test_coroutine_callables_are_recognised_without_calling_them(conn):
    tally = conn.root()['tally'] = Tally()
    conn.transaction_manager.commit()
    assert coroutines.isCoroutineJob(Job(add, 1, 2))
    assert coroutines.isCoroutineJob(Job(tally.bump, 1))
    assert coroutines.isCoroutineJob(Job(tally))  # an async __call__
    assert coroutines.isCoroutineJob(Job(functools.partial(add, 1)))
    assert not coroutines.isCoroutineJob(Job(record, 1))
    # found out only when called: a sync callable giving a coroutine
    assert not coroutines.isCoroutineJob(Job(returnsCoroutine, 1, 2))
    # a ghost's class tells, its state is not loaded
    job = stored(conn, Job(tally.bump, 1))
    conn.cacheMinimize()
    assert job._callable_root is tally and tally._p_changed is None
    assert coroutines.isCoroutineJob(job)
    assert tally._p_changed is None


# --- called directly ----------------------------------------------------

def test_direct_call_runs_the_coroutine_to_completion(conn):
    job = stored(conn, Job(add, 20, 22))
    assert job() == 42
    assert job.status == COMPLETED and job.result == 42


def test_sync_callable_returning_a_coroutine(conn):
    job = stored(conn, Job(returnsCoroutine, 1, 2))
    assert job() == 3
    assert job.status == COMPLETED


def test_method_of_a_persistent_object_commits_after_it_returns(conn, db):
    tally = conn.root()['tally'] = Tally()
    job = stored(conn, Job(tally.bump, 5))
    assert job() == 5
    other = db.open()  # what is committed
    try:
        assert other.root()['tally'].total == 5
        assert other.get(job._p_oid).result == 5
    finally:
        other.close()


def test_local_inside_a_coroutine(conn):
    job = stored(conn, Job(whoAmI))
    assert job() == job._p_oid
    assert SEEN['job'] is job
    assert 'only available inside a job that a dispatcher runs' in \
        SEEN['no dispatcher']
    with pytest.raises(ValueError, match='no job is running'):
        zcasync.local.getJob()  # the task's context was its own


def test_failure_goes_through_the_retry_policy(conn):
    job = stored(conn, Job(failing, 'broken'))
    result = job()
    assert job.status == COMPLETED
    assert result.check(RuntimeError)
    assert 'broken' in result.getErrorMessage()
    assert 'failing' in result.getTraceback()


def test_a_transaction_error_is_retried_by_the_policy(conn, queue):
    job = queue.put(Job(conflictOnce, 'c'))  # queued: the default policy
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    assert job.result == 2
    assert job.annotations['zcasync.RetryCommonFourTimes'] == {
        'transaction error': 1}


def test_callbacks_sync_and_async(conn):
    job = Job(add, 2, 3)
    sync_callback = job.addCallback(Job(record))
    async_callback = job.addCallback(Job(recordAsync))
    stored(conn, job)
    assert job() == 5
    assert SEEN['callbacks'] == [5]
    assert SEEN['async callbacks'] == [5]
    assert sync_callback.result == 'called back with 5'
    assert async_callback.result == 5
    assert async_callback.status == COMPLETED


def test_called_from_inside_a_running_loop_is_refused(conn):
    job = stored(conn, Job(add, 1, 2))

    async def inLoop():
        return job()
    with pytest.raises(RuntimeError, match='would block that loop'):
        asyncio.run(inLoop())
    conn.transaction_manager.abort()
    assert job.status == NEW  # nothing stored changed
    assert job() == 3  # and it runs where it can


def test_sync_callable_giving_a_coroutine_inside_a_loop_fails_its_job(conn):
    job = stored(conn, Job(returnsCoroutine, 1, 2))

    async def inLoop():
        return job()
    result = asyncio.run(inLoop())
    assert job.status == COMPLETED
    assert result.check(RuntimeError)
    assert 'would block that loop' in result.getErrorMessage()


# --- immediate mode -----------------------------------------------------

def test_immediate_mode(conn, queue):
    tally = conn.root()['tally'] = Tally()
    conn.transaction_manager.commit()
    first = queue.put(Job(tally.bump, 2))
    second = queue.put(Job(whoAmI))
    third = queue.put(Job(failing, 'no'))
    conn.transaction_manager.commit()
    ran = testing.runQueuedJobs(conn)
    assert ran == [first, second, third]
    assert first.result == 2 and tally.total == 2
    assert second.result == second._p_oid
    assert third.result.check(RuntimeError)
    assert all(job.status == COMPLETED for job in ran)


# --- stopping a run: the run control mapped onto cancellation -------------

def test_the_run_control_is_the_one_in_zcasync_local(conn):
    job = stored(conn, Job(waitForStop, 'mine'))
    other = Job(waitForStop, 'other')
    conn.add(other)
    conn.transaction_manager.commit()
    assert coroutines._runControlFor(job) is None  # no dispatcher watches
    run = control.RunControl(utils.jobId(job), job.run_token)
    zcasync.local.setRunControl(run)
    assert coroutines._runControlFor(job) is run
    # another job in this run (a callback) is not stopped with it
    assert coroutines._runControlFor(other) is None
    zcasync.local.setRunControl()
    assert coroutines._runControlFor(job) is None


async def cancelledAfterStop(name):
    """Record zcasync.local.cancelled() before and after the stop."""
    SEEN[name + ' before'] = zcasync.local.cancelled()
    EVENTS[name].set()
    try:
        await asyncio.sleep(WAIT)
    except asyncio.CancelledError:
        SEEN[name] = 'cancelled'
        SEEN[name + ' after'] = zcasync.local.cancelled()
        raise
    return 'never stopped'


def test_a_requested_stop_cancels_the_coroutine_and_fails_the_job(db):
    EVENTS['stop'] = threading.Event()
    outcome = {}
    controls = []

    def callDirectly():
        tm = __import__('transaction').TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            job = stored(conn, Job(cancelledAfterStop, 'stop'))
            # as a dispatcher's worker thread does around a run
            run = control.RunControl(utils.jobId(job))
            zcasync.local.setRunControl(run)
            controls.append(run)
            outcome['result'] = job()
            outcome['status'] = job.status
        finally:
            zcasync.local.setRunControl()
            tm.abort()
            conn.close()
    thread = threading.Thread(target=callDirectly)
    thread.start()
    try:
        assert EVENTS['stop'].wait(WAIT), 'the coroutine never started'
        [run] = controls
        assert run.requestStop(interfaces.CancelledError('stop it'))
    finally:
        thread.join(WAIT)
    assert not thread.is_alive()
    assert SEEN['stop'] == 'cancelled'  # CancelledError at its await
    # zcasync.local.cancelled() tells the coroutine, once asked
    assert SEEN['stop before'] is False and SEEN['stop after'] is True
    result = outcome['result']
    assert outcome['status'] == COMPLETED
    # the job fails with the requested error, not asyncio's CancelledError
    assert result.check(interfaces.CancelledError)
    assert not result.check(asyncio.CancelledError)
    assert 'stop it' in result.getErrorMessage()


def test_a_stop_requested_before_the_await_cancels_at_once(conn):
    job = stored(conn, Job(waitForStop, 'early'))
    EVENTS['early'] = threading.Event()
    run = control.RunControl(utils.jobId(job))
    run.requestStop(interfaces.TimeLimitError('stopped early'))
    zcasync.local.setRunControl(run)
    try:
        result = job()
    finally:
        zcasync.local.setRunControl()
    assert SEEN['early'] == 'cancelled'
    assert result.check(interfaces.TimeLimitError)
