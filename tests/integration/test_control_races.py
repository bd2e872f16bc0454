"""Races of the control of running jobs (issue 15) with the dispatcher's
own work: a cancel against the start of a job claimed ahead, a forced
completion against the run's own end, stop requests and slots.
SelectReactor in a thread, FileStorage; the test's connection plays
another process."""
import collections
import datetime
import time

import zcasync.local

from zcasync import control
from zcasync import interfaces
from zcasync import retry
from zcasync import testing
from zcasync import utils
from zcasync.interfaces import ACTIVE, ASSIGNED
from zcasync.job import Job

from test_dispatcher_support import (
    WAIT, EVENTS, CALLS, Running, addAgent, blockOn, commit, sync)


def cooperativeFirstCall(name):
    """The first call works until asked to stop; later calls return at
    once."""
    CALLS[name] += 1
    if CALLS[name] == 1:
        deadline = time.monotonic() + WAIT
        while not zcasync.local.cancelled() and time.monotonic() < deadline:
            EVENTS[name].wait(0.02)
        return 'first call'
    return 'call %d' % CALLS[name]


class RetryTimeLimitsNow(retry.BasePolicy):
    """Retry a run past its time limit at once (True), twice."""

    def jobError(self, failure, data_cache):
        if failure.check(interfaces.TimeLimitError):
            return self._increment('time limit', data_cache) <= 2
        return False


def statuses(agent, conn):
    sync(conn)
    return collections.Counter(job.status for job in agent)


def test_cancel_of_a_job_claimed_ahead_does_not_rerun_the_running_job(
        db, conn, queue):
    """The running job's final commit starts the next job claimed ahead
    (``Runner._startNext``) in a transaction that began before the cancel
    wrote that job: it must not conflict, which would re-run the running
    job's code (its commit error retried)."""
    running = Running(db, poll_interval=60,
                      setup=lambda d: setattr(d, 'prefetch', 2)).start()
    try:
        agent = addAgent(conn, running.dispatcher, 'main', size=1)
        first = queue.put(Job(blockOn, 'first'))
        ahead = [queue.put(Job(blockOn, 'ahead%d' % n)) for n in range(2)]
        commit(conn)
        testing.wait(lambda: statuses(agent, conn) ==
                     {ACTIVE: 1, ASSIGNED: 2}, WAIT,
                     lambda: 'agent holds %s' % statuses(agent, conn))
        testing.wait(lambda: CALLS['first'] == 1, WAIT, 'the first call')
        sync(conn)
        target = [j for j in ahead if j.status == ASSIGNED][0]
        assert target.cancel() == control.CANCELLED
        for job in ahead:
            EVENTS[job.args[0]].set()
        EVENTS['first'].set()
        assert testing.wait_for_result(first, WAIT) == 'released'
        assert CALLS['first'] == 1, 'the running job ran again'
        sync(conn)
        assert target.result.check(interfaces.CancelledError)
        assert CALLS[target.args[0]] == 0
        other = [j for j in ahead if j is not target][0]
        assert testing.wait_for_result(other, WAIT) == 'released'
        # the cancelled job, skipped by the thread that found it gone, is
        # not counted as being started (reconciliation would take it for
        # ours for ever)
        pool = running.dispatcher.runner.pools[('', 'main')]
        testing.wait(lambda: not pool.buffered(), WAIT, 'buffer drained')
        testing.wait(lambda: utils.jobId(target) not in pool.known(), WAIT,
                     lambda: 'still known: %s' % (pool.known(),))
    finally:
        for name in list(EVENTS):
            EVENTS[name].set()
        running.stop()


def test_a_time_limit_retried_now_gets_a_run_of_its_own(db, conn, queue):
    """A policy that retries a run past its time limit at once (True)
    must not retry it inside the same run, whose control is stopped and
    whose deadline has passed: every attempt would fail at once."""
    setup = lambda d: setattr(d, 'time_limit_grace', WAIT)  # noqa: E731
    with Running(db, setup=setup) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(cooperativeFirstCall, 'n'),
                        timeout=datetime.timedelta(seconds=0.3),
                        retry_policy_factory=RetryTimeLimitsNow)
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 'call 2'
        sync(conn)
        assert job.annotations['zcasync.RetryTimeLimitsNow'] == {
            'time limit': 1}


#: name -> the Deferred a job returned
DEFERREDS = {}


def returnsDeferred(name):
    import twisted.internet.defer
    DEFERREDS[name] = twisted.internet.defer.Deferred()
    return DEFERREDS[name]


