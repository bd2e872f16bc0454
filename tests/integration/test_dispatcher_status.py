"""getActiveJobIds, getStatistics, getStatusInfo and deactivate(), with
real worker threads.  Statistics and status use the test reactor and a
FixedClock, so that every time the dispatcher records is set by the
test."""
import datetime
import logging
import threading
import uuid

import pytest

from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import retry
from zcasync import testing
from zcasync import utils
from zcasync.job import Job
from zcasync.queue import Queue

from test_dispatcher_support import (
    WAIT, CALLS, EVENTS, Capture, Running, addAgent, commit,
    resetJobState, sync, waitForRecord, waitForWorkers, workerThreads,
    blockFirstCall, blockOn, double, fail)

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)




class Driven:
    """A dispatcher on the test reactor, driven from the test's thread."""

    def __init__(self, db, poll_interval=5, uuid_=None):
        self.db = db
        self.original = db.getPoolSize()
        self.reactor = testing.Reactor()
        self.dispatcher = dispatchermodule.Dispatcher(
            db, self.reactor, poll_interval=poll_interval,
            uuid=uuid_ or uuid.uuid4())

    def start(self):
        self.threads_before = set(threading.enumerate())
        self.dispatcher.activate()
        self.reactor.start()
        return self

    def poll(self):
        """Run the next heartbeat poll (and anything due before it)."""
        count = len(self.dispatcher.polls)
        self.reactor.advance(self.dispatcher.poll_interval)
        assert len(self.dispatcher.polls) > count
        return self.dispatcher.polls.first()

    def until(self, condition, message):
        """Poll until condition() holds (jobs run in real threads)."""
        def check():
            self.reactor.advance(self.dispatcher.poll_interval)
            return condition()
        return testing.wait(check, WAIT, message)

    def stop(self):
        resetJobState()
        if self.reactor.running:
            self.reactor.stop()
        assert not self.dispatcher.activated
        if hasattr(self, 'threads_before'):
            waitForWorkers(self.threads_before)


def completed(job):
    sync(job._p_jar)
    return job.status == interfaces.COMPLETED


def idOf(job):
    return utils.jobId(job)


# --- getActiveJobIds ----------------------------------------------------

def test_getActiveJobIds(db, conn, queue):
    queues = conn.root()[interfaces.KEY]
    other = queues['other'] = Queue()
    commit(conn)
    with Running(db) as running:
        dispatcher = running.dispatcher
        addAgent(conn, dispatcher, 'a', size=2)
        addAgent(conn, dispatcher, 'b', size=2, queue_name='other')
        first = queue.put(Job(blockOn, 'first'))
        second = other.put(Job(blockOn, 'second'))
        commit(conn)
        testing.wait_for_start(first, WAIT)
        testing.wait_for_start(second, WAIT)
        # ACTIVE is committed with the claim, a moment before a worker
        # thread takes the run
        testing.wait(lambda: len(dispatcher.getActiveJobIds()) == 2, WAIT,
                     'the worker threads never took both runs')
        assert sorted(dispatcher.getActiveJobIds()) == sorted(
            [idOf(first), idOf(second)])
        assert dispatcher.getActiveJobIds(queue='') == [idOf(first)]
        assert dispatcher.getActiveJobIds(queue='other') == [idOf(second)]
        assert dispatcher.getActiveJobIds(agent='a') == [idOf(first)]
        assert dispatcher.getActiveJobIds(agent='b') == [idOf(second)]
        assert dispatcher.getActiveJobIds(queue='', agent='b') == []
        assert dispatcher.getActiveJobIds(queue='nowhere') == []
        # the polls report them too
        poll = testing.wait(
            lambda: dispatcher.polls.first()
            if dispatcher.polls.first()['']['a']['active jobs'] else None,
            WAIT, 'no poll listed the active job')
        assert poll['']['a']['active jobs'] == [idOf(first)]
        EVENTS['first'].set()
        assert testing.wait_for_result(first, WAIT) == 'released'
        waitForRecord(dispatcher, first)
        testing.wait(lambda: dispatcher.getActiveJobIds() == [idOf(second)],
                     WAIT, 'the finished job is still listed as active')
        EVENTS['second'].set()
        testing.wait_for_result(second, WAIT)
        testing.wait(lambda: dispatcher.getActiveJobIds() == [], WAIT,
                     'jobs still listed as active')


