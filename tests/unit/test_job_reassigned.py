"""A job whose run must be retried, but which a sibling process took over
meanwhile (it thought this process dead), stops with ReassignedError
instead of running again next to the sibling's run."""
import uuid

import pytest
import transaction
import ZODB.POSException

from zcasync import interfaces
from zcasync.agent import Agent
from zcasync.job import Job

CALLS = []


def takenOverThenConflict(oid):
    """Play the sibling in another connection, then fail transiently."""
    CALLS.append(oid)
    from zcasync.threadlocal import getJob
    db = getJob()._p_jar.db()
    tm = transaction.TransactionManager()
    other = db.open(transaction_manager=tm)
    try:
        other.get(oid).handleInterrupt()  # retry: back in the queue
        tm.commit()
    finally:
        other.close()
    raise ZODB.POSException.ConflictError('simulated')


def test_retry_after_a_takeover_raises_ReassignedError(queue, conn):
    agent = queue.dispatchers.register(uuid.uuid4())['main'] = Agent()
    job = queue.put(Job(takenOverThenConflict))
    conn.transaction_manager.commit()
    job.args.append(job._p_oid)
    assert agent.claimJob() is job
    conn.transaction_manager.commit()
    CALLS.clear()
    with pytest.raises(interfaces.ReassignedError) as info:
        job()
    assert 'took it over' in str(info.value)
    assert CALLS == [job._p_oid]  # not run a second time here
    conn.transaction_manager.begin()
    assert job.status == interfaces.PENDING  # the sibling's decision stands
    assert queue[0] is job
