"""Dispatcher polls with a real reactor thread and FileStorage: what a poll
records, registration and activation, the bounded history, the DEBUG poll
log, getPollInfo, a UUID used by another process, and pool sizing."""
import datetime
import logging
import operator
import uuid

import pytest
import zope.component.eventtesting

from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.agent import Agent
from zcasync.job import Job
from zcasync.queue import Queue, Queues

from test_dispatcher_support import (
    WAIT, Running, addAgent, commit, findPoll, firstPoll, sync,
    waitForPoll, workerThreads, double)

UTC = datetime.timezone.utc




def agentRecord(poll, agent='main', queue=''):
    return (poll.get(queue) or {}).get(agent)


# --- what a poll records ---------------------------------------------------

def test_first_poll_is_empty_without_queues(db):
    before = datetime.datetime.now(UTC)
    original = db.getPoolSize()
    with Running(db) as running:
        poll = firstPoll(running.dispatcher)
        assert poll == {}
        assert isinstance(poll, dispatchermodule.Poll)
        assert poll.utc_timestamp.tzinfo is not None
        assert before <= poll.utc_timestamp <= datetime.datetime.now(UTC)
        assert isinstance(poll.key, int)
        # the dispatcher's own connection
        assert db.getPoolSize() == original + 1
    assert db.getPoolSize() == original


def test_registration_and_activation(db, conn):
    zope.component.eventtesting.setUp()
    try:
        with Running(db) as running:
            firstPoll(running.dispatcher)
            queues = conn.root()[interfaces.KEY] = Queues()
            queue = queues[''] = Queue()
            commit(conn)

            def registered():
                sync(conn)
                agents = queue.dispatchers.get(running.uuid)
                return agents is not None and agents.activated
            testing.wait(registered, WAIT, 'never activated')
            agents = queue.dispatchers[running.uuid]
            assert list(queue.dispatchers) == [running.uuid]
            assert list(agents) == []
            assert agents.UUID == running.uuid
            assert agents.last_ping is not None
            assert agents.activated.tzinfo is not None
            for iface in (interfaces.IDispatcherRegistered,
                          interfaces.IDispatcherActivated):
                events = zope.component.eventtesting.getEvents(iface)
                assert [e.object._p_oid for e in events] == [agents._p_oid]
            poll = waitForPoll(running.dispatcher, lambda p: '' in p)
            assert poll[''] == {}
        sync(conn)
        assert not queue.dispatchers[running.uuid].activated
        events = zope.component.eventtesting.getEvents(
            interfaces.IDispatcherDeactivated)
        assert [e.object._p_oid for e in events] == [agents._p_oid]
    finally:
        zope.component.eventtesting.clearEvents()


def test_poll_records_agents_and_new_jobs(db, conn, queue):
    with Running(db) as running:
        dispatcher = running.dispatcher
        addAgent(conn, dispatcher, 'main', size=3)
        poll = waitForPoll(dispatcher, lambda p: agentRecord(p) is not None)
        assert dict(poll) == {'': {'main': {
            'size': 3, 'len': 0, 'error': None, 'new jobs': [],
            'active jobs': []}}}
        job = queue.put(Job(operator.mul, 14, 3))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 42
        job_id = utils.jobId(job)
        assert job_id[1] == 'unnamed'
        claimed = findPoll(dispatcher, lambda p: (agentRecord(p) or {}).get(
            'new jobs') == [job_id])
        assert claimed['']['main']['size'] == 3
        assert claimed['']['main']['error'] is None
        polls = list(dispatcher.polls)
        assert dispatcher.polls.first() is polls[0]
        assert len(dispatcher.polls) == len(polls) >= 3
        # newest first: timestamps go back in time, keys grow
        for newer, older in zip(polls, polls[1:]):
            assert newer.utc_timestamp >= older.utc_timestamp
            assert newer.key < older.key


