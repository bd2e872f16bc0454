"""Control of running jobs under a real dispatcher (issue 15): cancel a
cooperative job and one that ignores the request (its thread replaced, its
slot freed, its late result discarded, its callbacks told once), time
limits with and without a retry policy, snooze.  SelectReactor in a
thread, FileStorage; the test's own connection plays another process."""
import datetime
import logging
import threading
import time

import pytest

import zcasync.local
from zcasync import control
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.job import Job
from zcasync.retry import RetryWithBackoff

from test_dispatcher_support import (
    WAIT, EVENTS, CALLS, Running, addAgent, blockOn, commit, sync,
    workerThreads)

#: what the jobs and callbacks saw
SEEN = []


def cooperative(name):
    """Work until asked to stop, the way a long job should."""
    EVENTS[name + ' started'].set()
    deadline = time.monotonic() + WAIT
    while not zcasync.local.cancelled() and time.monotonic() < deadline:
        EVENTS[name].wait(0.02)  # a slice of work
    SEEN.append(('stopped', zcasync.local.cancelled(),
                 threading.current_thread()))
    return 'stopped cleanly'


def ignoring(name):
    """Ignore the request to stop: block until released."""
    SEEN.append(('running in', threading.current_thread()))
    EVENTS[name + ' started'].set()
    EVENTS[name].wait(WAIT)
    SEEN.append(('returned', zcasync.local.cancelled()))
    return 'late result'


def slowFirstCall(name):
    """The first call outlasts any time limit (ignoring the request); later
    calls return at once."""
    CALLS[name] += 1
    if CALLS[name] == 1:
        EVENTS[name].wait(WAIT)
        return 'first call'
    return 'call %d' % CALLS[name]


def snoozeFirst(seconds):
    job = zcasync.local.getJob()
    SEEN.append(('run', utils.now()))
    if not job.annotations.get(control.SNOOZES):
        zcasync.local.snooze(seconds)
    return 'woke up'


def waitsOnStop(name):
    """Wait for the stop request through the run's control (as a coroutine
    runner would, to cancel its task)."""
    control_ = zcasync.local.getRunControl()
    stopped = threading.Event()
    heard = []
    control_.onStop(lambda error: (heard.append(
        (error, threading.current_thread())), stopped.set()))
    EVENTS[name + ' started'].set()
    stopped.wait(WAIT)
    SEEN.append(('heard', heard, threading.current_thread()))
    return 'stopped'


def noted(result):
    SEEN.append(('callback', result))
    return 'noted'


@pytest.fixture(autouse=True)
def cleanSeen():
    SEEN.clear()
    yield
    SEEN.clear()


def quick(dispatcher):
    dispatcher.time_limit_grace = 0.2


def waitForEvent(name):
    assert EVENTS[name].wait(WAIT), 'never happened: %s' % name


def callbacksSeen():
    return [r for kind, r in (s for s in SEEN if s[0] == 'callback')]


def test_cancel_a_cooperative_running_job(db, conn, queue, capture):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, size=2)
        job = queue.put(Job(cooperative, 'c'))
        job.addCallback(Job(noted))
        commit(conn)
        waitForEvent('c started')
        threads = set(workerThreads('', 'main'))
        sync(conn)
        assert job.status == interfaces.ACTIVE
        assert job.cancel(grace=WAIT) == control.STOPPING
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        assert 'cancelled while it ran' in result.getErrorMessage()
        # the job heard it and returned on its own: same threads
        stopped = [s for s in SEEN if s[0] == 'stopped']
        assert len(stopped) == 1 and stopped[0][1] is True
        assert stopped[0][2] in threads
        testing.wait(lambda: len(callbacksSeen()) == 1, WAIT, 'callback')
        assert callbacksSeen()[0].check(interfaces.CancelledError)
        assert set(workerThreads('', 'main')) == threads
        assert not [m for m in capture.messages()
                    if 'did not stop within' in m]


