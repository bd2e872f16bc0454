"""Jobs and retry policies as a zc.async 1.5 application uses them, after
renaming ``zc.async`` to ``zcasync`` (issue 11, "Jobs", "Retry
policies")."""
import datetime
import logging

import pytest
import twisted.internet.defer
import zope.component
import zope.interface

import zcasync.agent
import zcasync.configure
import zcasync.instanceuuid
import zcasync.interfaces
import zcasync.job
import zcasync.testing
import zcasync.utils
from zcasync.interfaces import ACTIVE, COMPLETED, NEW, PENDING

DEFERREDS = {}


def innerCall():
    return 42


def returnsUnqueuedJob():
    return zcasync.job.Job(innerCall)


def returnsDeferred(key):
    d = DEFERREDS[key] = twisted.internet.defer.Deferred()
    return d


def whoAmI(job, label):
    return (job.status, label)


def fail(message):
    raise ValueError(message)


def describe(value):
    if zcasync.utils.isFailure(value):
        return 'failure: %s' % value.getErrorMessage()
    return 'success: %r' % (value,)


def exclaim(text):
    return text + '!'


def unstorable():
    import threading
    return threading.Lock()


@pytest.fixture
def root(conn):
    zcasync.configure.base()
    return conn.root()


def commit(conn):
    conn.transaction_manager.commit()


# --- jobs returning jobs and Deferreds --------------------------------------

def test_a_job_returning_a_job_waits_with_it_as_its_result(root, conn):
    j = root['j'] = zcasync.job.Job(returnsUnqueuedJob)
    commit(conn)
    res = j()
    assert zcasync.interfaces.IJob.providedBy(res)
    assert j.status == ACTIVE and j.result is res
    # the inner job is neither run nor queued by the outer one
    assert res.status == NEW and res.parent is None
    assert len(res.callbacks) == 1
    assert res() == 42
    assert (j.status, j.result) == (COMPLETED, 42)


def test_a_queued_inner_job_completes_its_outer_job(conn, queue):
    agents = zcasync.testing.activeRegistration(queue, zcasync.instanceuuid
                                                .getUUID())
    agent = agents['main'] = zcasync.agent.Agent()
    outer = queue.put(zcasync.job.Job(returnsUnqueuedJob))
    commit(conn)
    assert agent.claimJob() is outer
    commit(conn)
    inner = outer()
    assert len(queue) == 0 and outer.status == ACTIVE
    queue.put(inner)
    commit(conn)
    assert zcasync.testing.runQueuedJobs(conn) == [inner]
    assert (outer.status, outer.result) == (COMPLETED, 42)


def test_a_job_returning_a_deferred(root, conn):
    j = root['j'] = zcasync.job.Job(returnsDeferred, 'd')
    commit(conn)
    d = j()
    assert d is DEFERREDS['d'] and j.status == ACTIVE
    DEFERREDS.pop('d').callback('fired')
    conn.transaction_manager.begin()
    assert (j.status, j.result) == (COMPLETED, 'fired')


def test_bind_passes_the_job_itself(root, conn):
    j = root['j'] = zcasync.job.Job.bind(whoAmI, 'label')
    commit(conn)
    assert j.args[0] is j
    assert j() == (ACTIVE, 'label')
    assert '<this job>' in repr(j)


# --- callback proxies --------------------------------------------------------

def test_addCallbacks_returns_a_proxy_to_chain_on(root, conn):
    good = root['good'] = zcasync.job.Job(innerCall)
    bad = root['bad'] = zcasync.job.Job(fail, 'oops')
    proxies = [j.addCallbacks(describe, describe) for j in (good, bad)]
    chained = [p.addCallback(exclaim) for p in proxies]
    only_success = good.addCallbacks(success=describe)
    on_success = only_success.success.addCallback(exclaim)
    on_failure = only_success.failure.addCallback(describe)
    commit(conn)
    assert zcasync.interfaces.ICallbackProxy.providedBy(proxies[0])
    assert proxies[0].status == NEW and proxies[0].result is None
    good()
    bad()
    assert proxies[0].job is proxies[0].success
    assert proxies[1].job is proxies[1].failure
    assert proxies[1].success.status == NEW  # not chosen: never runs
    assert [p.result for p in proxies] == ['success: 42', 'failure: oops']
    assert [c.result for c in chained] == ['success: 42!', 'failure: oops!']
    assert on_success.result == 'success: 42!'
    assert on_failure.status == NEW
    # a callback added to the proxy of a completed job runs at once
    late = proxies[0].addCallback(exclaim)
    assert late.result == 'success: 42!'
    conn.transaction_manager.begin()
    assert chained[1].status == COMPLETED


# --- logging ---------------------------------------------------------------

def test_a_job_logs_its_outcome(root, conn, caplog):
    caplog.set_level(logging.DEBUG)
    good = root['good'] = zcasync.job.Job(innerCall)
    callback = good.addCallback(fail)
    bad = root['bad'] = zcasync.job.Job(fail, 'broken')
    commit(conn)
    good()
    bad()
    records = {(r.name, r.levelname, r.getMessage().split('\n')[0])
               for r in caplog.records}
    assert ('zcasync.trace', 'INFO', '%r succeeded with result: 42'
            % good) in records
    assert ('zcasync.trace', 'DEBUG', 'starting callback %r to %r'
            % (callback, good)) in records
    failures = [r for r in caplog.records if 'failed with traceback' in
                r.getMessage()]
    assert [(r.name, r.levelname) for r in failures] == [
        ('zcasync.events', 'CRITICAL'),  # the callback
        ('zcasync.events', 'ERROR')]     # the job
    assert 'ValueError: broken' in failures[1].getMessage()
    bad_level = root['level'] = zcasync.job.Job(fail, 'quiet')
    bad_level.failure_log_level = logging.WARNING
    commit(conn)
    caplog.clear()
    bad_level()
    assert [r.levelname for r in caplog.records
            if 'failed with traceback' in r.getMessage()] == ['WARNING']


