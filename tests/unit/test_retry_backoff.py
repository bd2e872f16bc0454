"""RetryWithBackoff (issue 14): the application's own exceptions are
retried after exponential delays with full jitter, up to max_attempts
runs, recorded in the job's annotations; selectable per job (stored with
the job, its class by reference) and by name.  Jobs run in a queue on a
FileStorage with a FixedClock and an injected random source."""
import datetime
import pickle
import uuid

import pytest
import zope.component

from zcasync import testing
from zcasync import interfaces, retry
from zcasync.interfaces import COMPLETED, PENDING
from zcasync.agent import Agent
from zcasync.job import Job

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
KEY = 'zcasync.RetryWithBackoff'
UUID = uuid.UUID(int=7)
_calls = []


def flaky(times, error=OSError):
    """Raise `error` the first `times` calls, then return 'done'."""
    _calls.append(1)
    if len(_calls) <= times:
        raise error('attempt %d' % len(_calls))
    return 'done'


@pytest.fixture(autouse=True)
def clean():
    del _calls[:]
    previous = retry.setRandom(lambda: 0.5)
    yield
    retry.setRandom(previous)


def runUntilSettled(queue, conn, clock, job, limit=20):
    """Claim `job` through an agent and run it whenever it is due, moving
    the clock to its next run; returns the delays seen between runs
    (seconds)."""
    agents = testing.activeRegistration(queue, UUID)
    agent = agents.get('main')
    if agent is None:
        agent = agents['main'] = Agent(size=1)
    delays = []
    for i in range(limit):
        claimed = agent.claimJob()
        if claimed is None:
            due = queue.nextDue()
            assert due is not None, 'the job is neither due nor scheduled'
            delays.append((due - clock.now).total_seconds())
            clock.now = due
            continue
        assert claimed is job
        conn.transaction_manager.commit()
        job()
        if job.status == COMPLETED:
            return delays
    raise AssertionError('the job did not settle')


def test_exponential_delays_with_full_jitter_then_success(queue, conn,
                                                          clock):
    policy = retry.RetryWithBackoff(retry_on=(OSError,), max_attempts=5,
                                    base=datetime.timedelta(seconds=2))
    job = queue.put(Job(flaky, 3), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    delays = runUntilSettled(queue, conn, clock, job)
    # base * 2 ** (n - 1) after the n-th failure, times the jitter 0.5
    assert delays == [1.0, 2.0, 4.0]
    assert job.result == 'done' and len(_calls) == 4
    record = job.annotations[KEY]
    assert record['attempts'] == 3
    assert record['next run'] == START + datetime.timedelta(seconds=7)


def test_gives_up_after_max_attempts(queue, conn, clock):
    policy = retry.RetryWithBackoff(retry_on=OSError, max_attempts=3,
                                    jitter=False)
    job = queue.put(Job(flaky, 10), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    delays = runUntilSettled(queue, conn, clock, job)
    assert delays == [1.0, 2.0] and len(_calls) == 3
    assert job.result.check(OSError)
    assert job.annotations[KEY] == {'attempts': 3, 'next run': None}


def test_the_cap_bounds_the_delay(queue, conn, clock):
    retry.setRandom(lambda: 0.999)
    policy = retry.RetryWithBackoff(max_attempts=12, jitter=True,
                                    cap=datetime.timedelta(seconds=30))
    assert [round(policy.delay(n).total_seconds(), 2)
            for n in (1, 4, 5, 6, 40)] == [1.0, 7.99, 15.98, 29.97, 29.97]
    retry.setRandom(lambda: 0.0)
    assert policy.delay(6) == datetime.timedelta(0)


def test_other_exceptions_are_not_retried(queue, conn, clock):
    policy = retry.RetryWithBackoff(retry_on=(OSError,))
    job = queue.put(Job(flaky, 1, ValueError), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    assert runUntilSettled(queue, conn, clock, job) == []
    assert job.result.check(ValueError) and len(_calls) == 1
    assert KEY not in job.annotations


def test_stored_with_the_job_by_reference(queue, conn, db, clock):
    policy = retry.RetryWithBackoff(retry_on=(OSError, KeyError),
                                    max_attempts=2)
    assert b'zcasync.retry' in pickle.dumps(policy)
    job = queue.put(Job(flaky, 1), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    other = db.open()
    try:
        stored = other.get(job._p_oid)
        assert stored.retry_policy_factory == policy
        assert stored.retry_policy_factory.retry_on == (OSError, KeyError)
    finally:
        other.close()


def test_selectable_by_name(queue, conn, clock):
    job = queue.put(Job(flaky, 1), retry_policy_factory='RetryWithBackoff')
    conn.transaction_manager.commit()
    assert runUntilSettled(queue, conn, clock, job) == [0.5]
    assert job.result == 'done'
    # an application's own configuration, registered under its name
    mine = retry.RetryWithBackoff(retry_on=(OSError,), max_attempts=2,
                                  jitter=False)
    zope.component.provideUtility(mine, interfaces.IRetryPolicyFactory,
                                  'io-backoff')
    del _calls[:]
    job = queue.put(Job(flaky, 5), retry_policy_factory='io-backoff')
    conn.transaction_manager.commit()
    assert runUntilSettled(queue, conn, clock, job) == [1.0]
    assert job.result.check(OSError)
    assert job.status == COMPLETED and job.annotations[KEY]['attempts'] == 2


def test_a_rescheduled_job_waits_in_its_queue(queue, conn, clock):
    policy = retry.RetryWithBackoff(base=datetime.timedelta(minutes=1),
                                    jitter=False)
    job = queue.put(Job(flaky, 1), retry_policy_factory=policy)
    conn.transaction_manager.commit()
    agent = testing.activeRegistration(queue, UUID)['main'] = Agent(size=1)
    assert agent.claimJob() is job
    job()
    assert job.status == PENDING
    assert job.begin_after == START + datetime.timedelta(minutes=1)
    assert queue.claim() is None
    assert queue.nextDue() == job.begin_after


@pytest.mark.parametrize('kw, error, text', [
    ({'retry_on': 'OSError'}, TypeError, 'exception classes'),
    ({'retry_on': ()}, TypeError, 'exception classes'),
    ({'max_attempts': 0}, ValueError, 'max_attempts'),
    ({'max_attempts': 2.5}, ValueError, 'max_attempts'),
    ({'base': 1}, TypeError, 'base must be a timedelta'),
    ({'cap': datetime.timedelta(seconds=-1)}, TypeError, 'cap'),
])
def test_bad_configuration_is_refused(kw, error, text):
    with pytest.raises(error, match=text):
        retry.RetryWithBackoff(**kw)
