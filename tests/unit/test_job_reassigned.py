"""A run owns its job through a token, not through its status (issue 9,
case 1, false death).  A sibling that found the run's process dead hands
the job to recovery, the job runs again elsewhere and is ACTIVE again --
for the sibling.  The old run, resuming, must neither commit nor run the
job a second time, whatever the job's status says; nor may its late
Deferred or inner-job callback overwrite the job (case 3)."""
import uuid

import pytest
import transaction
import twisted.internet.defer
import ZODB.POSException

from zcasync import testing
from zcasync import interfaces
from zcasync.agent import Agent
from zcasync.interfaces import ACTIVE, COMPLETED
from zcasync.job import Job

try:
    from . import test_retry as retry_test
except ImportError:
    import test_retry as retry_test

CALLS = []
DEFERREDS = []


def otherConnection(db):
    tm = transaction.TransactionManager()
    return tm, db.open(transaction_manager=tm)


def takeOverAndRestart(db, oid):
    """Play the sibling: deactivate the run's dispatcher (the job is handed
    to recovery), run the recovery (the job goes back to its queue), and
    claim and start the job again for another dispatcher."""
    tm, other = otherConnection(db)
    try:
        job = other.get(oid)
        agents = job.agent.parent
        agents.deactivate()
        tm.commit()
        queue = job.queue
        recovery = queue.claim()
        assert recovery.callable.__name__ == 'handleInterrupt'
        recovery()
        assert other.get(oid).status == interfaces.PENDING
        sibling = testing.activeRegistration(queue, uuid.uuid4())
        agent = sibling['main'] = Agent()
        assert agent.claimJob() is job
        token = job._activate()
        tm.commit()
        return token
    finally:
        tm.abort()
        other.close()


def takenOverThenConflict(oid):
    """Run once; mid-run the job is taken over and restarted elsewhere;
    then this run fails transiently (the retry policy says: again)."""
    from zcasync.threadlocal import getJob
    CALLS.append(takeOverAndRestart(getJob()._p_jar.db(), oid))
    raise ZODB.POSException.ConflictError('simulated')


def takenOverThenReturn(oid):
    """Run once; mid-run the job is taken over and restarted elsewhere;
    then return normally: the result commit conflicts on the job."""
    from zcasync.threadlocal import getJob
    CALLS.append(takeOverAndRestart(getJob()._p_jar.db(), oid))
    getJob().annotations['written by the old run'] = True
    return 'old run result'


@pytest.fixture
def claimed(queue, conn):
    def claim(func):
        agents = testing.activeRegistration(queue, uuid.uuid4())
        agent = agents['main'] = Agent()
        job = queue.put(Job(func))
        conn.transaction_manager.commit()
        job.args.append(job._p_oid)
        assert agent.claimJob() is job
        token = job._activate()
        conn.transaction_manager.commit()
        CALLS.clear()
        return job, token
    return claim


@pytest.mark.parametrize('func', [takenOverThenConflict, takenOverThenReturn])
def test_a_run_that_lost_its_job_to_a_restarted_run_stops(
        claimed, conn, func):
    job, token = claimed(func)
    with pytest.raises(interfaces.ReassignedError) as info:
        job._runClaimed(token)
    assert 'handed to another run' in str(info.value)
    assert len(CALLS) == 1  # not run a second time here
    conn.transaction_manager.begin()
    # the sibling's run owns the job, untouched by the old run
    assert job.status == ACTIVE and job.run_token == CALLS[0]
    assert job.result is None
    assert 'written by the old run' not in job.annotations


def test_a_claimed_run_checks_its_token_before_starting(claimed, conn, db):
    job, token = claimed(takenOverThenReturn)
    sibling_token = takeOverAndRestart(db, job._p_oid)
    conn.transaction_manager.begin()
    assert job.status == ACTIVE  # ACTIVE again, but not for this run
    with pytest.raises(interfaces.ReassignedError):
        job._runClaimed(token)
    assert CALLS == []
    assert job.run_token == sibling_token


def test_handleInterrupt_with_an_old_token_leaves_a_new_run_alone(
        claimed, conn, db):
    job, token = claimed(takenOverThenReturn)
    agents = job.agent.parent
    agents.deactivate()  # queues handleInterrupt(<recovery token>)
    conn.transaction_manager.commit()
    recovery = job.queue.claim()
    conn.transaction_manager.commit()
    # meanwhile the job was recovered by another path (an application
    # calling handleInterrupt() itself) and runs again for a sibling
    tm, other = otherConnection(db)
    try:
        again = other.get(job._p_oid)
        again.handleInterrupt()
        sibling = testing.activeRegistration(again.queue, uuid.uuid4())
        agent = sibling['main'] = Agent()
        assert agent.claimJob() is again
        sibling_token = again._activate()
        tm.commit()
    finally:
        tm.abort()
        other.close()
    conn.transaction_manager.begin()
    recovery()  # the stale recovery must not interrupt the new run
    conn.transaction_manager.begin()
    assert job.status == ACTIVE and job.run_token == sibling_token


