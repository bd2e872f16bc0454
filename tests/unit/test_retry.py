"""Retry policies (issue 2, section 3): what each built-in policy retries,
how counts persist, how a policy is chosen, commit failures and
rescheduling."""
import collections
import datetime
import logging
import threading

import pytest
import ZEO.Exceptions
import ZODB.POSException
import zope.component
import zope.interface

from zcasync import testing
import zcasync
import zcasync.instanceuuid
from zcasync import job as jobmodule
from zcasync import interfaces, retry, utils
from zcasync.agent import Agent
from zcasync.interfaces import ACTIVE, COMPLETED, PENDING
from zcasync.job import Job
from zcasync.testing import FixedClock

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support

UTC = datetime.timezone.utc
Conflict = ZODB.POSException.ConflictError
Disconnected = ZEO.Exceptions.ClientDisconnected

#: calls per key, and what is left to fail per key
_calls = collections.Counter()
_failures = {}
_sleeps = []


@pytest.fixture(autouse=True)
def clean():
    _calls.clear()
    _failures.clear()
    del _sleeps[:]
    yield


# --- callables and policies (module level: stored by reference) ----------

def raiseFirst(key, error, times, value='done'):
    """Raise `error()` the first `times` calls, then return `value`."""
    _calls[key] += 1
    if _calls[key] <= times:
        raise error('attempt %d' % _calls[key])
    return value


class Flaky:
    """A result whose pickling fails while ``_failures[key]`` lasts."""

    def __init__(self, key, error):
        self.key, self.error = key, error

    def __reduce__(self):
        if _failures.get(self.key, 0) > 0:
            _failures[self.key] -= 1
            raise self.error('cannot store it yet')
        return (Flaky, (self.key, self.error))


def returnFlaky(key, error):
    _calls[key] += 1
    return Flaky(key, error)


class Locked:
    def __init__(self):
        self.lock = threading.Lock()


def returnUnstorable():
    _calls['unstorable'] += 1
    return Locked()


class RecordingFourTimes(retry.RetryCommonFourTimes):
    def sleep(self, seconds):
        _sleeps.append(seconds)


class RecordingForever(retry.RetryCommonForever):
    def sleep(self, seconds):
        _sleeps.append(seconds)


def neverRetryFactory(job):
    return retry.NeverRetry(job)


class In(retry.BasePolicy):
    """Reschedule by `delay` (a timedelta, or a datetime relative to now)
    on a job error or a commit error."""

    delay = datetime.timedelta(seconds=60)
    absolute = False

    def _when(self):
        if self.absolute:
            return utils.now() + self.delay
        return self.delay

    def jobError(self, failure, data_cache):
        return self._when()

    def commitError(self, failure, data_cache):
        return self._when()

    def interrupted(self):
        return self._when()


class Now(In):
    delay = datetime.timedelta(0)


class InThePast(In):
    delay = datetime.timedelta(hours=-1)
    absolute = True


class AtAbsoluteTime(In):
    absolute = True


def flagged(job):
    return 'flagged' in job.annotations


def store(conn, job, name='job'):
    conn.root()[name] = job
    conn.transaction_manager.commit()
    return job


def counts(db, job, policy='RetryCommonFourTimes'):
    """The policy's counts as committed."""
    with support.otherConnection(db) as other:
        return other.get(job._p_oid).annotations.get('zcasync.%s' % policy)


# --- RetryCommonFourTimes ----------------------------------------------------

def test_four_times_conflicts_raised_by_the_job_five_attempts_in_all(
        conn, db):
    job = store(conn, Job(raiseFirst, 'conflict', Conflict, 100))
    failure = job()
    assert _calls['conflict'] == 5
    assert failure.check(Conflict)
    assert support.storedState(db, job._p_oid, 'status') == (COMPLETED,)
    # the counts survived each attempt's abort
    assert counts(db, job) == {'transaction error': 5}


def test_four_times_conflict_then_success(conn):
    job = store(conn, Job(raiseFirst, 'conflict', Conflict, 4))
    assert job() == 'done'
    assert _calls['conflict'] == 5


def test_four_times_disconnects_retried_without_limit_with_sleeps(conn, db):
    job = Job(raiseFirst, 'disconnect', Disconnected, 14)
    job.retry_policy_factory = RecordingFourTimes
    store(conn, job)
    assert job() == 'done'
    assert _calls['disconnect'] == 15
    assert _sleeps == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60, 60]
    assert counts(db, job, 'RecordingFourTimes') == {'disconnect': 14}


class OperationalError(Exception):
    """Stands for psycopg2.OperationalError (a lost PostgreSQL connection):
    policies recognise it by its qualified name."""


OperationalError.__module__ = 'psycopg2'


def raiseLostConnection(key, times):
    """raiseFirst with OperationalError (not storable as an argument: its
    module name is not where it lives)."""
    return raiseFirst(key, OperationalError, times)


