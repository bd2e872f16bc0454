"""Claims that never scan (issue 10): jobs blocked by a full quota, or
refused by an agent's filter, cost a claim nothing -- counted in objects
loaded from the storage by a claim from a cold connection (every load is
a round trip over ZEO or PostgreSQL), whatever is queued in front."""
import datetime
import threading
import uuid

import pytest
import transaction
import ZODB
import ZODB.FileStorage

from zcasync import testing
from zcasync.agent import Agent
from zcasync.interfaces import KEY, PENDING
from zcasync.job import Job
from zcasync.queue import Queue, Queues

WORKER = uuid.UUID(int=7)
SECOND = datetime.timedelta(seconds=1)


class CountingStorage(ZODB.FileStorage.FileStorage):
    """Counts the object loads made by the thread that asks."""

    counting = None

    def loadBefore(self, oid, tid):
        if self.counting is threading.current_thread():
            self.loads += 1
        return super().loadBefore(oid, tid)


def work(tag):
    return tag


def refuseOthers(job):
    return job.args[0] == 'mine'


@pytest.fixture
def storage(tmp_path):
    storage = CountingStorage(str(tmp_path / 'Data.fs'))
    db = ZODB.DB(storage, cache_size=100000)
    storage.db = db
    yield storage
    db.close()


def fill(storage, blocked=0, refused=0, quota_full_at_put=True):
    """A queue with a quota of size 1, held by a running job (unless the
    quota fills only after the puts), `blocked` jobs needing it, `refused`
    jobs an agent's filter refuses, then one job the agent takes."""
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    queues = conn.root()[KEY] = Queues()
    queue = queues[''] = Queue()
    queue.quotas.create('db', size=1)
    agents = testing.activeRegistration(queue, WORKER)
    agents['main'] = Agent(size=1000)
    agents['picky'] = Agent(size=1000, filter=refuseOthers)
    holder = Job(work, 'holder')
    holder.quota_names = ('db',)
    queue.put(holder)
    tm.commit()
    if quota_full_at_put:
        assert agents['main'].claimJob() is holder
        holder._activate()
        tm.commit()
    for i in range(blocked):
        job = Job(work, 'blocked')
        job.quota_names = ('db',)
        queue.put(job)
        if i % 1000 == 999:
            tm.commit()
    for i in range(refused):
        queue.put(Job(work, 'theirs'))
        if i % 1000 == 999:
            tm.commit()
    mine = queue.put(Job(work, 'mine'))
    tm.commit()
    if not quota_full_at_put:
        assert agents['main'].claimJob() is holder
        holder._activate()
        tm.commit()
    oid = mine._p_oid
    tm.abort()
    conn.close()
    return oid


def coldClaim(storage, agent_name='main', conn=None):
    """(claimed job's oid, objects loaded) for one claim, from a new
    connection with an empty cache (or `conn`)."""
    tm = conn.transaction_manager if conn is not None else \
        transaction.TransactionManager()
    own = conn is None
    if own:
        conn = storage.db.open(transaction_manager=tm)
        conn.cacheMinimize()
    tm.begin()
    agent = conn.root()[KEY][''].dispatchers[WORKER][agent_name]
    storage.loads, storage.counting = 0, threading.current_thread()
    try:
        job = agent.claimJob()
    finally:
        storage.counting = None
    loads = storage.loads
    oid = job._p_oid if job is not None else None
    tm.abort()
    if own:
        conn.close()
    return oid, loads


def test_a_claim_behind_quota_blocked_jobs_loads_as_little_as_in_an_empty_queue(
        tmp_path):
    costs = {}
    for blocked in (0, 100, 3000):
        storage = CountingStorage(str(tmp_path / ('%d.fs' % blocked)))
        storage.db = ZODB.DB(storage)
        try:
            mine = fill(storage, blocked=blocked)
            oid, costs[blocked] = coldClaim(storage)
            assert oid == mine
        finally:
            storage.db.close()
    # the same objects whatever waits in front (the quota's waiting tree
    # is not walked; having one costs a load or two)
    assert costs[3000] == costs[100] <= costs[0] + 3, costs