# --- late Deferreds and inner jobs (case 3) ---------------------------------

def returnDeferred():
    deferred = twisted.internet.defer.Deferred()
    DEFERREDS.append(deferred)
    return deferred


def test_a_late_deferred_does_not_overwrite_a_recovered_job(
        claimed, conn, db):
    job, token = claimed(returnDeferred)
    job.args[:] = []
    conn.transaction_manager.commit()
    DEFERREDS.clear()
    job._runClaimed(token)
    assert job.status == ACTIVE and len(DEFERREDS) == 1
    # the run's process is found dead; the job is recovered and completes
    # elsewhere
    tm, other = otherConnection(db)
    try:
        again = other.get(job._p_oid)
        again.agent.parent.deactivate()
        tm.commit()
        recovery = again.queue.claim()
        recovery()
        tm.begin()
        assert again.status == interfaces.PENDING
        again.callable = len
        again.args.append('four')
        sibling = testing.activeRegistration(again.queue, uuid.uuid4())
        agent = sibling['main'] = Agent()
        assert agent.claimJob() is again
        sibling_token = again._activate()
        tm.commit()
        assert again._runClaimed(sibling_token) == 4
    finally:
        tm.abort()
        other.close()
    DEFERREDS.pop().callback('late result')  # the old run's Deferred
    conn.transaction_manager.begin()
    assert job.status == COMPLETED and job.result == 4
    completed = job.agent.completed
    assert [j for j in completed if j is job] == [job]  # recorded once


def inner():
    return 'inner result'


def test_an_inner_job_completing_for_an_old_run_is_ignored(queue, conn):
    agent = testing.activeRegistration(queue, uuid.uuid4())['main'] = Agent()
    outer = queue.put(Job(returnJob))
    conn.transaction_manager.commit()
    assert agent.claimJob() is outer
    outer()
    assert outer.status == ACTIVE and outer._inner is not None
    inner_job = outer._inner
    callback = inner_job.callbacks[0]
    old_token = callback.kwargs['token']
    # the outer job's run is replaced (say it was recovered and started
    # again, waiting for another inner job now)
    outer._run_token = 'another run'
    conn.transaction_manager.commit()
    outer._innerCompleted('stale', token=old_token)
    assert outer.status == ACTIVE and outer.result is inner_job
    outer._run_token = callback.kwargs['token']
    queue.put(inner_job)  # the outer job does not queue it (zc.async)
    conn.transaction_manager.commit()
    queue.claim()()  # the inner job runs and completes its outer job
    conn.transaction_manager.begin()
    assert outer.status == COMPLETED and outer.result == 'inner result'


def returnJob():
    return Job(inner)


# --- a commit that reports an error, yet lands ------------------------------

class LostAfterCommit:
    """A resource manager that sorts after ZODB's and fails in
    tpc_finish: the job's commit lands, then the transaction reports an
    error -- as when the database connection is lost during the second
    phase of the commit (PostgreSQL terminated, ZEO server gone)."""

    def __init__(self, tm):
        self.transaction_manager = tm

    def sortKey(self):
        return '~~~ after everything'

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort

    def tpc_finish(self, txn):
        raise retry_test.OperationalError('server closed the connection')


EFFECTS = []


def landsThenFails():
    """Each call is an execution; the first one's commit lands and then
    raises a lost-connection error, which policies retry."""
    from zcasync.threadlocal import getJob
    job = getJob()
    EFFECTS.append(len(EFFECTS) + 1)
    job.annotations['effects'] = job.annotations.get('effects', 0) + 1
    if len(EFFECTS) == 1:
        job._p_jar.transaction_manager.get().join(
            LostAfterCommit(job._p_jar.transaction_manager))
    return 'call %d' % len(EFFECTS)


def test_a_commit_that_failed_yet_landed_is_not_run_again(claimed, conn):
    job, token = claimed(landsThenFails)
    job.args[:] = []
    conn.transaction_manager.commit()
    EFFECTS.clear()
    assert job._runClaimed(token) == 'call 1'
    assert EFFECTS == [1]  # not run a second time
    conn.transaction_manager.begin()
    assert job.status == COMPLETED and job.annotations['effects'] == 1
