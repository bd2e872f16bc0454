"""Coroutine jobs run by a real dispatcher (SelectReactor in a thread,
FileStorage; issue 15): awaited on the dispatcher's event loop without
holding worker threads, with results, failures, callbacks and
zcasync.local; a size-200 agent runs 200 of them at once on a few
threads; a cancel (job.cancel(), heard through the run's
zcasync.control.RunControl) cancels the task and fails the job, freeing
its slot (more in test_coroutine_control.py); a run on the loop is known to the
dispatcher's reconcile (never handed back while it runs)."""
import asyncio
import collections
import logging
import threading
import uuid

import persistent
import ZODB.POSException

import zcasync
from zcasync import coroutines
from zcasync import testing
from zcasync import interfaces
from zcasync.interfaces import ACTIVE, COMPLETED
from zcasync.job import Job
from zcasync.utils import isFailure, jobId

from test_dispatcher_support import (
    WAIT, EVENTS, CALLS, Running, addAgent, commit, sync, blockOn,
    workerThreads, double)

#: what the coroutines saw
SEEN = collections.defaultdict(list)
_lock = threading.Lock()
#: (name, loop) -> asyncio.Event: set when all of a batch are running
_GATES = {}
#: name -> number of coroutines of a batch running now / at most
RUNNING = collections.Counter()
MOST = collections.Counter()


async def add(a, b):
    await asyncio.sleep(0)
    return a + b


async def failing(message):
    await asyncio.sleep(0)
    raise RuntimeError(message)


def returnsCoroutine(value):
    return add(value, value)


async def whereAmI():
    await asyncio.sleep(0)
    local = zcasync.local
    local.setLiveAnnotation('progress', 'half')
    live = await local.getLiveAnnotationAsync('progress', timeout=WAIT,
                                              poll=0.05)
    return {'oid': local.getJob()._p_oid, 'agent': local.getAgentName(),
            'uuid': local.getDispatcher().UUID, 'live': live,
            'queue': local.getQueue().name}


async def waitsTheBlockingWay():
    return zcasync.local.getLiveAnnotation('answer', timeout=5)


async def together(name, count):
    """Count this coroutine as running, and wait (at most WAIT s) until
    `count` of the batch `name` run at the same time; returns its job's
    oid (each task sees its own job)."""
    loop = asyncio.get_running_loop()
    with _lock:
        gate = _GATES.setdefault((name, loop), asyncio.Event())
        RUNNING[name] += 1
        MOST[name] = max(MOST[name], RUNNING[name])
        if RUNNING[name] >= count:
            gate.set()
    try:
        await asyncio.wait_for(gate.wait(), WAIT)
    finally:
        with _lock:
            RUNNING[name] -= 1
    return zcasync.local.getJob()._p_oid


async def filling(name, size):
    """Count this coroutine as running; the first ones wait until `size`
    run at once, later ones pass (and stay a moment, asleep)."""
    loop = asyncio.get_running_loop()
    with _lock:
        gate = _GATES.setdefault((name, loop), asyncio.Event())
        RUNNING[name] += 1
        MOST[name] = max(MOST[name], RUNNING[name])
        if RUNNING[name] >= size:
            gate.set()
    try:
        await asyncio.wait_for(gate.wait(), WAIT)
        await asyncio.sleep(0.05)
    finally:
        with _lock:
            RUNNING[name] -= 1
    return 'done'


async def waitForStop(name):
    """The first call waits (up to WAIT s) to be stopped; later calls
    return at once."""
    SEEN['calls ' + name].append(1)
    if len(SEEN['calls ' + name]) > 1:
        return 'call %d' % len(SEEN['calls ' + name])
    EVENTS[name].set()
    try:
        await asyncio.sleep(WAIT)
    except asyncio.CancelledError:
        SEEN[name].append('cancelled')
        raise
    return 'never stopped'