def test_an_interrupted_callback_is_retried_and_logged(root, conn, caplog):
    job = root['j'] = zcasync.job.Job(innerCall)
    callback = job.addCallback(exclaim)
    commit(conn)
    job._status = zcasync.interfaces.CALLBACKS  # the process died here...
    job._result = 'done'
    callback._status = ACTIVE                   # ...with the callback active
    commit(conn)
    caplog.set_level(logging.DEBUG, logger='zcasync.trace')
    job.resumeCallbacks()
    assert callback.result == 'done!' and job.status == COMPLETED
    assert 'retrying interrupted callback %r to %r' % (callback, job) in [
        r.getMessage() for r in caplog.records]


def test_a_result_that_cannot_be_stored_is_logged(root, conn, caplog):
    job = root['j'] = zcasync.job.Job(unstorable)
    commit(conn)
    with caplog.at_level(logging.WARNING, logger='zcasync.events'):
        result = job()
    assert zcasync.utils.isFailure(result) and job.status == COMPLETED
    assert any('could not store its result' in r.getMessage()
               for r in caplog.records)


# --- retry policies ---------------------------------------------------------

def test_retry_policies_are_importable_from_job():
    from zcasync.job import (RetryCommonFourTimes, RetryCommonForever,
                             NeverRetry, callback_retry_policy_factory)
    from zcasync import retry
    assert RetryCommonFourTimes is retry.RetryCommonFourTimes
    assert NeverRetry is retry.NeverRetry
    job = zcasync.job.Job(innerCall)
    zcasync.configure.base()
    assert isinstance(callback_retry_policy_factory(job), RetryCommonForever)


@zope.interface.implementer(zcasync.interfaces.IRetryPolicy)
class CountingPolicy:
    """A zc.async-style policy: counts in data_cache, stored by updateData,
    reschedules with a naive datetime."""

    def __init__(self, job):
        self.parent = self.job = job

    def jobError(self, failure, data_cache):
        data_cache['errors'] = data_cache.get('errors', 0) + 1
        if data_cache['errors'] < 3:
            return True
        return datetime.datetime(2030, 1, 1, 12, 0)  # naive: UTC

    def commitError(self, failure, data_cache):
        return False

    def interrupted(self):
        return False

    def updateData(self, data_cache):
        self.job.annotations['errors'] = data_cache.get('errors', 0)


ATTEMPTS = []


def flaky():
    ATTEMPTS.append(1)
    if len(ATTEMPTS) < 2:
        raise ValueError('not yet')
    return 'ok'


def alwaysFails():
    raise ValueError('never')


def test_policies_are_adapters_and_one_object_per_job(root, conn):
    gsm = zope.component.getGlobalSiteManager()
    gsm.registerAdapter(CountingPolicy, (zcasync.interfaces.IJob,),
                        zcasync.interfaces.IRetryPolicy)
    job = zcasync.job.Job(innerCall)
    policy = job.getRetryPolicy()
    assert isinstance(policy, CountingPolicy)
    assert job.getRetryPolicy() is policy
    callback = job.addCallback(exclaim)
    from zcasync.job import RetryCommonForever
    assert isinstance(callback.getRetryPolicy(), RetryCommonForever)
    gsm.registerAdapter(CountingPolicy, (zcasync.interfaces.IJob,),
                        zcasync.interfaces.IRetryPolicy, 'callback')
    assert isinstance(zcasync.job.Job(innerCall).addCallback(exclaim)
                      .getRetryPolicy(), CountingPolicy)
    # a name given as retry_policy_factory finds the named adapter
    gsm.registerAdapter(CountingPolicy, (zcasync.interfaces.IJob,),
                        zcasync.interfaces.IRetryPolicy, 'counting')
    named = zcasync.job.Job(innerCall)
    named.retry_policy_factory = 'counting'
    assert isinstance(named.getRetryPolicy(), CountingPolicy)


def test_counts_are_stored_by_updateData(root, conn):
    del ATTEMPTS[:]
    job = root['j'] = zcasync.job.Job(flaky)
    job.retry_policy_factory = CountingPolicy
    commit(conn)
    assert job() == 'ok'
    assert job.annotations['errors'] == 1  # stored with the result


def test_a_naive_reschedule_time_is_utc(conn, queue):
    agents = zcasync.testing.activeRegistration(
        queue, zcasync.instanceuuid.getUUID())
    agent = agents['main'] = zcasync.agent.Agent()
    job = queue.put(zcasync.job.Job(alwaysFails),
                    retry_policy_factory=CountingPolicy)
    commit(conn)
    assert agent.claimJob() is job
    commit(conn)
    job()
    assert job.status == PENDING and job not in agent
    assert job.begin_after == datetime.datetime(
        2030, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
    assert job.annotations['errors'] == 3


class RecordingAgent(zcasync.agent.Agent):
    """A custom agent: rescheduling must use its public remove()."""

    removed = 0

    def remove(self, job):
        self.removed += 1
        return super().remove(job)


def test_rescheduling_uses_the_agents_public_remove(conn, queue):
    agents = zcasync.testing.activeRegistration(
        queue, zcasync.instanceuuid.getUUID())
    agent = agents['custom'] = RecordingAgent()
    job = queue.put(zcasync.job.Job(alwaysFails),
                    retry_policy_factory=CountingPolicy)
    commit(conn)
    assert agent.claimJob() is job
    commit(conn)
    job()
    assert agent.removed == 1 and len(agent) == 0
    assert job.status == PENDING and list(queue) == [job]
