"""Control of runs without a dispatcher (issue 15): cancelling jobs that
have not started, the cancel of a running job as stored, time limits as
attributes, snooze in immediate mode and directly, RunControl, and the
bad paths.  FileStorage in a temp dir; a second connection checks what is
committed."""
import datetime
import threading

import pytest
import transaction

import zcasync.local
from zcasync import control
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.agent import Agent
from zcasync.interfaces import ACTIVE, COMPLETED, NEW
from zcasync.job import Job
from zcasync.retry import RetryWithBackoff

START = datetime.datetime(2031, 3, 1, tzinfo=datetime.timezone.utc)
SECOND = datetime.timedelta(seconds=1)

#: what the jobs below saw
SEEN = []


def add(a, b):
    return a + b


def record(result):
    SEEN.append(result)
    return 'seen'


def snoozeOnce(seconds):
    job = zcasync.local.getJob()
    SEEN.append(('run', job.annotations.get(control.SNOOZES, 0)))
    if not job.annotations.get(control.SNOOZES):
        job.annotations['written before the snooze'] = True
        zcasync.local.snooze(seconds)
    return 'woke up'


async def snoozeOnceAsync(seconds):
    """snoozeOnce as a coroutine job: snoozes at its first run, after an
    await."""
    import asyncio
    await asyncio.sleep(0)
    job = zcasync.local.getJob()
    SEEN.append(('run', job.annotations.get(control.SNOOZES, 0)))
    if not job.annotations.get(control.SNOOZES):
        job.annotations['written before the snooze'] = True
        zcasync.local.snooze(seconds)
    await asyncio.sleep(0)
    return 'woke up'


def snoozeSwallowed():
    try:
        zcasync.local.snooze(5)
    except Exception:  # a BaseException: not caught here
        return 'swallowed'


def trySnooze(value):
    try:
        zcasync.local.snooze(value)
    except (TypeError, ValueError) as e:
        return '%s: %s' % (type(e).__name__, e)


def snoozeCallback(result, value):
    return trySnooze(value)


def askCancelled():
    return zcasync.local.cancelled()


@pytest.fixture(autouse=True)
def cleanSeen():
    SEEN.clear()
    yield
    SEEN.clear()


