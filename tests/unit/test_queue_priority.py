"""Priorities, paused queues and queues stored before either existed
(issue 14): due jobs are claimed by priority, then time; scheduled jobs
wait in their own tree and come due in begin_after order; a paused queue
accepts puts and hands out nothing; bad priorities are refused and store
nothing.  Time is moved with a FixedClock."""
import datetime
import struct

import pytest

from zcasync import testing
from zcasync import queuekeys
from zcasync import utils
from zcasync.job import Job

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def double(value):
    return value * 2


def later(seconds):
    return START + datetime.timedelta(seconds=seconds)


def claimAll(queue):
    jobs = []
    while True:
        job = queue.claim()
        if job is None:
            return jobs
        jobs.append(job)


def test_due_jobs_are_claimed_by_priority_then_put_time(queue, clock):
    low = queue.put(Job(double, 1), priority=-5)
    clock.advance(1)
    normal = queue.put(Job(double, 2))
    clock.advance(1)
    high = queue.put(Job(double, 3), priority=10)
    clock.advance(1)
    high2 = queue.put(Job(double, 4), priority=10)
    clock.advance(1)
    normal2 = queue.put(Job(double, 5), priority=0)
    assert (high.priority, normal.priority, low.priority) == (10, 0, -5)
    assert list(queue) == [high, high2, normal, normal2, low]
    assert claimAll(queue) == [high, high2, normal, normal2, low]


def test_priority_survives_a_commit_and_a_put_back(queue, conn, clock):
    job = queue.put(Job(double, 1), priority=7)
    conn.transaction_manager.commit()
    other = queue.put(Job(double, 2), priority=9)
    assert queue.claim() is other
    claimed = queue.claim()
    assert claimed is job and job.priority == 7
    # put back (what recovery does with a job that did not start): still
    # ahead of everything put normally, and ordered by priority among
    # put-back jobs
    urgent = queue.put(Job(double, 3), priority=100)
    back_low = Job(double, 4)
    queue.putBack(back_low)
    queue.putBack(job)
    assert claimAll(queue) == [job, back_low, urgent]


def test_scheduled_jobs_wait_then_take_their_place_by_priority(queue,
                                                              clock):
    """A scheduled job comes due at its begin_after; among due jobs it
    takes its place by priority, and among equal priorities by its due
    time (so a job that waited is not passed by later puts)."""
    late_high = queue.put(Job(double, 1), begin_after=later(20), priority=5)
    soon = queue.put(Job(double, 2), begin_after=later(10))
    now = queue.put(Job(double, 3))
    assert len(queue) == 3
    assert queue.nextDue() == later(10)
    assert list(queue) == [now, soon, late_high]
    assert queue.claim() is now
    assert queue.claim() is None
    clock.advance(15)
    fresh = queue.put(Job(double, 4))  # put after `soon` came due
    assert queue.claim() is soon
    assert queue.nextDue() == later(20)
    clock.advance(10)
    fresh2 = queue.put(Job(double, 5), priority=1)
    assert queue.nextDue() is None
    # late_high came due: priority 5 first, then fresh2 (1), then fresh
    assert claimAll(queue) == [late_high, fresh2, fresh]


def test_scheduled_jobs_come_due_in_begin_after_order(queue, clock):
    jobs = [queue.put(Job(double, i), begin_after=later(100 - i))
            for i in range(5)]
    clock.advance(200)
    assert claimAll(queue) == list(reversed(jobs))


def test_a_claim_moves_a_bounded_batch_of_due_scheduled_jobs(queue, clock,
                                                             monkeypatch):
    import zcasync.queue
    monkeypatch.setattr(zcasync.queue, 'PROMOTE_BATCH', 3)
    jobs = [queue.put(Job(double, i), begin_after=later(1 + i))
            for i in range(7)]
    clock.advance(60)
    assert queue.claim() is jobs[0]
    assert len(queue._scheduled) == 4  # 3 moved, 1 claimed
    assert claimAll(queue) == jobs[1:]
    assert len(queue) == 0


def test_moving_due_jobs_neither_loads_nor_writes_them(queue, conn, clock):
    """A job that cannot be stored (its module is gone) must not block
    the queue: moving it to the due tree does not touch it, and it is
    still found (and removed) through the key it was put with."""
    jobs = [queue.put(Job(double, i), begin_after=later(10))
            for i in range(3)]
    conn.transaction_manager.commit()
    for job in jobs:
        job._p_deactivate()
    clock.advance(20)
    queue._promote(utils.toMicros(clock.now))  # what a claim does first
    assert len(queue._scheduled) == 0 and len(queue._jobs) == 3
    assert all(job._p_status == 'ghost' for job in jobs)  # never loaded
    conn.transaction_manager.commit()
    queue.remove(jobs[1])
    assert claimAll(queue) == [jobs[0], jobs[2]]


