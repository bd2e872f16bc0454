"""Control of running coroutine jobs under a real dispatcher (issue 15,
the join of zcasync.control and zcasync.coroutines): a cancel cancels the
job's asyncio task (CancelledError at its next await,
``zcasync.local.cancelled()`` true inside) and completes the job with
zcasync's CancelledError, callbacks told once, slot freed; a coroutine
that swallows the cancellation is completed after the grace period, its
slot freed without a thread to abandon, its task cancelled again, its late
result discarded; time limits fail it with TimeLimitError, or run it again
under a retrying policy; snooze ends its run without harming the shared
loop.  SelectReactor in a thread, FileStorage; the test's own connection
plays another process."""
import asyncio
import datetime
import logging
import uuid

import pytest

import zcasync.local
from zcasync import control
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.job import Job
from zcasync.retry import RetryWithBackoff

from test_dispatcher_support import (
    WAIT, EVENTS, CALLS, Running, addAgent, commit, double, sync)

#: what the jobs and callbacks saw
SEEN = []


async def awaitStop(name):
    """Await (up to WAIT s) until cancelled; records what it saw."""
    SEEN.append(('before', zcasync.local.cancelled()))
    EVENTS[name + ' started'].set()
    try:
        await asyncio.sleep(WAIT)
    except asyncio.CancelledError:
        SEEN.append(('cancelled', zcasync.local.cancelled()))
        raise
    return 'never stopped'


async def swallowing(name):
    """Swallow two cancellations (the stop request's, then the one when
    its dispatcher completes the job without it), then hold on until the
    test releases it, and return a late result."""
    EVENTS[name + ' started'].set()
    cancels = 0
    while cancels < 2:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancels += 1
            SEEN.append(('swallowed', cancels, zcasync.local.cancelled()))
    await asyncio.to_thread(EVENTS[name].wait, WAIT)
    SEEN.append(('returned', zcasync.local.cancelled()))
    return 'late result'


async def slowFirstAwait(name):
    """The first call awaits past any time limit; later calls return."""
    CALLS[name] += 1
    if CALLS[name] == 1:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            SEEN.append(('cancelled', CALLS[name]))
            raise
        return 'first call'
    await asyncio.sleep(0)
    return 'call %d' % CALLS[name]


async def snoozeFirstAsync(seconds):
    await asyncio.sleep(0)
    job = zcasync.local.getJob()
    SEEN.append(('run', utils.now()))
    if not job.annotations.get(control.SNOOZES):
        zcasync.local.snooze(seconds)
    await asyncio.sleep(0)
    return 'woke up'


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


def agentName(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def waitForEvent(name):
    assert EVENTS[name].wait(WAIT), 'never happened: %s' % name


def callbacksSeen():
    return [s[1] for s in SEEN if s[0] == 'callback']


def pool(running, name):
    return running.dispatcher.queues[''][name]


def test_cancel_a_running_coroutine_job(db, conn, queue, capture):
    name = agentName('cancel')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(awaitStop, name))
        job.addCallback(Job(noted))
        commit(conn)
        waitForEvent(name + ' started')
        sync(conn)
        assert job.status == interfaces.ACTIVE
        # on the loop: its slot is held without a thread
        assert list(pool(running, name).detached.values())[0].coroutine
        behind = queue.put(Job(double, 21))  # waits for the only slot
        commit(conn)
        assert job.cancel(grace=WAIT) == control.STOPPING
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        assert not result.check(asyncio.CancelledError)
        assert 'cancelled while it ran' in result.getErrorMessage()
        # asyncio's CancelledError at its await; cancelled() told it
        assert SEEN[:2] == [('before', False), ('cancelled', True)]
        testing.wait(lambda: len(callbacksSeen()) == 1, WAIT, 'callback')
        assert callbacksSeen()[0].check(interfaces.CancelledError)
        # the slot is free: the job behind it runs
        assert testing.wait_for_result(behind, WAIT) == 42
        assert not [m for m in capture.messages()
                    if 'did not stop within' in m]
        assert len(callbacksSeen()) == 1
        # every run unregistered (the coroutine's from its commit thread)
        testing.wait(lambda: not running.dispatcher.runner.watch.running(),
                     WAIT, 'the runs unregistered')
        # the shared loop goes on running coroutine jobs
        assert running.dispatcher.runner.coroutines.thread.is_alive()


