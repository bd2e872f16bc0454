"""Unique keys across two connections on one FileStorage (issue 14): two
transactions putting the same key end with one job (the second commit
conflicts and, retried, returns the first job); different keys both
commit.  Each connection has its own transaction manager; both read the
same snapshot before either commits."""
import pytest
import transaction
import ZODB.POSException

from zcasync import interfaces
from zcasync.interfaces import COMPLETED
from zcasync.job import Job
from zcasync.queue import Queue, Queues


def double(value):
    return value * 2


@pytest.fixture
def uniqueQueue(db):
    """The primary queue, with 50 jobs holding unique keys around the
    ones the tests use."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conn.root()[interfaces.KEY] = Queues()
    conn.root()[interfaces.KEY][''] = Queue()
    for i in range(50):  # other keys around it in the tree
        conn.root()[interfaces.KEY][''].put(Job(double, i),
                                            unique_key='other-%02d' % i)
    tm.commit()
    conn.close()


def putUntilCommitted(side, key, value):
    """What an application does: retry the transaction on conflicts."""
    for attempt in side.tm.attempts(5):
        with attempt:
            job = side.queue.put(Job(double, value), unique_key=key)
    return job


@pytest.mark.parametrize('stale', [False, True], ids=['new key',
                                                      'key freed'])
def test_two_concurrent_puts_of_one_key_end_with_one_job(uniqueQueue, sides,
                                                       stale):
    if stale:
        # the key was held by a job that has completed since
        setup = sides()
        old = setup.queue.put(Job(double, 0), unique_key='report-42')
        setup.queue.remove(old)
        setup.queue._unique['report-42'] = old
        old._status = COMPLETED
        setup.tm.commit()
    one, two = sides(), sides()
    a = one.queue.put(Job(double, 1), unique_key='report-42')
    b = two.queue.put(Job(double, 2), unique_key='report-42')
    assert a is not b  # neither sees the other yet
    one.tm.commit()
    with pytest.raises(ZODB.POSException.ConflictError):
        two.tm.commit()
    two.tm.abort()
    # retried, the second put finds the first job
    again = putUntilCommitted(two, 'report-42', 2)
    assert again._p_oid == a._p_oid
    reader = sides()
    queue = reader.queue
    jobs = [job for job in queue if job.unique_key == 'report-42']
    assert [job.args[0] for job in jobs] == [1]
    assert len(queue) == 51


def test_concurrent_puts_of_different_keys_both_commit(uniqueQueue, sides):
    one, two = sides(), sides()
    a = one.queue.put(Job(double, 1), unique_key='other-10a')
    b = two.queue.put(Job(double, 2), unique_key='other-10b')
    one.tm.commit()
    two.tm.commit()
    reader = sides()
    queue = reader.queue
    assert len(queue) == 52
    assert queue.uniqueHolder('other-10a')._p_oid == a._p_oid
    assert queue.uniqueHolder('other-10b')._p_oid == b._p_oid