def test_four_times_lost_database_connections_retried_ten_times(conn, db):
    assert utils.makeFailure(OperationalError('x')).check(
        'psycopg2.OperationalError')
    job = Job(raiseLostConnection, 'pg', 10)
    job.retry_policy_factory = RecordingFourTimes
    store(conn, job)
    assert job() == 'done' and _calls['pg'] == 11
    assert _sleeps == [0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 60]
    assert counts(db, job, 'RecordingFourTimes') == {'database error': 10}
    # an eleventh loss in one run is given up on: it is not transient
    del _sleeps[:]
    job = Job(raiseLostConnection, 'pg-down', 11)
    job.retry_policy_factory = RecordingFourTimes
    store(conn, job)
    assert job().check('psycopg2.OperationalError')
    assert _calls['pg-down'] == 11


def test_forever_retries_lost_database_connections(conn):
    job = Job(raiseLostConnection, 'pg', 12)
    job.retry_policy_factory = RecordingForever
    store(conn, job)
    assert job() == 'done' and _calls['pg'] == 13


def test_four_times_other_errors_are_not_retried(conn):
    job = store(conn, Job(raiseFirst, 'other', ValueError, 1))
    assert job().check(ValueError)
    assert _calls['other'] == 1


def test_four_times_interruptions_nine_times_then_no(conn, db):
    job = store(conn, Job(support.add, 1, 2))
    answers = [retry.RetryCommonFourTimes(job).interrupted()
               for i in range(10)]
    assert answers == [True] * 9 + [False]
    conn.transaction_manager.commit()
    assert counts(db, job) == {'interruption': 10}


def test_four_times_commit_conflicts_then_gives_up(conn, db):
    _failures['commit'] = 100
    job = store(conn, Job(returnFlaky, 'commit', Conflict))
    result = job()
    assert _calls['commit'] == 5   # retrying a commit re-runs the call
    assert result.check(Conflict)
    status, stored = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED and stored.check(Conflict)


def test_four_times_commit_disconnects_are_retried(conn):
    _failures['commit'] = 3
    job = Job(returnFlaky, 'commit', Disconnected)
    job.retry_policy_factory = RecordingFourTimes
    store(conn, job)
    assert isinstance(job(), Flaky)
    assert _sleeps == [5, 10, 15]


def test_unstorable_result_stores_the_commit_failure(conn, db):
    job = store(conn, Job(returnUnstorable))
    result = job()
    assert _calls['unstorable'] == 1
    assert result.check(TypeError)
    assert "cannot pickle '_thread.lock' object" in result.getErrorMessage()
    status, stored = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED
    assert isinstance(stored, zcasync.Failure) and stored.check(TypeError)


# --- RetryCommonForever -------------------------------------------------

def test_forever_retries_conflicts_and_disconnects(conn):
    job = Job(raiseFirst, 'conflict', Conflict, 12)
    job.retry_policy_factory = RecordingForever
    store(conn, job)
    assert job() == 'done' and _calls['conflict'] == 13
    job = Job(raiseFirst, 'disconnect', Disconnected, 13)
    job.retry_policy_factory = RecordingForever
    store(conn, job, 'other')
    assert job() == 'done' and _calls['disconnect'] == 14
    assert _sleeps == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60]


def test_forever_does_not_retry_other_job_errors(conn):
    job = Job(raiseFirst, 'other', KeyError, 1)
    job.retry_policy_factory = 'RetryCommonForever'
    store(conn, job)
    assert job().check(KeyError)
    assert _calls['other'] == 1


def test_forever_retries_commit_errors_logging_critical(conn, db, caplog):
    _failures['commit'] = 11
    job = Job(returnFlaky, 'commit', RuntimeError)
    job.retry_policy_factory = RecordingForever
    store(conn, job)
    with caplog.at_level(logging.DEBUG, logger='zcasync.events'):
        result = job()
    assert isinstance(result, Flaky) and _calls['commit'] == 12
    critical = [r for r in caplog.records
                if r.name == 'zcasync.events' and
                r.levelno == logging.CRITICAL]
    # on the first failure and every fifth: 1, 5, 10
    assert len(critical) == 3
    for record, count in zip(critical, (1, 5, 10)):
        message = record.getMessage()
        assert 'failed %d time(s)' % count in message
        assert 'RuntimeError: cannot store it yet' in message
    assert len(_sleeps) == 11
    assert counts(db, job, 'RecordingForever') == {
        'other commit error': 11}