def test_cancel_a_coroutine_job_that_swallows_the_cancellation(
        db, conn, queue, capture):
    name = agentName('swallow')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(swallowing, name))
        job.addCallback(Job(noted))
        commit(conn)
        waitForEvent(name + ' started')
        sync(conn)
        job.cancel(grace=0.3)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.CancelledError)
        capture.find(logging.WARNING, 'did not stop within its grace period')
        # no thread to abandon: the slot is freed, the task cancelled again
        agent_pool = pool(running, name)
        testing.wait(lambda: ('swallowed', 2, True) in SEEN, WAIT,
                     'the second cancellation')
        assert ('swallowed', 1, True) in SEEN
        assert agent_pool.detached == {}
        assert agent_pool.activeJobIds() == []
        other = queue.put(Job(double, 4))
        commit(conn)
        assert testing.wait_for_result(other, WAIT) == 8
        # the run goes on, then returns late: its result is discarded
        assert ('returned', True) not in SEEN
        EVENTS[name].set()
        testing.wait(lambda: ('returned', True) in SEEN, WAIT, 'late return')
        capture.find(logging.WARNING, 'was handed to another run')
        testing.wait(lambda: not running.dispatcher.runner.watch.running(),
                     WAIT, 'the run unregistered')
        sync(conn)
        assert job.result.check(interfaces.CancelledError)
        assert len(callbacksSeen()) == 1
        assert callbacksSeen()[0].check(interfaces.CancelledError)
        assert agent_pool.detached == {}


def test_time_limit_on_a_coroutine_job(db, conn, queue, capture):
    name = agentName('limit')
    with Running(db, setup=quick) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(awaitStop, name),
                        timeout=datetime.timedelta(seconds=0.3))
        commit(conn)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(interfaces.TimeLimitError)
        assert result.check(interfaces.TimeoutError)
        assert 'time limit exceeded' in result.getErrorMessage()
        assert ('cancelled', True) in SEEN  # task cancellation
        assert not [m for m in capture.messages()
                    if 'did not stop within' in m]
        testing.wait(lambda: pool(running, name).detached == {}, WAIT,
                     'the slot freed')


def test_time_limit_on_a_coroutine_job_with_a_retry_policy(
        db, conn, queue, capture):
    name = agentName('retry')
    policy = RetryWithBackoff(retry_on=(interfaces.TimeLimitError,),
                              max_attempts=3, base=datetime.timedelta(0))
    with Running(db, setup=quick) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(slowFirstAwait, name),
                        timeout=datetime.timedelta(seconds=0.3),
                        retry_policy_factory=policy)
        commit(conn)
        # the first run is cancelled at its limit, the policy runs it again
        assert testing.wait_for_result(job, WAIT) == 'call 2'
        assert SEEN == [('cancelled', 1)]
        sync(conn)
        assert job.annotations['zcasync.RetryWithBackoff']['attempts'] == 1


def test_snooze_in_a_coroutine_job(db, conn, queue, capture):
    name = agentName('snooze')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(snoozeFirstAsync, 0.5))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 'woke up'
        sync(conn)
        assert job.annotations[control.SNOOZES] == 1
        assert not [k for k in job.annotations if k != control.SNOOZES]
        runs = [when for kind, when in SEEN if kind == 'run']
        assert len(runs) == 2
        assert runs[1] - runs[0] >= datetime.timedelta(seconds=0.5)
        # the Snooze never reached the shared loop: it runs on
        loop = running.dispatcher.runner.coroutines
        assert loop.thread.is_alive()
        assert not [m for m in capture.messages(logging.CRITICAL)]
        again = queue.put(Job(snoozeFirstAsync, 0))
        again.annotations[control.SNOOZES] = 1  # (it does not snooze)
        commit(conn)
        assert testing.wait_for_result(again, WAIT) == 'woke up'


def test_a_coroutine_job_raising_system_exit_fails_without_harm(
        db, conn, queue, capture):
    name = agentName('exit')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(exitingAsync))
        commit(conn)
        result = testing.wait_for_result(job, WAIT)
        assert result.check(SystemExit)
        testing.wait(lambda: pool(running, name).detached == {}, WAIT,
                     'the slot freed')
        assert running.dispatcher.runner.coroutines.thread.is_alive()
        after = queue.put(Job(snoozeFirstAsync, 0))
        after.annotations[control.SNOOZES] = 1
        commit(conn)
        assert testing.wait_for_result(after, WAIT) == 'woke up'


async def exitingAsync():
    await asyncio.sleep(0)
    raise SystemExit(3)
