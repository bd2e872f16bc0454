"""Scale (issue 3, section 2): a put and a claim write a bounded number of
objects, the same bound with 10 and with 20,000 pending jobs.  Objects
written are counted as the data records of the commit's transaction in
the FileStorage.  Rates are measured by a benchmark script, not here."""
import uuid

import pytest

from zcasync import testing
from zcasync.agent import Agent
from zcasync.job import Job

#: A put writes the job and its four sub-objects (args, kwargs, callbacks,
#: annotations), one bucket and the length: 7.  Splitting a full bucket
#: adds the new bucket and the parent node, and rarely a split parent: 11.
PUT_BOUND = 11
#: A claim writes the job, one bucket and the length: 3; a bucket emptied
#: rewrites the parent node: 4.  Through an agent: plus the agent's tree.
CLAIM_BOUND = 5
SAMPLES = 40


def double(value):
    return value * 2


def writtenByLastCommit(storage):
    tid = storage.lastTransaction()
    iterator = storage.iterator(tid, tid)
    try:
        for record in iterator:  # read the records before it closes
            assert record.tid == tid
            return len(list(record))
        raise AssertionError('no transaction %r in the storage' % tid)
    finally:
        close = getattr(iterator, 'close', None)
        if close is not None:
            close()


def fill(queue, tm, count, batch=2000):
    for start in range(0, count, batch):
        for i in range(start, min(count, start + batch)):
            queue.put(Job(double, i))
        tm.commit()


def measure(queue, conn):
    """(objects written per put, per claim) over SAMPLES commits each."""
    tm, storage = conn.transaction_manager, conn.db().storage
    puts, claims = [], []
    for i in range(SAMPLES):
        queue.put(Job(double, -i))
        tm.commit()
        puts.append(writtenByLastCommit(storage))
    for i in range(SAMPLES):
        assert queue.claim() is not None
        tm.commit()
        claims.append(writtenByLastCommit(storage))
    return puts, claims


@pytest.fixture
def small_and_large(queue, conn):
    """Counts with 10 pending jobs, then with 20,000."""
    tm = conn.transaction_manager
    fill(queue, tm, 10)
    small = measure(queue, conn)
    fill(queue, tm, 20000 - len(queue))
    assert len(queue) == 20000
    large = measure(queue, conn)
    assert len(queue) == 20000
    return small, large


def test_put_and_claim_write_a_bounded_number_of_objects(small_and_large):
    (small_puts, small_claims), (large_puts, large_claims) = small_and_large
    for counts in (small_puts, large_puts):
        assert max(counts) <= PUT_BOUND, counts
    for counts in (small_claims, large_claims):
        assert max(counts) <= CLAIM_BOUND, counts
    # the usual case is the same number whatever the queue's size
    assert min(small_puts) == min(large_puts)
    assert min(small_claims) == min(large_claims)


def test_claim_through_an_agent_at_20000_pending(queue, conn):
    agents = testing.activeRegistration(queue, uuid.uuid4())
    agent = agents['main'] = Agent(size=50)
    fill(queue, conn.transaction_manager, 20000)
    storage = conn.db().storage
    counts = []
    for i in range(SAMPLES):
        assert agent.claimJob() is not None
        conn.transaction_manager.commit()
        counts.append(writtenByLastCommit(storage))
    assert max(counts) <= CLAIM_BOUND + 1, counts
    assert min(counts) == 4  # the claim's 3 and the agent's tree
    assert len(queue) == 20000 - SAMPLES and len(agent) == SAMPLES