# --- getStatistics ------------------------------------------------------

def test_getStatistics(db, conn, queue, clock):
    queues = conn.root()[interfaces.KEY]
    other = queues['other'] = Queue()
    commit(conn)
    driven = Driven(db).start()
    dispatcher = driven.dispatcher
    try:
        first_poll = dispatcher.polls.first()
        assert first_poll.utc_timestamp == T0
        addAgent(conn, dispatcher, 'main', size=4)
        addAgent(conn, dispatcher, 'side', size=1, queue_name='other')

        def start(name, at):
            # the worker thread records the start: keep the clock still
            # until the job's function runs
            clock.now = T0 + datetime.timedelta(seconds=at)
            job = queue.put(Job(blockOn, name))
            commit(conn)
            driven.until(lambda: CALLS[name] == 1,
                         'job %r never started' % (job,))
            return job

        def finish(job, name, at):
            clock.now = T0 + datetime.timedelta(seconds=at)
            EVENTS[name].set()
            driven.until(lambda: completed(job), 'job never completed')
            waitForRecord(dispatcher, job)

        b = start('b', 5)                        # active from 5 on
        a = start('a', 10)                       # 10 -> 12
        finish(a, 'a', 12)
        clock.now = T0 + datetime.timedelta(seconds=20)
        s = queue.put(Job(double, 1))            # 20 -> 20
        f = queue.put(Job(fail, 'no'))           # 20 -> 20, failed
        o = other.put(Job(double, 2))            # 20 -> 20, other queue
        commit(conn)
        driven.until(lambda: all(completed(j) for j in (s, f, o)),
                     'jobs never completed')
        for job in (s, f, o):
            waitForRecord(dispatcher, job)
        c = start('c', 20)                       # active from 20 on
        poll_at_20 = dispatcher.polls.first()
        assert poll_at_20.utc_timestamp == clock.now
        clock.now = T0 + datetime.timedelta(seconds=30)

        stats = dispatcher.getStatistics()
        assert stats == {
            'started': 6, 'successful': 3, 'failed': 1, 'unknown': 0,
            'shortest successful': stats['shortest successful'],
            'longest successful': idOf(a),
            'shortest failed': idOf(f), 'longest failed': idOf(f),
            'shortest active': idOf(c), 'longest active': idOf(b),
            'statistics start': T0, 'statistics end': clock.now}
        assert stats['shortest successful'] in (idOf(s), idOf(o))

        # only the jobs of one queue, or of one agent
        assert dispatcher.getStatistics(queue='other') == dict(
            stats, started=1, successful=1, failed=0,
            **{'shortest successful': idOf(o),
               'longest successful': idOf(o),
               'shortest failed': None, 'longest failed': None,
               'shortest active': None, 'longest active': None})
        assert dispatcher.getStatistics(agent='main')['started'] == 5
        assert dispatcher.getStatistics(queue='', agent='side')[
            'started'] == 0

        # since: jobs that completed before are left out
        since = dispatcher.getStatistics(
            since=T0 + datetime.timedelta(seconds=15))
        assert since['statistics start'] == T0 + datetime.timedelta(
            seconds=15)
        assert (since['started'], since['successful'], since['failed']) \
            == (5, 2, 1)
        assert since['longest successful'] != idOf(a)

        # at a moment in the past: a job that completed later was active
        at_11 = dispatcher.getStatistics(
            at=T0 + datetime.timedelta(seconds=11))
        assert at_11['statistics end'] == T0 + datetime.timedelta(
            seconds=11)
        assert (at_11['started'], at_11['successful'], at_11['failed'],
                at_11['unknown']) == (2, 0, 0, 0)
        assert at_11['shortest active'] == idOf(a)
        assert at_11['longest active'] == idOf(b)

        # before a poll (by key): what started at 20 is left out
        before = dispatcher.getStatistics(before=poll_at_20.key)
        assert before['statistics end'] < poll_at_20.utc_timestamp
        assert (before['started'], before['successful']) == (2, 1)
        assert before['longest successful'] == idOf(a)
        assert before['longest active'] == idOf(b)
        assert dispatcher.getStatistics(at=poll_at_20.key)[
            'statistics end'] == poll_at_20.utc_timestamp
        assert dispatcher.getStatistics(since=first_poll.key)[
            'statistics start'] == T0

        with pytest.raises(ValueError, match='no poll with key'):
            dispatcher.getStatistics(at=12345)
        with pytest.raises(ValueError, match='naive'):
            dispatcher.getStatistics(since=datetime.datetime(2030, 1, 1))

        EVENTS['b'].set()
        EVENTS['c'].set()
        driven.until(lambda: completed(b) and completed(c),
                     'the released jobs never completed')
        for job in (b, c):
            waitForRecord(dispatcher, job)
        stats = dispatcher.getStatistics()
        assert (stats['started'], stats['successful'], stats['failed'],
                stats['shortest active']) == (6, 5, 1, None)
    finally:
        driven.stop()
    assert db.getPoolSize() == driven.original