def test_poll_history_is_bounded(db, conn, queue):
    def small(dispatcher):
        dispatcher.polls = dispatchermodule.PollHistory(5)
    with Running(db, setup=small) as running:
        dispatcher = running.dispatcher
        firstPoll(dispatcher)
        oldest = list(dispatcher.polls)[-1]
        testing.wait(lambda: all(p is not oldest for p in dispatcher.polls),
                     WAIT,
                     'the oldest poll was never dropped')
        assert len(dispatcher.polls) == 5
        keys = [p.key for p in dispatcher.polls]
        assert keys == sorted(keys)


def test_poll_logged_at_debug_only_when_it_changes(db, conn, queue,
                                                   capture):
    with Running(db) as running:
        dispatcher = running.dispatcher
        addAgent(conn, dispatcher, 'main', size=1)
        waitForPoll(dispatcher, lambda p: agentRecord(p) is not None)
        job = queue.put(Job(double, 21))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 42
        # a few idle polls after the job (and the one that settles it)
        count = len(dispatcher.polls)
        testing.wait(lambda: len(dispatcher.polls) >= count + 6, WAIT,
                     'the dispatcher stopped polling')
    polls = list(reversed(list(dispatcher.polls)))  # oldest first
    assert len(polls) < dispatchermodule.POLL_HISTORY
    logged = [r for r in capture.snapshot()
              if r.name == 'zcasync.trace' and r.levelno == logging.DEBUG
              and r.getMessage().startswith('poll ')]
    changed = [p for previous, p in zip([None] + polls, polls)
               if previous is None or dict(p) != dict(previous)]
    assert [r.getMessage() for r in logged] == [
        'poll %s: %r' % (p.key, dict(p)) for p in changed]
    assert len(polls) - len(logged) >= 3  # idle polls are not logged
    assert any("'new jobs': [(" in r.getMessage() for r in logged)


def test_getPollInfo(db, conn, queue):
    with Running(db) as running:
        dispatcher = running.dispatcher
        firstPoll(dispatcher)
        testing.wait(lambda: len(dispatcher.polls) >= 3, WAIT, 'no polls')
    polls = list(dispatcher.polls)
    poll, older = polls[1], polls[2]
    assert dispatcher.getPollInfo() is polls[0]
    assert dispatcher.getPollInfo(at=poll.key) is poll
    assert dispatcher.getPollInfo(at=poll.utc_timestamp) is poll
    assert dispatcher.getPollInfo(before=poll.key) is older
    assert dispatcher.getPollInfo(before=poll.utc_timestamp) is older
    assert dispatcher.getPollInfo(before=poll.key - 16) is poll
    assert dispatcher.getPollInfo(
        before=poll.utc_timestamp + datetime.timedelta(microseconds=1)) \
        is poll
    assert dispatcher.getPollInfo(at=poll.key + 1) is None
    assert dispatcher.getPollInfo(before=polls[-1].key) is None
    with pytest.raises(ValueError, match='naive'):
        dispatcher.getPollInfo(at=datetime.datetime.now())


# --- a UUID that another process uses -------------------------------------

def test_uuid_active_elsewhere_is_skipped_then_taken_over(
        db, conn, queue, capture):
    shared = uuid.uuid4()
    other = testing.activeRegistration(queue, shared)
    other['main'] = Agent(size=3)
    assigned = queue.put(Job(double, 21))
    active = queue.put(Job(double, 50))
    commit(conn)
    assert other['main'].claimJob() is assigned
    assert other['main'].claimJob() is active
    active._status = interfaces.ACTIVE  # it was running over there
    active.active_start = utils.now()
    commit(conn)
    activated, last_ping = other.activated, other.last_ping.value

    with Running(db, uuid_=shared) as running:
        dispatcher = running.dispatcher
        skipped = waitForPoll(dispatcher, lambda p: '' in p)
        assert skipped[''] is None
        error = capture.find(logging.ERROR, 'another process seems to use')
        assert str(shared) in error.getMessage()
        assert 'ZC_ASYNC_UUID' in error.getMessage()
        count = len(dispatcher.polls)
        testing.wait(lambda: len(dispatcher.polls) >= count + 2, WAIT,
                     'no more polls')
        assert dispatcher.polls.first()[''] is None
        sync(conn)
        assert (other.activated, other.last_ping.value) == (
            activated, last_ping)
        assert list(other['main']) == [assigned, active]
        assert assigned.status == interfaces.ASSIGNED
        assert active.status == interfaces.ACTIVE

        # the other process stops pinging: its record is dead
        long_ago = utils.now() - datetime.timedelta(minutes=5)
        other.activated = other.last_ping.value = long_ago
        commit(conn)
        testing.wait_for_death(other, WAIT)
        taken = waitForPoll(dispatcher, lambda p: p.get('') is not None)
        assert taken['']['main']['size'] == 3
        # both jobs were recovered: one put back, one through
        # handleInterrupt, and both ran here
        assert testing.wait_for_result(assigned, WAIT) == 42
        assert testing.wait_for_result(active, WAIT) == 100
        sync(conn)
        assert other.activated > long_ago
        assert active.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}