@pytest.fixture
def other(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    yield conn
    tm.abort()
    conn.close()


def reload(other, job):
    other.transaction_manager.begin()
    return other.get(job._p_oid)


def cancelledMessage(job):
    assert utils.isFailure(job.result), job.result
    assert job.result.check(interfaces.CancelledError)
    return job.result.getErrorMessage()


# --- cancel a job that has not started -------------------------------------

def test_cancel_pending_job_completes_it_with_cancelled_error(
        queue, conn, other):
    job = queue.put(Job(add, 1, 2))
    job.addCallback(Job(record))
    conn.transaction_manager.commit()
    assert job.cancel() == control.CANCELLED
    seen = reload(other, job)
    assert seen.status == COMPLETED
    assert 'was cancelled before it started' in cancelledMessage(seen)
    assert len(other.root()[interfaces.KEY]['']) == 0
    # the callback saw the failure, once
    assert len(SEEN) == 1 and SEEN[0].check(interfaces.CancelledError)
    # it is kept with the queue's cancelled jobs and still knows its queue
    assert seen.queue is other.root()[interfaces.KEY]['']
    assert list(control.cancelledJobs(seen.queue)) == [seen]
    # nothing runs it any more
    assert testing.runQueuedJobs(conn) == []


def test_cancel_scheduled_job(queue, conn, other, clock):
    job = queue.put(Job(add, 1, 2), begin_after=START + 3600 * SECOND)
    conn.transaction_manager.commit()
    assert reload(other, job).status == interfaces.PENDING
    job.cancel()
    seen = reload(other, job)
    assert seen.status == COMPLETED
    cancelledMessage(seen)
    clock.advance(7200)
    assert testing.runQueuedJobs(conn) == []


def test_cancel_quota_blocked_job(queue, conn, other):
    queue.quotas.create('db', size=1)
    first = queue.put(Job(add, 1, 1))
    first.quota_names = ('db',)
    blocked = queue.put(Job(add, 2, 2))
    blocked.quota_names = ('db',)
    conn.transaction_manager.commit()
    blocked.cancel()
    assert reload(other, blocked).status == COMPLETED
    assert [j._p_oid for j in testing.runQueuedJobs(conn)] == \
        [first._p_oid]


def test_cancel_job_claimed_ahead_by_an_agent(queue, conn, other):
    queue.dispatchers.register(testing.IMMEDIATE_UUID)
    agent = queue.dispatchers[testing.IMMEDIATE_UUID]['a'] = Agent(size=1)
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    agent._add(queue.claim())
    conn.transaction_manager.commit()
    assert reload(other, job).status == interfaces.ASSIGNED
    job.cancel()
    seen = reload(other, job)
    assert seen.status == COMPLETED
    cancelledMessage(seen)
    assert len(other.get(agent._p_oid)) == 0  # its slot is free


def test_cancel_parked_job(queue, conn, other):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    key = job._queue_key
    queue._park(key, job, 'pretend its module is missing')
    conn.transaction_manager.commit()
    assert reload(other, job).status == interfaces.PARKED
    job.cancel()
    seen = reload(other, job)
    assert seen.status == COMPLETED
    assert queue.parked() == []


def test_cancel_a_loose_job_and_a_callback(conn):
    loose = Job(add, 1, 2)
    assert loose.cancel() == control.CANCELLED
    assert loose.status == COMPLETED
    cancelledMessage(loose)
    parent = Job(add, 1, 2)
    callback = parent.addCallback(Job(record))
    callback.cancel()
    assert callback.status == COMPLETED
    parent()
    assert parent.result == 3
    assert SEEN == []  # the cancelled callback did not run


# --- bad paths ---------------------------------------------------------------

def test_cancel_completed_job_is_a_clear_error(queue, conn, other):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    with pytest.raises(interfaces.BadStatusError) as info:
        job.cancel()
    message = str(info.value)
    assert 'completed' in message and 'nothing to cancel' in message
    seen = reload(other, job)
    assert seen.result == 3  # nothing changed


def test_cancel_job_in_callbacks_is_a_clear_error(conn):
    job = Job(add, 1, 2)
    job._status = interfaces.CALLBACKS
    with pytest.raises(interfaces.BadStatusError) as info:
        job.cancel()
    assert 'callback' in str(info.value)


@pytest.mark.parametrize('grace, error', [
    (-1, ValueError), (float('nan'), ValueError), ('5', TypeError),
    (-SECOND, ValueError), (True, TypeError)])
def test_cancel_refuses_bad_grace(queue, conn, other, grace, error):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    with pytest.raises(error) as info:
        job.cancel(grace=grace)
    assert 'grace' in str(info.value)
    assert reload(other, job).status == interfaces.PENDING


@pytest.mark.parametrize('timeout, error', [
    (-SECOND, ValueError), (datetime.timedelta(0), ValueError),
    (5, TypeError)])
def test_timeout_refuses_bad_values(queue, conn, timeout, error):
    with pytest.raises(error) as info:
        queue.put(Job(add, 1, 2), timeout=timeout)
    assert 'time limit' in str(info.value)
    assert len(queue) == 0
    job = Job(add, 1, 2)
    with pytest.raises(error):
        job.timeout = timeout
    assert job.timeout is None


def test_timeout_is_stored_and_fixed_once_started(queue, conn, other):
    job = queue.put(Job(add, 1, 2), timeout=30 * SECOND)
    conn.transaction_manager.commit()
    assert reload(other, job).timeout == 30 * SECOND
    job.timeout = None
    job.timeout = 10 * SECOND
    testing.runQueuedJobs(conn)
    with pytest.raises(interfaces.BadStatusError):
        job.timeout = SECOND
    assert Job(add).timeout is None  # the class default (old records)


def test_time_limit_error_is_a_timeout_error():
    assert issubclass(interfaces.TimeLimitError, interfaces.TimeoutError)
    job = Job(add)
    error = control.timeLimitError(job, 90 * SECOND)
    assert 'time limit exceeded' in str(error) and '90 s' in str(error)


def test_snooze_outside_a_job_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        zcasync.local.snooze(5)
    assert 'only available inside a running job' in str(info.value)
    assert zcasync.local.cancelled() is False


def test_snooze_in_a_job_called_directly_is_a_clear_error():
    job = Job(snoozeOnce, 5)
    job()
    assert job.status == COMPLETED
    assert utils.isFailure(job.result)
    assert 'belongs to no queue' in job.result.getErrorMessage()


def test_snooze_in_a_callback_is_a_clear_error(queue, conn):
    job = queue.put(Job(add, 1, 2))
    callback = job.addCallback(Job(snoozeCallback, 5))
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    assert 'is a callback' in callback.result


@pytest.mark.parametrize('value, error', [
    (-1, 'ValueError'), ('soon', 'TypeError'), (float('inf'), 'ValueError')])
def test_snooze_refuses_bad_delays(queue, conn, value, error):
    job = queue.put(Job(trySnooze, value))
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    assert job.result.startswith(error) and 'snooze()' in job.result


# --- snooze ------------------------------------------------------------------

def test_snooze_in_immediate_mode(queue, conn, other, clock):
    policy = RetryWithBackoff(retry_on=(RuntimeError,), max_attempts=3)
    job = queue.put(Job(snoozeOnce, 60), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    assert testing.runQueuedJobs(conn) == [job]
    seen = reload(other, job)
    assert seen.status == interfaces.PENDING
    assert seen.begin_after == START + 60 * SECOND
    assert seen.annotations[control.SNOOZES] == 1
    # the snoozed run's work was aborted
    assert 'written before the snooze' not in seen.annotations
    # not due yet: nothing runs
    clock.advance(59)
    assert testing.runQueuedJobs(conn) == []
    clock.advance(1)
    assert testing.runQueuedJobs(conn) == [job]
    seen = reload(other, job)
    assert seen.result == 'woke up'
    assert SEEN == [('run', 0), ('run', 1)]
    # neither a retry nor an interruption was counted (the policy keeps
    # its counts under 'zcasync.RetryWithBackoff'): only the snooze
    assert set(seen.annotations) == {control.SNOOZES}


def test_snooze_in_a_coroutine_job_in_immediate_mode(queue, conn, other,
                                                     clock):
    # control.Snooze (a BaseException) is caught where the coroutine is
    # awaited, and the job snoozes as a sync job does
    job = queue.put(Job(snoozeOnceAsync, 30))
    conn.transaction_manager.commit()
    assert testing.runQueuedJobs(conn) == [job]
    seen = reload(other, job)
    assert seen.status == interfaces.PENDING
    assert seen.begin_after == START + 30 * SECOND
    assert seen.annotations[control.SNOOZES] == 1
    assert 'written before the snooze' not in seen.annotations
    clock.advance(30)
    assert testing.runQueuedJobs(conn) == [job]
    seen = reload(other, job)
    assert seen.result == 'woke up'
    assert SEEN == [('run', 0), ('run', 1)]
    assert set(seen.annotations) == {control.SNOOZES}


def test_snooze_zero_goes_to_the_front(queue, conn, other):
    job = queue.put(Job(snoozeOnce, 0))
    queue.put(Job(add, 1, 1))
    conn.transaction_manager.commit()
    ran = testing.runQueuedJobs(conn)
    assert [j._p_oid for j in ran][:2] == [job._p_oid, job._p_oid]
    assert reload(other, job).result == 'woke up'


def test_snooze_is_not_swallowed_by_except_exception(queue, conn, other):
    job = queue.put(Job(snoozeSwallowed))
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    seen = reload(other, job)
    assert seen.status == interfaces.PENDING
    assert seen.annotations[control.SNOOZES] == 1


# --- a running job asked to stop, as stored ----------------------------------

def test_cancel_running_job_stores_a_request_for_its_run(queue, conn, other):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    token = job._markActive(conn.transaction_manager)
    assert job.cancel(grace=2.5) == control.STOPPING
    seen = reload(other, job)
    assert seen.status == ACTIVE  # still running: its dispatcher stops it
    request = control.stopRequest(seen, token)
    assert request['grace'] == 2.5 and request['reason'] == 'cancel'
    assert control.stopRequest(seen, 'another run') is None
    error = control.stopError(seen, request)
    assert isinstance(error, interfaces.CancelledError)
    # cancelling again only renews the request
    assert job.cancel(grace=0) == control.STOPPING
    assert control.stopRequest(reload(other, job), token)['grace'] == 0


def test_cancel_job_waiting_for_an_inner_job(queue, conn, other):
    inner = queue.put(Job(add, 1, 2))
    outer = Job(add, 0, 0)
    conn.root()['outer'] = outer
    conn.transaction_manager.commit()
    token = outer._markActive(conn.transaction_manager)
    outer._waitFor(inner, token)
    conn.transaction_manager.commit()
    outer.cancel()
    assert reload(other, outer).status == COMPLETED
    cancelledMessage(reload(other, outer))
    testing.runQueuedJobs(conn)
    assert reload(other, inner).result == 3
    cancelledMessage(reload(other, outer))  # the inner result is ignored


# --- RunControl ---------------------------------------------------------------

def test_run_control_stop_once_and_callbacks():
    run = control.RunControl(job_id=None, token='t')
    heard = []
    run.onStop(lambda e: heard.append(('early', e)))
    assert run.stopRequested is None
    first = interfaces.CancelledError('stop')
    assert run.requestStop(first) is True
    assert run.requestStop(RuntimeError('again')) is False
    assert run.stopRequested is first
    run.onStop(lambda e: heard.append(('late', e)))
    assert heard == [('early', first), ('late', first)]


def test_run_control_requests_from_many_threads_call_back_once():
    run = control.RunControl()
    heard = []
    run.onStop(heard.append)
    barrier = threading.Barrier(8)

    def ask(i):
        barrier.wait()
        run.requestStop(RuntimeError(i))
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert heard == [run.stopRequested]


def test_a_failing_stop_callback_does_not_stop_the_others(capture_log):
    run = control.RunControl()
    heard = []
    run.onStop(lambda e: 1 / 0)
    run.onStop(heard.append)
    run.requestStop(RuntimeError('x'))
    assert len(heard) == 1
    assert any('stop callback' in m for m in capture_log)


def test_cancelled_follows_the_run_control_of_the_thread(queue, conn):
    job = conn.root()['job'] = Job(askCancelled)
    conn.transaction_manager.commit()
    run = control.RunControl(job_id=utils.jobId(job))
    zcasync.local.setRunControl(run)
    try:
        assert zcasync.local.getRunControl() is run
        run.requestStop(interfaces.CancelledError('asked'))
        job()
    finally:
        zcasync.local.setRunControl()
    assert zcasync.local.getRunControl() is None
    # asked to stop: whatever the job returned, it ends cancelled
    assert job.status == COMPLETED
    assert job.result.check(interfaces.CancelledError)


@pytest.fixture
def capture_log():
    import logging
    messages = []

    class Handler(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
    handler = Handler()
    utils.log.addHandler(handler)
    yield messages
    utils.log.removeHandler(handler)


def test_a_cancelled_run_is_never_retried(queue, conn, other):
    policy = RetryWithBackoff(retry_on=(Exception,), max_attempts=5)
    job = queue.put(Job(askCancelled), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    conn.transaction_manager.commit()
    run = control.RunControl(job_id=utils.jobId(claimed))
    run.requestStop(interfaces.CancelledError('asked'))
    zcasync.local.setRunControl(run)
    try:
        claimed()
    finally:
        zcasync.local.setRunControl()
    seen = reload(other, job)
    assert seen.status == COMPLETED  # not back in the queue
    assert seen.result.check(interfaces.CancelledError)
    assert 'zcasync.RetryWithBackoff' not in seen.annotations


def test_a_run_past_its_time_limit_is_left_to_its_policy(queue, conn, other,
                                                         clock):
    policy = RetryWithBackoff(retry_on=(interfaces.TimeLimitError,),
                              max_attempts=5, base=SECOND, jitter=False)
    job = queue.put(Job(askCancelled), retry_policy_factory=policy,
                    timeout=SECOND)
    conn.transaction_manager.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    conn.transaction_manager.commit()
    run = control.RunControl(job_id=utils.jobId(claimed))
    run.requestStop(control.timeLimitError(claimed, claimed.timeout))
    zcasync.local.setRunControl(run)
    try:
        claimed()
    finally:
        zcasync.local.setRunControl()
    seen = reload(other, job)
    assert seen.status == interfaces.PENDING  # rescheduled by its policy
    assert seen.begin_after == START + SECOND
    assert seen.annotations['zcasync.RetryWithBackoff']['attempts'] == 1


def test_a_run_cancelled_before_its_process_died_is_not_run_again(
        queue, conn, other):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    conn.transaction_manager.commit()
    claimed._markActive(conn.transaction_manager)
    claimed.cancel(grace=30)
    # its process dies; recovery takes the job over (a new token)
    token = claimed._handBack()
    conn.transaction_manager.commit()
    claimed.handleInterrupt(token)
    seen = reload(other, job)
    assert seen.status == COMPLETED
    assert 'cancelled while it ran' in cancelledMessage(seen)


def test_a_cancel_of_an_earlier_run_does_not_stop_recovery(queue, conn,
                                                           other, clock):
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    conn.transaction_manager.commit()
    claimed._markActive(conn.transaction_manager)
    claimed.annotations[control.STOP_KEY] = {
        'token': 'an earlier run', 'reason': 'cancel', 'grace': 0,
        'requested': (START - SECOND).isoformat()}
    token = claimed._handBack()
    conn.transaction_manager.commit()
    claimed.handleInterrupt(token)
    conn.transaction_manager.commit()
    seen = reload(other, job)
    assert seen.status == interfaces.PENDING  # retried, as usual
