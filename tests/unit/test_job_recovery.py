"""Recovering jobs (issue 2, section 3): ``handleInterrupt`` for a job
whose process died while it was ACTIVE, ``fail`` for a job that never
started, ``resumeCallbacks`` for a job that died in CALLBACKS.

A "process death" is simulated with ``test_job_support.Crash``: every
commit after a chosen point fails, so the database keeps exactly what was
committed before it."""
import pytest

from zcasync import testing
import zcasync
import zcasync.instanceuuid
from zcasync import interfaces
from zcasync.agent import Agent
from zcasync.interfaces import (
    NEW, PENDING, ACTIVE, CALLBACKS, COMPLETED)
from zcasync.job import Job

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support

_runs = []


def record(name, result=None):
    _runs.append(name)
    return '%s got %r' % (name, result)


def describe(result):
    if zcasync.utils.isFailure(result):
        return 'failure: %s' % result.type.__name__
    return 'success: %r' % (result,)


@pytest.fixture(autouse=True)
def clean():
    del _runs[:]


@pytest.fixture
def agent(conn, queue):
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = (
        Agent())
    conn.transaction_manager.commit()
    return agent


def claim(agent, job):
    if agent.parent.UUID == testing.IMMEDIATE_UUID:
        assert testing._immediateClaim(agent) is job  # never activated
    else:
        testing.activeRegistration(agent.queue, agent.parent.UUID)  # alive
        assert agent.claimJob() is job
    agent._p_jar.transaction_manager.commit()


# --- handleInterrupt ----------------------------------------------------

def test_interrupted_job_goes_back_to_the_front_of_its_queue(
        conn, db, queue, agent):
    job = queue.put(Job(record, 'job'))
    queue.put(Job(record, 'later'))
    conn.transaction_manager.commit()
    claim(agent, job)
    support.crashWhileActive(job)
    assert support.storedState(db, job._p_oid, 'status') == (ACTIVE,)
    assert _runs == ['job']   # it ran, but its work was never committed

    job.handleInterrupt()
    conn.transaction_manager.commit()
    assert job.status == PENDING and queue[0] is job and len(queue) == 2
    assert job not in agent
    assert (job.result, job.active_start) == (None, None)
    claim(agent, job)
    assert job() == "job got None"
    assert support.storedState(db, job._p_oid, 'status', 'result') == (
        COMPLETED, "job got None")


def test_interrupted_job_that_gives_up_fails_and_runs_callbacks(
        conn, db, queue, agent):
    job = queue.put(Job(record, 'job'), retry_policy_factory='NeverRetry')
    callback = job.addCallback(describe)
    conn.transaction_manager.commit()
    claim(agent, job)
    support.crashWhileActive(job)
    job.handleInterrupt()
    status, result = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED and result.check(interfaces.AbortedError)
    assert support.storedState(db, callback._p_oid, 'result') == (
        'failure: AbortedError',)
    assert job not in agent and job in list(agent.completed)


def test_interrupted_job_without_a_queue_is_aborted(conn, db):
    job = conn.root()['job'] = Job(record, 'alone')
    conn.transaction_manager.commit()
    support.crashWhileActive(job)
    job.handleInterrupt()
    status, result = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED and result.check(interfaces.AbortedError)


@pytest.mark.parametrize('run', [False, True])
def test_handleInterrupt_ignores_jobs_that_are_not_active(conn, run):
    job = conn.root()['job'] = Job(record, 'job')
    conn.transaction_manager.commit()
    if run:
        job()
    before = (job.status, job.result)
    assert job.handleInterrupt() is None
    assert (job.status, job.result) == before


# --- fail ------------------------------------------------------------------

def test_fail_a_new_job_with_a_timeout_by_default(conn, db):
    job = conn.root()['job'] = Job(record, 'job')
    callback = job.addCallback(describe)
    conn.transaction_manager.commit()
    job.fail()
    assert _runs == []
    status, result = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED and result.check(interfaces.TimeoutError)
    assert callback.result == 'failure: TimeoutError'