def test_forever_retries_commit_conflicts_and_disconnects(conn):
    _failures['conflict'] = 7
    _failures['disconnect'] = 2
    job = Job(returnFlaky, 'conflict', Conflict)
    job.retry_policy_factory = RecordingForever
    store(conn, job)
    assert isinstance(job(), Flaky) and _calls['conflict'] == 8
    job = Job(returnFlaky, 'disconnect', Disconnected)
    job.retry_policy_factory = RecordingForever
    store(conn, job, 'other')
    assert isinstance(job(), Flaky) and _sleeps == [5, 10]


def test_forever_interruptions_always_retried(conn):
    job = store(conn, Job(support.add, 1, 2))
    policy = retry.RetryCommonForever(job)
    assert all(policy.interrupted() for i in range(20))


# --- NeverRetry ----------------------------------------------------------

def test_never_retry_does_not_retry_conflicts(conn):
    job = Job(raiseFirst, 'conflict', Conflict, 1)
    job.retry_policy_factory = 'NeverRetry'
    store(conn, job)
    assert job().check(Conflict) and _calls['conflict'] == 1


def test_never_retry_gives_up_on_commit_errors(conn):
    _failures['commit'] = 1
    job = Job(returnFlaky, 'commit', Conflict)
    job.retry_policy_factory = retry.NeverRetry
    store(conn, job)
    assert job().check(Conflict) and _calls['commit'] == 1


def test_never_retry_fails_an_interrupted_job(conn, db, queue):
    job = queue.put(Job(support.add, 1, 2),
                    retry_policy_factory='NeverRetry')
    conn.transaction_manager.commit()
    queue.pull()
    store(conn, job)
    support.crashWhileActive(job)
    assert job.status == ACTIVE
    job.handleInterrupt()
    status, result = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED
    assert result.check(interfaces.AbortedError)
    assert 'its retry policy gave up' in result.getErrorMessage()
    assert counts(db, job, 'NeverRetry') == {'interruption': 1}


def test_interruption_counts_persist_across_handleInterrupt_calls(
        conn, db, queue):
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = Agent()
    job = queue.put(Job(support.add, 1, 2))
    conn.transaction_manager.commit()
    for interruption in range(1, 10):
        assert agent.claimJob() is job
        conn.transaction_manager.commit()
        support.crashWhileActive(job)
        job.handleInterrupt()
        conn.transaction_manager.commit()
        assert job.status == PENDING
        assert counts(db, job) == {'interruption': interruption}
    agent.claimJob()
    conn.transaction_manager.commit()
    support.crashWhileActive(job)
    job.handleInterrupt()
    assert support.storedState(db, job._p_oid, 'status') == (COMPLETED,)
    assert job.result.check(interfaces.AbortedError)
    assert counts(db, job) == {'interruption': 10}


# --- choosing the policy -------------------------------------------------

def test_default_policies(conn):
    job = Job(support.add, 1, 2)
    callback = job.addCallback(support.echo)
    assert type(job.getRetryPolicy()) is retry.RetryCommonFourTimes
    assert type(callback.getRetryPolicy()) is retry.RetryCommonForever
    assert job.getRetryPolicy().parent is job


def test_policy_factory_as_callable_and_builtin_name(conn, db):
    job = store(conn, Job(support.add, 1, 2))
    job.retry_policy_factory = neverRetryFactory
    conn.transaction_manager.commit()
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        assert stored.retry_policy_factory is neverRetryFactory
        assert type(stored.getRetryPolicy()) is retry.NeverRetry
    for name, policy in retry.POLICIES.items():
        job.retry_policy_factory = name
        # a class, or a configured factory (RetryWithBackoff)
        made = policy if isinstance(policy, type) else retry.BackoffPolicy
        assert type(job.getRetryPolicy()) is made


@zope.interface.implementer(interfaces.IRetryPolicyFactory)
class CustomFactory:
    def __call__(self, job):
        return RecordingForever(job)


def test_policy_factory_as_a_registered_utility(conn):
    zope.component.provideUtility(
        CustomFactory(), interfaces.IRetryPolicyFactory, 'patient')
    job = Job(raiseFirst, 'conflict', Conflict, 8)
    job.retry_policy_factory = 'patient'
    store(conn, job)
    assert job() == 'done' and _calls['conflict'] == 9


def test_registered_default_replaces_the_default(conn):
    zope.component.provideUtility(
        neverRetryFactory, interfaces.IRetryPolicyFactory, 'default')
    assert type(Job(support.add, 1, 2).getRetryPolicy()) is retry.NeverRetry


def test_unknown_policy_name_is_refused():
    job = Job(support.add, 1, 2)
    with pytest.raises(LookupError) as info:
        job.retry_policy_factory = 'RetryOften'
    message = str(info.value)
    assert "'RetryOften'" in message
    assert 'NeverRetry, RetryCommonForever, RetryCommonFourTimes' in message
    assert 'IRetryPolicyFactory' in message
    with pytest.raises(LookupError, match='RetryOften'):
        retry.lookup('RetryOften')