def test_jobs_blocked_after_they_were_put_are_set_aside_once(storage):
    mine = fill(storage, blocked=2000, quota_full_at_put=False)
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    try:
        tm.begin()
        queue = conn.root()[KEY]['']
        agent = queue.dispatchers[WORKER]['main']
        # the first claim meets the blocked jobs and sets them aside
        assert agent.claimJob()._p_oid == mine
        tm.commit()
        quota = queue.quotas['db']
        assert len(quota._waiting) == 2000 and len(queue) == 2000
        assert all(job.status == PENDING for job in list(queue)[:3])
    finally:
        tm.abort()
        conn.close()
    # later claims do not walk them again
    storage.db.cacheMinimize()
    oid, loads = coldClaim(storage)
    assert oid is None and loads < 20, loads


def test_room_in_the_quota_gives_back_waiting_jobs_in_order(storage):
    fill(storage, blocked=5)
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    try:
        queue = conn.root()[KEY]['']
        agent = queue.dispatchers[WORKER]['main']
        assert agent.claimJob().args[0] == 'mine'
        waiting = list(queue.quotas['db']._waiting.values())
        [holder] = [j for j in agent if j.args[0] == 'holder']
        holder._status = 'completed-status'  # as if it completed
        tm.commit()
        taken = agent.claimJob()
        assert taken is waiting[0]  # the oldest waiting job, and only it
        assert agent.claimJob() is None
        tm.commit()
        # removing the quota gives back every waiting job
        queue.quotas.remove('db')
        tm.commit()
        assert [agent.claimJob() for i in range(4)] == waiting[1:]
    finally:
        tm.abort()
        conn.close()


def test_jobs_a_filter_refused_are_not_loaded_again(storage):
    mine = fill(storage, refused=2000)
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    conn.cacheMinimize()
    try:
        first = coldClaim(storage, 'picky', conn)
        assert first[0] == mine
        # (aborted: the job is there to claim again) the same agent in
        # this process does not load the refused jobs again
        conn.cacheMinimize()
        second = coldClaim(storage, 'picky', conn)
        assert second[0] == mine
    finally:
        tm.abort()
        conn.close()
    # the refused jobs form one run the second claim jumps over: not even
    # the tree's buckets in between are loaded
    assert first[1] > 2000 and second[1] < 20, (first, second)


def test_a_job_put_among_refused_ones_is_still_found(storage):
    """Runs of refused keys hold while keys are only appended; a put back
    or a higher priority lands inside a run: the runs are forgotten."""
    from zcasync.queueextras import RefusedKeys
    fill(storage, refused=300)
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    try:
        queue = conn.root()[KEY]['']
        agent = queue.dispatchers[WORKER]['picky']
        mine = agent.claimJob()
        assert mine.args[0] == 'mine'
        tm.commit()
        refused = agent._refused()
        assert isinstance(refused, RefusedKeys) and len(refused.ends) == 1
        # a high-priority job for this agent lands before the refused ones
        urgent = queue.put(Job(work, 'mine'), priority=10)
        later = queue.put(Job(work, 'mine'))  # appended: no reordering
        tm.commit()
        assert agent.claimJob() is urgent
        assert agent.claimJob() is later
        tm.commit()
    finally:
        tm.abort()
        conn.close()


def test_a_job_coming_due_inside_a_refused_run_is_found(storage, clock):
    """A scheduled job coming due takes its place by its due time: among
    refused jobs put after it was scheduled.  The run of refused keys it
    lands in must not be jumped over."""
    tm = transaction.TransactionManager()
    conn = storage.db.open(transaction_manager=tm)
    try:
        queues = conn.root()[KEY] = Queues()
        queue = queues[''] = Queue()
        agents = testing.activeRegistration(queue, WORKER)
        agents['picky'] = Agent(size=1000, filter=refuseOthers)
        start = clock.now
        scheduled = queue.put(Job(work, 'mine'),
                              begin_after=start + 150 * SECOND)
        for i in range(300):
            clock.advance(1)
            queue.put(Job(work, 'theirs'))
        tm.commit()
        agents.ping_death_interval = 1000 * SECOND
        agent = agents['picky']
        clock.now = start + 120 * SECOND
        assert agent.claimJob() is None  # builds the run of refused keys
        tm.commit()
        assert len(agent._refused().ends) == 1
        clock.now = start + 200 * SECOND
        assert agent.claimJob() is scheduled
        tm.commit()
    finally:
        tm.abort()
        conn.close()