def test_cancel_of_a_job_waiting_for_its_deferred_completes_it(
        db, conn, queue, capture):
    """A job whose run returned an unfired Deferred stays ACTIVE, held by
    its agent: cancel() must still complete it after the grace period,
    and the Deferred's late result is discarded."""
    with Running(db) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(returnsDeferred, 'd'))
        commit(conn)
        runner = running.dispatcher.runner
        testing.wait(lambda: runner._waiting, WAIT, 'the run returned')
        sync(conn)
        assert job.status == ACTIVE
        assert job.cancel(grace=0.1) == control.STOPPING
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        DEFERREDS.pop('d').callback('late')
        sync(conn)
        assert job.result.check(interfaces.CancelledError)
        # the agent's slot is free again
        other = queue.put(Job(blockOn, 'after'))
        commit(conn)
        EVENTS['after'].set()
        assert testing.wait_for_result(other, WAIT) == 'released'


def ignoresItsTimeLimit(name):
    """The first call hears its time limit, then ignores it (blocks until
    released); later calls return at once."""
    CALLS[name] += 1
    if CALLS[name] == 1:
        deadline = time.monotonic() + WAIT
        while not zcasync.local.cancelled() and time.monotonic() < deadline:
            EVENTS[name].wait(0.02)
        EVENTS[name + ' asked'].set()
        EVENTS[name + ' release'].wait(WAIT)
        return 'first call'
    return 'call %d' % CALLS[name]


def test_a_cancel_during_the_grace_of_a_time_limit_wins(db, conn, queue):
    """A run past its time limit (retried by its policy) is cancelled
    during its grace period: the cancel must not be dropped because the
    run was already asked to stop -- the job ends cancelled, not run
    again."""
    policy = retry.RetryWithBackoff(retry_on=(interfaces.TimeLimitError,),
                                    max_attempts=3,
                                    base=datetime.timedelta(0))
    setup = lambda d: setattr(d, 'time_limit_grace', 600)  # noqa: E731
    with Running(db, setup=setup) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(ignoresItsTimeLimit, 'g'),
                        timeout=datetime.timedelta(seconds=0.2),
                        retry_policy_factory=policy)
        commit(conn)
        assert EVENTS['g asked'].wait(WAIT)
        sync(conn)
        assert job.cancel(grace=0.1) == control.STOPPING
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError), result
        EVENTS['g release'].set()
        assert CALLS['g'] == 1


def test_a_job_waiting_for_its_deferred_stays_ours_with_two_agents(
        db, conn, queue):
    """The reconciliation of one agent must not forget the run of another
    agent that waits for its Deferred (it then handed that job back to
    recovery, and a waiting job could run twice)."""
    with Running(db) as running:
        addAgent(conn, running.dispatcher, 'a', size=1)
        addAgent(conn, running.dispatcher, 'b', size=1)
        job = queue.put(Job(returnsDeferred, 'two'))
        commit(conn)
        runner = running.dispatcher.runner
        testing.wait(lambda: runner._waiting, WAIT, 'the run returned')
        sync(conn)
        token = job.run_token
        marker = utils.now()

        def heartbeatsSince():
            return len([p for p in running.dispatcher.polls
                        if p.utc_timestamp > marker])
        testing.wait(lambda: heartbeatsSince() >= 4, WAIT, 'more polls')
        sync(conn)
        assert job.status == ACTIVE and job.run_token == token
        assert token in runner._waiting
        DEFERREDS.pop('two').callback('fired')
        assert testing.wait_for_result(job, WAIT) == 'fired'


def ignoresTheCancel(name):
    CALLS[name] += 1
    EVENTS[name + ' started'].set()
    EVENTS[name].wait(3 * WAIT)  # longer than the test waits
    return 'late'


def test_a_forced_completion_that_fails_is_tried_again(
        db, conn, queue, monkeypatch):
    """The grace period ended, and the commit that takes the job from its
    stuck run failed: the dispatcher must try again later, not leave the
    job ACTIVE with a run that never returns."""
    from zcasync.runwatch import RunWatch
    takeOver = RunWatch._takeOver
    failures = []

    def failingOnce(self, job, tm, entry):
        if not failures:
            failures.append(entry)
            raise RuntimeError('the commit kept conflicting (injected)')
        return takeOver(self, job, tm, entry)
    monkeypatch.setattr(RunWatch, '_takeOver', failingOnce)
    with Running(db) as running:
        running.dispatcher.force_retry_delay = 0.05
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(ignoresTheCancel, 'stuck'))
        commit(conn)
        assert EVENTS['stuck started'].wait(WAIT)
        sync(conn)
        assert job.cancel(grace=0.05) == control.STOPPING
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        assert failures
        EVENTS['stuck'].set()