def test_base_policy_sleeps_for_real(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, 'sleep', slept.append)
    retry.BasePolicy(Job(support.add, 1, 2)).sleep(0.25)
    assert slept == [0.25]


# --- rescheduling -------------------------------------------------------

def setUpQueue(conn, queue, policy):
    """Queue `first` then `job` (raising on its first call, with
    `policy`); claim `job` through an agent that takes flagged jobs."""
    clock = FixedClock(datetime.datetime(2030, 1, 1, tzinfo=UTC))
    utils.setClock(clock)
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = Agent(filter=flagged)
    first = queue.put(Job(support.add, 1, 1))
    job = Job(raiseFirst, 'reschedule', ValueError, 1)
    job.annotations['flagged'] = True
    queue.put(job, retry_policy_factory=policy)
    conn.transaction_manager.commit()
    assert agent.claimJob() is job
    conn.transaction_manager.commit()
    clock.advance(5)
    return clock, agent, first, job


@pytest.mark.parametrize('policy', [In, AtAbsoluteTime])
def test_reschedule_later_moves_begin_after(conn, db, queue, policy):
    clock, agent, first, job = setUpQueue(conn, queue, policy)
    assert job() is None
    assert job not in agent
    status, begin_after, result, start = support.storedState(
        db, job._p_oid, 'status', 'begin_after', 'result', 'active_start')
    assert (status, result, start) == (PENDING, None, None)
    assert begin_after == clock.now + datetime.timedelta(seconds=60)
    assert list(queue) == [first, job]
    clock.advance(61)
    testing.activeRegistration(queue, agent.parent.UUID)  # it pinged
    assert agent.claimJob() is job
    conn.transaction_manager.commit()
    assert job() == 'done'


@pytest.mark.parametrize('policy', [Now, InThePast])
def test_reschedule_now_or_in_the_past_goes_to_the_front(
        conn, db, queue, policy):
    clock, agent, first, job = setUpQueue(conn, queue, policy)
    job()
    with support.otherConnection(db) as other:
        queued = list(other.root()[interfaces.KEY][''])
        assert [j._p_oid for j in queued] == [job._p_oid, first._p_oid]
        assert queued[0].status == PENDING


def test_reschedule_after_a_commit_error(conn, db, queue):
    clock, agent, first, job = setUpQueue(conn, queue, In)
    _failures['flaky'] = 1
    job.args[:] = ['flaky', RuntimeError]
    job.callable = returnFlaky
    conn.transaction_manager.commit()
    assert job() is None
    assert support.storedState(db, job._p_oid, 'status', 'begin_after') == (
        PENDING, clock.now + datetime.timedelta(seconds=60))


def test_reschedule_without_a_queue_fails_the_job(conn):
    job = Job(raiseFirst, 'reschedule', ValueError, 1)
    job.retry_policy_factory = In
    store(conn, job)
    job()
    result = job.result
    assert job.status == COMPLETED
    assert result.check(interfaces.AbortedError)
    assert 'rescheduled' in result.getErrorMessage()
    assert 'has no queue' in result.getErrorMessage()


def test_interrupted_reschedule(conn, db, queue):
    clock, agent, first, job = setUpQueue(conn, queue, In)
    support.crashWhileActive(job)
    job.handleInterrupt()
    conn.transaction_manager.commit()
    assert support.storedState(db, job._p_oid, 'status', 'begin_after') == (
        PENDING, clock.now + datetime.timedelta(seconds=60))
    assert list(queue) == [first, job]


def test_a_result_that_can_never_be_committed_ends_with_a_clear_error(
        conn, db):
    """Every commit after the ACTIVE one conflicts: the policy retries the
    call 5 times in all, then storing the failure is tried a bounded number
    of times (COMMIT_ATTEMPTS), and the job is left ACTIVE for recovery
    (its dispatcher hands it back: no thread runs it any more)."""
    job = store(conn, Job(raiseFirst, 'stuck', ValueError, 0))
    tm = conn.transaction_manager
    jam = support.Crash(tm, lambda: job._status == ACTIVE, error=Conflict)
    try:
        with pytest.raises(Conflict):
            job()
    finally:
        jam.stop()
        tm.abort()
    assert _calls['stuck'] == 5
    assert jam.refused == 5 + jobmodule.COMMIT_ATTEMPTS
    assert support.storedState(db, job._p_oid, 'status') == (ACTIVE,)


def test_base_policy_never_retries(conn):
    job = Job(raiseFirst, 'base', Conflict, 1)
    job.retry_policy_factory = retry.BasePolicy
    store(conn, job)
    assert job().check(Conflict) and _calls['base'] == 1
    policy = job.getRetryPolicy()
    assert type(policy) is retry.BasePolicy
    assert policy.interrupted() is False
    assert policy.commitError(job.result, {}) is False