# --- deactivate ---------------------------------------------------------

def test_deactivate_recovers_active_job_elsewhere(db, conn, queue):
    capture = Capture().install()
    first = Driven(db, poll_interval=1)
    second = Driven(db, poll_interval=1)
    original = db.getPoolSize()
    name = 'deact-%s' % uuid.uuid4().hex[:8]
    try:
        first.start()
        addAgent(conn, first.dispatcher, name, size=1)
        first.poll()
        assert db.getPoolSize() == original + 2
        job = queue.put(Job(blockFirstCall, name))
        commit(conn)
        first.until(lambda: CALLS[name] == 1, 'the job never started')
        assert first.dispatcher.getActiveJobIds() == [idOf(job)]
        [blocked_thread] = workerThreads('', name)

        first.dispatcher.deactivate()
        assert db.getPoolSize() == original
        assert dispatchermodule.STOPPED == \
            first.dispatcher.getStatusInfo()['status']
        capture.find(logging.INFO, 'deactivated dispatcher %s'
                     % first.dispatcher.UUID)
        sync(conn)
        agents = queue.dispatchers[first.dispatcher.UUID]
        assert not agents.activated
        assert len(agents[name]) == 0
        assert job.status == interfaces.ACTIVE  # still running over there
        [recovery] = list(queue)
        assert recovery.callable == job.handleInterrupt
        assert recovery.failure_log_level == logging.CRITICAL
        assert recovery.retry_policy_factory is retry.RetryCommonForever
        with pytest.raises(ValueError, match='not activated'):
            first.dispatcher.deactivate()

        # another process recovers the job and runs it to completion
        second.start()
        addAgent(conn, second.dispatcher, 'other-' + name, size=1)
        second.until(lambda: completed(job), 'the job was never recovered')
        assert job.result == 'call 2'
        assert CALLS[name] == 2
        assert testing.wait_for_result(recovery, WAIT) is None
        assert job.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}
        info = waitForRecord(second.dispatcher, job)
        assert info['result'] == "'call 2'"

        # the first run, released at last, must not undo the recovery
        assert blocked_thread.is_alive()
        EVENTS[name].set()
        blocked_thread.join(WAIT)
        assert not blocked_thread.is_alive()
        sync(conn)
        assert job.status == interfaces.COMPLETED
        assert job.result == 'call 2'
        assert CALLS[name] == 2
    finally:
        capture.uninstall()
        second.stop()
        first.stop()
    assert db.getPoolSize() == original
