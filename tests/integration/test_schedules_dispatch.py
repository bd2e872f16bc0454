"""Schedules fired by dispatchers (issue 14), on a FileStorage: two
connections firing the same tick -> exactly one commits, with its job;
two dispatchers with real reactors fire an every-0.2-s schedule: one job
per tick, none missing; a schedule added while dispatchers idle wakes
them for its first tick."""
import datetime
import time

import pytest
import transaction
import ZODB.POSException

from zcasync import interfaces, testing
from zcasync.queue import Queue, Queues

from test_dispatcher_support import (
    WAIT, Running, addAgent, commit, firstPoll, sync)

UTC = datetime.timezone.utc


def beat(n):
    return n


def setUpQueue(conn):
    queues = conn.root()[interfaces.KEY] = Queues()
    queue = queues[''] = Queue()
    commit(conn)
    return queue


def test_two_connections_firing_one_tick_exactly_one_commits(db, conn,
                                                             clock):
    queue = setUpQueue(conn)
    queue.schedule('s', beat, 1, every=datetime.timedelta(seconds=10))
    commit(conn)
    clock.advance(10)
    sides = []
    for i in range(2):
        tm = transaction.TransactionManager()
        sides.append((tm, db.open(transaction_manager=tm)))
    try:
        fired = []
        for tm, other in sides:
            tm.begin()
            q = other.root()[interfaces.KEY]['']
            fired.append(q.schedules.fire(q)[0])
        assert fired == [1, 1]  # each saw the tick free
        sides[0][0].commit()
        with pytest.raises(ZODB.POSException.ConflictError):
            sides[1][0].commit()
        tm, other = sides[1]
        tm.abort()
        q = other.root()[interfaces.KEY]['']
        assert q.schedules.fire(q)[0] == 0  # the loser sees it taken
        sync(conn)
        assert len(queue) == 1
        assert queue[0].annotations['zcasync.tick'] == \
            queue.schedules['s'].last_tick
    finally:
        for tm, other in sides:
            tm.abort()
            other.close()


def ticksOf(queue, name):
    return sorted(job.annotations['zcasync.tick'] for job in queue
                  if job.annotations.get('zcasync.schedule') == name)


def test_two_dispatchers_fire_each_tick_once(db, conn):
    queue = setUpQueue(conn)
    period = datetime.timedelta(milliseconds=200)
    # no agents: the jobs stay in the queue (and no worker threads are
    # shared between the two Running helpers); firing needs no agent
    with Running(db, poll_interval=1) as one, \
            Running(db, poll_interval=1) as two:
        for running in (one, two):
            firstPoll(running.dispatcher)
        sync(conn)
        queue.schedule('beat', beat, 1, every=period)
        commit(conn)
        time.sleep(3)
        sync(conn)
        queue.schedules['beat'].pause()
        commit(conn)
    sync(conn)
    ticks = ticksOf(queue, 'beat')
    assert len(ticks) >= 10
    assert len(set(ticks)) == len(ticks)  # no tick twice
    assert {b - a for a, b in zip(ticks, ticks[1:])} == {period}  # none
    assert queue.schedules['beat'].fired == len(ticks)            # missing
    assert ticks[-1] == queue.schedules['beat'].last_tick


def test_a_new_schedule_wakes_idle_dispatchers(db, conn):
    """The dispatcher polls only every 30 s; a schedule added with a tick
    a second away still fires on time."""
    queue = setUpQueue(conn)
    with Running(db, poll_interval=30) as running:
        addAgent(conn, running.dispatcher)
        firstPoll(running.dispatcher)
        time.sleep(0.3)
        sync(conn)
        queue.schedule('soon', beat, 2, every=datetime.timedelta(seconds=1))
        commit(conn)
        started = time.monotonic()

        def fired():
            sync(conn)
            return queue.schedules['soon'].fired
        testing.wait(fired, WAIT, 'the schedule never fired')
        assert time.monotonic() - started < 5