def test_fail_with_a_given_error(conn):
    job = conn.root()['job'] = Job(record, 'job')
    conn.transaction_manager.commit()
    job.fail(RuntimeError('cancelled by the operator'))
    assert job.result.getErrorMessage() == 'cancelled by the operator'


def test_fail_removes_a_pending_job_from_its_queue(conn, db, queue):
    job = queue.put(Job(record, 'job'))
    other = queue.put(Job(record, 'other'))
    conn.transaction_manager.commit()
    job.fail()
    assert list(queue) == [other]
    with support.otherConnection(db) as second:
        assert len(second.root()[interfaces.KEY]['']) == 1
        assert second.get(job._p_oid).status == COMPLETED


@pytest.mark.parametrize('crash', [False, True])
def test_fail_a_started_job_is_refused(conn, crash):
    job = conn.root()['job'] = Job(record, 'job')
    conn.transaction_manager.commit()
    if crash:
        support.crashWhileActive(job)
    else:
        job()
    status = job.status
    with pytest.raises(interfaces.BadStatusError,
                       match='has not started.*%s' % status):
        job.fail()
    assert job.status == status


# --- resumeCallbacks ----------------------------------------------------

def crashAfter(conn, job, when):
    tm = conn.transaction_manager
    crash = support.Crash(tm, when)
    try:
        with pytest.raises(support.SimulatedCrash):
            job()
    finally:
        crash.stop()
        tm.abort()


def test_resume_runs_only_the_callbacks_not_yet_run(conn, db):
    job = conn.root()['job'] = Job(record, 'job')
    first = job.addCallback(Job(record, 'first'))
    second = job.addCallback(Job(record, 'second'))
    conn.transaction_manager.commit()
    crashAfter(conn, job, lambda: first._status == COMPLETED)
    assert support.storedState(db, job._p_oid, 'status') == (CALLBACKS,)
    assert support.storedState(db, first._p_oid, 'status') == (COMPLETED,)
    assert support.storedState(db, second._p_oid, 'status') == (NEW,)
    assert _runs == ['job', 'first']

    job.resumeCallbacks()
    assert _runs == ['job', 'first', 'second']
    assert support.storedState(db, job._p_oid, 'status') == (COMPLETED,)
    assert support.storedState(db, second._p_oid, 'result') == (
        "second got 'job got None'",)


def test_resume_reruns_a_callback_that_was_active(conn, db):
    job = conn.root()['job'] = Job(record, 'job')
    first = job.addCallback(Job(record, 'first'))
    # a policy that gives up on commit errors, so that the crash is not
    # retried forever as the callback default would
    second = job.addCallback(Job(record, 'second'),
                             retry_policy_factory='RetryCommonFourTimes')
    conn.transaction_manager.commit()
    crashAfter(conn, job, lambda: second._status == ACTIVE)
    assert support.storedState(db, second._p_oid, 'status') == (ACTIVE,)
    assert _runs == ['job', 'first', 'second']

    job.resumeCallbacks()
    assert _runs == ['job', 'first', 'second', 'second']
    assert support.storedState(db, second._p_oid, 'status', 'result') == (
        COMPLETED, "second got 'job got None'")
    assert support.storedState(db, job._p_oid, 'status') == (COMPLETED,)
    assert first.status == COMPLETED


def test_resume_an_interrupted_callback_that_gives_up(conn, db):
    job = conn.root()['job'] = Job(record, 'job')
    callback = job.addCallback(Job(record, 'mail'),
                               retry_policy_factory='NeverRetry')
    conn.transaction_manager.commit()
    crashAfter(conn, job, lambda: callback._status == ACTIVE)
    job.resumeCallbacks()
    assert _runs == ['job', 'mail']
    status, result = support.storedState(
        db, callback._p_oid, 'status', 'result')
    assert status == COMPLETED and result.check(interfaces.AbortedError)


def test_resume_a_job_that_died_before_its_final_commit(conn, db):
    job = conn.root()['job'] = Job(record, 'job')
    callback = job.addCallback(Job(record, 'callback'))
    chained = callback.addCallback(Job(record, 'chained'))
    conn.transaction_manager.commit()
    # the chained callback completed, its parent callback did not
    crashAfter(conn, job, lambda: chained._status == COMPLETED)
    assert support.storedState(db, callback._p_oid, 'status') == (CALLBACKS,)
    job.resumeCallbacks()
    assert _runs == ['job', 'callback', 'chained']
    for ob in (job, callback, chained):
        assert support.storedState(db, ob._p_oid, 'status') == (COMPLETED,)


