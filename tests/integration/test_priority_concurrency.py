"""Priorities and scheduled jobs under concurrency (issue 14), two
connections on one FileStorage: puts of any priority keep merging with
each other and with claims, a scheduled put merges with a claim that
moves due scheduled jobs, and two claims of one job still conflict."""
import datetime

import pytest
import ZODB.POSException

from zcasync import interfaces, utils
from zcasync.job import Job
from zcasync.queue import Queue, Queues

from test_queue_concurrency import checkTree


def double(value):
    return value * 2


def setUp(sides, pending, scheduled=0, due_in=3600):
    side = sides()
    queues = side.conn.root()[interfaces.KEY] = Queues()
    queue = queues[''] = Queue()
    later = utils.now() + datetime.timedelta(seconds=due_in)
    for i in range(pending):
        queue.put(Job(double, i), priority=i % 5)
    for i in range(scheduled):
        queue.put(Job(double, 1000 + i), begin_after=later, priority=i % 3)
    side.tm.commit()
    return side


def committed(sides):
    reader = sides()
    queue = reader.queue
    checkTree(queue._jobs)
    checkTree(queue._scheduled)
    assert len(queue) == len(list(queue))
    return queue


@pytest.mark.parametrize('pending', [0, 3, 200])
@pytest.mark.parametrize('priorities', [(0, 0), (4, 0), (-1, 9)])
def test_concurrent_puts_of_any_priority_both_commit(sides, pending,
                                                     priorities):
    setUp(sides, pending)
    one, two = sides(), sides()
    one.queue.put(Job(double, -1), priority=priorities[0])
    two.queue.put(Job(double, -2), priority=priorities[1])
    one.tm.commit()
    two.tm.commit()
    queue = committed(sides)
    assert len(queue) == pending + 2
    order = [job.priority for job in queue]
    assert order == sorted(order, reverse=True)


@pytest.mark.parametrize('pending', [1, 10, 200])
def test_a_low_priority_put_and_a_claim_both_commit(sides, pending):
    setUp(sides, pending)
    app, worker = sides(), sides()
    app.queue.put(Job(double, -1), priority=-5)
    claimed = worker.queue.claim()
    assert claimed.priority == max(i % 5 for i in range(pending))
    worker.tm.commit()
    app.tm.commit()
    queue = committed(sides)
    assert len(queue) == pending
    assert [job.args[0] for job in queue][-1] == -1


def test_a_scheduled_put_and_a_claim_moving_due_jobs_both_commit(sides,
                                                                clock):
    side = setUp(sides, 5, scheduled=10, due_in=60)
    side.tm.abort()
    clock.advance(120)  # the scheduled jobs are due now
    app, worker = sides(), sides()
    app.queue.put(Job(double, -1), begin_after=clock.now +
                  datetime.timedelta(hours=1))
    claimed = worker.queue.claim()
    assert claimed.priority == 4  # due jobs and moved ones, by priority
    worker.tm.commit()
    app.tm.commit()
    queue = committed(sides)
    assert len(queue) == 15
    assert len(queue._scheduled) == 1  # the new one; the rest were moved
    assert [job.args[0] for job in queue][-1] == -1


def test_two_claims_of_the_same_high_priority_job_one_commits(sides):
    setUp(sides, 20)
    one, two = sides(), sides()
    a, b = one.queue.claim(), two.queue.claim()
    assert a._p_oid == b._p_oid and a.priority == 4
    one.tm.commit()
    with pytest.raises(ZODB.POSException.ConflictError):
        two.tm.commit()