async def conflictTwice(name):
    """Raises ConflictError in its first two calls (the default policy
    retries transaction errors, in the same run), then returns."""
    SEEN['calls ' + name].append(1)
    await asyncio.sleep(0)
    if len(SEEN['calls ' + name]) <= 2:
        raise ZODB.POSException.ConflictError()
    return 'call %d' % len(SEEN['calls ' + name])


class Tally(persistent.Persistent):

    total = 0

    async def bump(self, step):
        await asyncio.sleep(0)
        self.total += step
        return self.total


def remember(result):
    SEEN['callbacks'].append(result)
    return 'saw %r' % (result,)


def agentName(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def test_function_and_method_jobs_with_results_failures_callbacks(
        db, conn, queue):
    tally = conn.root()['tally'] = Tally()
    commit(conn)
    with Running(db) as running:
        addAgent(conn, running.dispatcher, agentName('co'), size=3)
        function = queue.put(Job(add, 20, 22))
        method = queue.put(Job(tally.bump, 7))
        broken = queue.put(Job(failing, 'it broke'))
        hidden = queue.put(Job(returnsCoroutine, 4))
        function.addCallback(Job(remember))
        commit(conn)
        assert testing.wait_for_result(function, WAIT) == 42
        assert testing.wait_for_result(method, WAIT) == 7
        assert testing.wait_for_result(hidden, WAIT) == 8
        failure = testing.wait_for_result(broken, WAIT)
        assert isFailure(failure) and failure.check(RuntimeError)
        assert 'it broke' in failure.getErrorMessage()
        sync(conn)
        assert tally.total == 7  # the method's change, committed after it
        [callback] = function.callbacks
        assert testing.wait_for_result(callback, WAIT) == 'saw 42'
        assert SEEN['callbacks'] == [42]


def test_retried_in_the_same_run_by_the_policy(db, conn, queue):
    name = agentName('retry')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=2)
        job = queue.put(Job(conflictTwice, name))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 'call 3'
        assert job.annotations['zcasync.RetryCommonFourTimes'] == {
            'transaction error': 2}


def test_local_inside_a_coroutine_job(db, conn, queue):
    name = agentName('local')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=2)
        job = queue.put(Job(whereAmI))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == {
            'oid': job._p_oid, 'agent': name, 'queue': '',
            'uuid': running.dispatcher.UUID, 'live': 'half'}


def test_blocking_live_annotation_wait_is_refused_in_a_coroutine(
        db, conn, queue):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, agentName('live'), size=1)
        job = queue.put(Job(waitsTheBlockingWay))
        commit(conn)
        failure = testing.wait_for_result(job, WAIT)
        assert failure.check(ValueError)
        message = failure.getErrorMessage()
        assert 'would block the event loop' in message
        assert 'await zcasync.local.getLiveAnnotationAsync' in message


def test_size_200_agent_runs_200_coroutines_at_once_on_few_threads(
        db, conn, queue):
    name = agentName('many')
    count = 200
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=count)
        jobs = [queue.put(Job(together, name, count)) for i in range(count)]
        commit(conn)
        for job in jobs:
            # each waited for all the others: they ran at the same time
            assert testing.wait_for_result(job, WAIT * 2) == job._p_oid
        assert MOST[name] == count
        # without a worker thread each: the agent started a few
        assert 1 <= len(workerThreads('', name)) <= 4
        loop = running.dispatcher.runner.coroutines
        assert len(loop.threads()) <= 1 + coroutines.COMMIT_THREADS


def test_coroutine_runs_fill_the_agent_slots_and_no_more(db, conn, queue):
    """Jobs claimed ahead start as coroutine runs end: never more than
    the agent's size at once, though none holds a thread."""
    name = agentName('slots')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=5)
        jobs = [queue.put(Job(filling, name, 5)) for i in range(30)]
        commit(conn)
        for job in jobs:
            assert testing.wait_for_result(job, WAIT) == 'done'
        assert MOST[name] == 5