def test_remove_and_pull_find_scheduled_jobs(queue, clock):
    due = queue.put(Job(double, 1))
    scheduled = queue.put(Job(double, 2), begin_after=later(60))
    other = queue.put(Job(double, 3), begin_after=later(90))
    queue.remove(scheduled)
    assert scheduled.parent is None and list(queue) == [due, other]
    with pytest.raises(LookupError):
        queue.remove(scheduled)
    assert queue.pull(1) is other
    assert list(queue) == [due] and len(queue) == 1


@pytest.mark.parametrize('bad, error, text', [
    ('5', TypeError, 'priority must be an int'),
    (1.5, TypeError, 'priority must be an int'),
    (True, TypeError, 'priority must be an int'),
    (2 ** 40, ValueError, 'out of range'),
])
def test_a_bad_priority_is_refused_and_nothing_stored(queue, conn, bad,
                                                      error, text):
    job = Job(double, 1)
    with pytest.raises(error, match=text):
        queue.put(job, priority=bad)
    assert len(queue) == 0 and list(queue) == []
    assert job.parent is None and job._p_jar is None
    assert queue.puts() == 0


# --- paused queues -------------------------------------------------------

def test_a_paused_queue_accepts_puts_and_hands_out_nothing(queue, conn,
                                                          clock):
    first = queue.put(Job(double, 1))
    queue.pause()
    assert queue.paused
    second = queue.put(Job(double, 2))
    assert len(queue) == 2
    assert queue.claim() is None
    conn.transaction_manager.commit()
    puts = queue.puts()
    queue.resume()
    assert not queue.paused
    assert queue.puts() == puts + 1  # wakes the dispatchers
    assert claimAll(queue) == [first, second]


def test_a_paused_queue_lets_running_jobs_finish(queue, agents, conn):
    from zcasync.agent import Agent
    from zcasync.interfaces import COMPLETED
    agent = agents['main'] = Agent(size=2)
    job = queue.put(Job(double, 21))
    assert agent.claimJob() is job
    queue.put(Job(double, 1))
    queue.pause()
    conn.transaction_manager.commit()
    assert job() == 42 and job.status == COMPLETED
    assert agent.claimJob() is None and len(queue) == 1


@pytest.fixture
def agents(queue, clock):
    import uuid
    return testing.activeRegistration(queue, uuid.uuid4())


# --- queues stored before priorities -------------------------------------

def legacyQueue(conn, queue, clock, specs):
    """Make `queue` look like one stored before priorities: no scheduled
    or unique tree, keys (lane, time, oid); specs are (lane, seconds)."""
    del queue._scheduled, queue._unique, queue._schedules
    jobs = []
    for lane, seconds in specs:
        job = Job(double, seconds)
        conn.add(job)
        job.begin_after = later(seconds)
        key = struct.pack('>BQ', lane, int(later(seconds).timestamp() *
                                           1e6)) + job._p_oid
        job._queue_key = key
        job.parent = queue
        queue._jobs[key] = job
        queue._length.change(1)
        jobs.append(job)
    conn.transaction_manager.commit()
    return jobs


def test_a_queue_stored_before_priorities_still_works(queue, conn, clock):
    back, old, scheduled = legacyQueue(conn, queue, clock, [
        (queuekeys.LEGACY_FRONT, 0), (queuekeys.LEGACY_NORMAL, -5),
        (queuekeys.LEGACY_NORMAL, 30)])
    assert queue._scheduled is None
    new = queue.put(Job(double, 1), priority=3)
    assert queue.nextDue() == later(30)
    assert list(queue)[:2] == [back, old]
    # legacy keys sort first; the legacy scheduled job waits
    assert claimAll(queue) == [back, old, new]
    assert queue._scheduled is not None and len(queue) == 1
    assert queue._locate(scheduled)[0] is queue._scheduled
    clock.advance(60)
    assert queue.claim() is scheduled
    assert len(queue) == 0
    # unique keys and schedules work on it too
    unique = queue.put(Job(double, 2), unique_key='k')
    assert queue.put(Job(double, 3), unique_key='k') is unique
    assert len(queue.schedules) == 0
    conn.transaction_manager.commit()