def test_resume_is_refused_outside_CALLBACKS(conn):
    job = conn.root()['job'] = Job(record, 'job')
    conn.transaction_manager.commit()
    with pytest.raises(interfaces.BadStatusError,
                       match='in CALLBACKS.*new-status'):
        job.resumeCallbacks()
    job()
    with pytest.raises(interfaces.BadStatusError, match='completed-status'):
        job.resumeCallbacks()


def test_registry_recovers_jobs_of_a_dead_immediate_dispatcher(conn, db,
                                                               queue):
    """End to end through the registry: a held ACTIVE job gets a
    handleInterrupt job, a CALLBACKS job a resumeCallbacks job."""
    from zcasync import testing
    active = queue.put(Job(record, 'active'))
    conn.transaction_manager.commit()
    agent = testing._immediateAgent(queue)
    agent.size = 2
    conn.transaction_manager.commit()
    claim(agent, active)
    support.crashWhileActive(active)
    in_callbacks = queue.put(Job(record, 'in callbacks'))
    in_callbacks.addCallback(Job(record, 'callback'),
                             retry_policy_factory='RetryCommonFourTimes')
    conn.transaction_manager.commit()
    claim(agent, in_callbacks)
    crashAfter(conn, in_callbacks,
               lambda: in_callbacks._status == CALLBACKS)
    assert (active.status, in_callbacks.status) == (ACTIVE, CALLBACKS)

    agents = queue.dispatchers[testing.IMMEDIATE_UUID]
    agents.activate()   # cleans up what the dead process held
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    assert support.storedState(db, active._p_oid, 'status', 'result') == (
        COMPLETED, 'active got None')
    assert support.storedState(db, in_callbacks._p_oid, 'status') == (
        COMPLETED,)
    assert _runs == ['active', 'in callbacks', 'active', 'callback']


# --- issue 9: recovery never strands a job ---------------------------------

def test_recovery_with_an_unknown_policy_name_uses_the_default(
        conn, db, queue, agent, caplog):
    """The policy name was registered only in the process that queued the
    job: recovery falls back on the default policy (and says so) instead
    of failing and leaving the job ACTIVE forever (case 4)."""
    import zope.component
    from zcasync import retry
    gsm = zope.component.getGlobalSiteManager()
    gsm.registerUtility(retry.NeverRetry, interfaces.IRetryPolicyFactory,
                        'only-in-the-producer')
    job = queue.put(Job(record, 'job'),
                    retry_policy_factory='only-in-the-producer')
    gsm.unregisterUtility(retry.NeverRetry, interfaces.IRetryPolicyFactory,
                          'only-in-the-producer')
    claim(agent, job)
    job._activate()
    conn.transaction_manager.commit()
    assert job.handleInterrupt() is None
    conn.transaction_manager.commit()
    assert job.status == PENDING and queue[0] is job  # back, to run again
    assert 'cannot make the retry policy' in caplog.text
    assert job.annotations['zcasync.RetryCommonFourTimes'] == {
        'interruption': 1}


def test_a_recovered_job_gets_a_new_start_deadline(conn, db, queue, agent,
                                                   clock):
    """A job with ``begin_by`` that started on time and was interrupted
    runs again when recovered later: its deadline counts from the put
    back, not from its first start (case 7)."""
    import datetime
    job = queue.put(Job(record, 'deadline'),
                    begin_by=datetime.timedelta(seconds=10))
    conn.transaction_manager.commit()
    clock.advance(5)
    claim(agent, job)
    job._activate()  # started on time
    conn.transaction_manager.commit()
    clock.advance(600)  # its process died; a sibling recovers it later
    job.handleInterrupt()
    conn.transaction_manager.commit()
    assert job.begin_after == clock.now
    claim(agent, job)
    assert job() == "deadline got None"
    assert _runs == ['deadline']