def test_sync_jobs_start_threads_on_demand_up_to_the_size(db, conn, queue):
    name = agentName('sync')
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=3)
        testing.wait(lambda: len(workerThreads('', name)) == 1, WAIT,
                     'no thread ready')
        key = 'block-' + name
        jobs = [queue.put(Job(blockOn, key)) for i in range(5)]
        commit(conn)
        testing.wait(lambda: CALLS[key] == 3, WAIT, 'three never ran at once')
        assert len(workerThreads('', name)) == 3  # the size, not more
        EVENTS[key].set()
        for job in jobs:
            assert testing.wait_for_result(job, WAIT) == 'released'
        assert len(workerThreads('', name)) == 3


def test_a_requested_stop_cancels_the_task_and_frees_the_slot(
        db, conn, queue, capture):
    name = agentName('stop')
    EVENTS[name].clear()
    with Running(db) as running:
        dispatcher = running.dispatcher
        addAgent(conn, dispatcher, name, size=1)
        job = queue.put(Job(waitForStop, name))
        commit(conn)
        assert EVENTS[name].wait(WAIT), 'the coroutine never started'
        sync(conn)
        token = job.run_token
        # on the loop, not in a thread, yet its slot and run are known
        assert dispatcher.getActiveJobIds() == [jobId(job)]
        assert token in dispatcher.runner.tokens()
        # heartbeats reconcile meanwhile: the run is not handed back
        heartbeats = dispatcher._last_heartbeat
        testing.wait(lambda: dispatcher._last_heartbeat != heartbeats, WAIT,
                     'no heartbeat')
        behind = queue.put(Job(double, 21))  # waits for the only slot
        commit(conn)
        assert job.cancel(grace=WAIT) == 'stopping'
        result = testing.wait_for_result(job, WAIT)
        assert SEEN[name] == ['cancelled']
        assert result.check(interfaces.CancelledError)
        assert 'cancelled while it ran' in result.getErrorMessage()
        assert testing.wait_for_result(behind, WAIT) == 42
        assert not [m for m in capture.messages(logging.WARNING)
                    if 'handing it back' in m]
        assert job.status == COMPLETED


def test_dispatcher_stops_cleanly_after_coroutine_runs(db, conn, queue):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, agentName('clean'), size=2)
        job = queue.put(Job(add, 1, 1))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 2
        loop = running.dispatcher.runner.coroutines
        assert loop.thread is not None and loop.thread.is_alive()
    # Running.stop checked the pool size and that the worker threads
    # ended; the loop's thread ends too
    loop.thread.join(WAIT)
    assert not loop.thread.is_alive()


def test_deactivation_abandons_a_coroutine_run_to_recovery(db, conn, queue):
    name = agentName('abandon')
    EVENTS[name].clear()
    with Running(db) as running:
        running.dispatcher.join_timeout = 0.1
        addAgent(conn, running.dispatcher, name, size=1)
        job = queue.put(Job(waitForStop, name))
        commit(conn)
        assert EVENTS[name].wait(WAIT), 'the coroutine never started'
        loop = running.dispatcher.runner.coroutines
    # Running.stop deactivated the dispatcher (handing the job to its
    # retry policy) and waited for the loop's threads: the task was
    # cancelled, and its run ended without committing
    assert SEEN[name] == ['cancelled']
    assert not loop.thread.is_alive()
    sync(conn)
    # handed to recovery, as a thread's run: its cancellation did not
    # commit a failure
    assert job.status == ACTIVE and job.result is None
    [recovery] = list(queue)
    assert recovery.callable == job.handleInterrupt
    # the recovery puts it back and it runs again (here, immediate mode)
    testing.runQueuedJobs(conn)
    assert job.result == 'call 2'
    assert job.annotations['zcasync.RetryCommonFourTimes'] == {
        'interruption': 1}