# --- pool sizing -------------------------------------------------------------

def test_pools_follow_the_database(db, conn, queue):
    original = db.getPoolSize()
    first = 'a-%s' % uuid.uuid4().hex[:8]
    second = 'b-%s' % uuid.uuid4().hex[:8]

    def settle(pool_size):
        testing.wait(lambda: db.getPoolSize() == pool_size, WAIT,
                     'pool size is %d, not %d' % (db.getPoolSize(),
                                                  pool_size))

    with Running(db) as running:
        dispatcher = running.dispatcher
        assert db.getPoolSize() == original + 1
        agent = addAgent(conn, dispatcher, first, size=3)
        settle(original + 4)
        # threads start on demand (one at once), up to the size
        testing.wait(lambda: len(workerThreads('', first)) == 1, WAIT,
                     'threads never started')
        for size in (5, 1):
            agent.size = size
            commit(conn)
            settle(original + 1 + size)
            testing.wait(lambda: 1 <= len(workerThreads('', first)) <= size,
                         WAIT, 'threads never followed size %d' % size)
            waitForPoll(dispatcher, lambda p: agentRecord(
                p, first)['size'] == size)

        queues = conn.root()[interfaces.KEY]
        queues['other'] = Queue()
        commit(conn)
        addAgent(conn, dispatcher, second, size=2, queue_name='other')
        settle(original + 1 + 1 + 2)
        testing.wait(lambda: len(workerThreads('other', second)) == 1,
                     WAIT, 'threads for the second queue never started')

        del queue.dispatchers[running.uuid][first]
        commit(conn)
        settle(original + 1 + 2)
        testing.wait(lambda: not workerThreads('', first), WAIT,
                     'threads of a removed agent kept running')
        waitForPoll(dispatcher, lambda p: p[''] == {})

        del queues['other']
        commit(conn)
        settle(original + 1)
        testing.wait(lambda: not workerThreads('other', second), WAIT,
                     'threads of a removed queue kept running')
        waitForPoll(dispatcher, lambda p: 'other' not in p)
    assert db.getPoolSize() == original


def test_queue_removed_and_added_again(db, conn, queue):
    with Running(db) as running:
        dispatcher = running.dispatcher
        queues = conn.root()[interfaces.KEY]
        queues['other'] = Queue()
        commit(conn)
        waitForPoll(dispatcher, lambda p: p.get('other') == {})
        del queues['other']
        commit(conn)
        waitForPoll(dispatcher, lambda p: 'other' not in p)
        again = queues['other'] = Queue()
        commit(conn)
        # the dispatcher registers in the new queue and goes on polling
        waitForPoll(dispatcher, lambda p: p.get('other') == {})

        def registered():
            sync(conn)
            agents = again.dispatchers.get(running.uuid)
            return agents is not None and agents.activated
        testing.wait(registered, WAIT, 'not activated in the new queue')
        addAgent(conn, dispatcher, 'main', size=1, queue_name='other')
        job = again.put(Job(double, 4))
        commit(conn)
        assert testing.wait_for_result(job, WAIT) == 8