def test_cancel_a_running_job_that_ignores_the_request(
        db, conn, queue, capture):
    with Running(db) as running:
        agent = addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(ignoring, 'i'))
        job.addCallback(Job(noted))
        commit(conn)
        waitForEvent('i started')
        stuck = SEEN[0][1]
        sync(conn)
        job.cancel(grace=0.3)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        capture.find(logging.WARNING, 'did not stop within its grace period')
        # the thread is replaced: the agent's size is honoured, and its
        # slot is free: another job runs while the first still blocks
        pool = running.dispatcher.queues['']['main']
        testing.wait(lambda: len(pool.threads()) == 1 and
                     stuck not in pool.threads(), WAIT, 'a new worker thread')
        assert stuck.is_alive()
        assert stuck in workerThreads('', 'main')
        assert pool.activeJobIds() == []
        other = queue.put(Job(blockOn, 'other'))
        commit(conn)
        EVENTS['other'].set()
        assert testing.wait_for_result(other, WAIT) == 'released'

        def settled():  # (the next poll does a completion's bookkeeping)
            sync(conn)
            return len(conn.get(agent._p_oid)) == 0
        testing.wait(settled, WAIT, 'the agent holds no job')
        # the stuck run returns late: its result is discarded
        EVENTS['i'].set()
        stuck.join(WAIT)
        assert not stuck.is_alive()
        capture.find(logging.WARNING, 'was handed to another run')
        sync(conn)
        assert job.result.check(interfaces.CancelledError)
        assert ('returned', True) in SEEN
        assert len(callbacksSeen()) == 1
        assert callbacksSeen()[0].check(interfaces.CancelledError)
        assert workerThreads('', 'main') == pool.threads()


def test_time_limit_fails_the_job(db, conn, queue, capture):
    with Running(db, setup=quick) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(cooperative, 't'),
                        timeout=datetime.timedelta(seconds=0.3))
        commit(conn)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.TimeLimitError)
        assert result.check(interfaces.TimeoutError)
        assert 'time limit exceeded' in result.getErrorMessage()
        assert [s[1] for s in SEEN if s[0] == 'stopped'] == [True]


def test_time_limit_with_a_retry_policy_that_retries(db, conn, queue,
                                                      capture):
    policy = RetryWithBackoff(retry_on=(interfaces.TimeLimitError,),
                              max_attempts=3, base=datetime.timedelta(0))
    with Running(db, setup=quick) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(slowFirstCall, 'r'),
                        timeout=datetime.timedelta(seconds=0.3),
                        retry_policy_factory=policy)
        commit(conn)
        # the first run ignores its limit: forced, then run again
        assert testing.wait_for_result(job, WAIT) == 'call 2'
        sync(conn)
        assert job.annotations['zcasync.RetryWithBackoff']['attempts'] == 1
        EVENTS['r'].set()


def test_snooze_runs_again_after_the_delay(db, conn, queue):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(snoozeFirst, 0.5))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 'woke up'
        sync(conn)
        assert job.annotations[control.SNOOZES] == 1
        # neither a retry nor an interruption was counted
        assert not [k for k in job.annotations
                    if k not in (control.SNOOZES,)]
        runs = [when for kind, when in SEEN if kind == 'run']
        assert len(runs) == 2
        assert runs[1] - runs[0] >= datetime.timedelta(seconds=0.5)


def test_the_run_control_calls_back_when_the_time_limit_passes(
        db, conn, queue, capture):
    with Running(db, setup=quick) as running:
        addAgent(conn, running.dispatcher, size=1)
        job = queue.put(Job(waitsOnStop, 'w'),
                        timeout=datetime.timedelta(seconds=0.3))
        commit(conn)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.TimeLimitError)
        [(kind, heard, worker)] = SEEN
        [(error, caller)] = heard
        assert isinstance(error, interfaces.TimeLimitError)
        assert caller is not worker  # called by whoever asked: the reactor
        assert not [m for m in capture.messages()
                    if 'did not stop within' in m]
