"""Queues, quotas, dispatcher records and agents as a zc.async 1.5
application uses them, after renaming ``zc.async`` to ``zcasync`` (issue
11, "Queues and quotas", "Agents"); and records stored before these
changes still load."""
import datetime
import uuid

import pytest
import transaction
import zope.minmax

import zcasync.agent
import zcasync.interfaces
import zcasync.job
import zcasync.queue
import zcasync.testing
from zcasync.interfaces import ASSIGNED, CALLBACKS, NEW, PENDING

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def double(value):
    return value * 2


def commit(conn):
    conn.transaction_manager.commit()


# --- queues ----------------------------------------------------------------

def test_jobs_put_at_the_same_instant_come_out_in_put_order(
        conn, queue, clock):
    jobs = [zcasync.job.Job(double, n) for n in range(5)]
    for job in reversed(jobs):  # oids in the reverse of the put order
        conn.add(job)
    for job in jobs:
        queue.put(job)
    commit(conn)
    assert [queue.claim() for i in range(5)] == jobs


def test_deleting_a_queue_clears_its_name(conn, queue):
    queues = conn.root()[zcasync.interfaces.KEY]
    other = queues['other'] = zcasync.queue.Queue()
    assert other.name == 'other'
    del queues['other']
    assert other.name is None and other.parent is None


# --- quotas ----------------------------------------------------------------

def test_quotas_create_and_remove_return_None_and_index(conn, queue):
    assert queue.quotas.create('db', size=2) is None
    quota = queue.quotas['db']
    jobs = []
    for n in range(2):
        job = zcasync.job.Job(double, n)
        job.quota_names = ('db',)
        jobs.append(queue.put(job))
    agents = zcasync.testing.activeRegistration(queue, uuid.uuid4())
    agent = agents['main'] = zcasync.agent.Agent()
    assert [agent.claimJob(), agent.claimJob()] == jobs
    assert quota[0] is jobs[0] and quota[-1] is jobs[1]
    with pytest.raises(IndexError):
        quota[2]
    assert queue.quotas.remove('db') is None


def test_a_job_claimed_without_agent_keeps_its_quota_slot(
        conn, queue, clock):
    queue.quotas.create('db', size=1)
    first, second = (zcasync.job.Job(double, 1), zcasync.job.Job(double, 2))
    for job in (first, second):
        job.quota_names = ('db',)
        queue.put(job)
    commit(conn)
    assert queue.claim() is first
    commit(conn)
    assert first.status == NEW      # no agent: it belongs nowhere
    assert queue.claim() is None    # ...yet it holds the slot
    first.addCallback(double)
    commit(conn)
    first._markActive(conn.transaction_manager)
    assert queue.claim() is None    # ACTIVE: still held
    first._status = CALLBACKS
    assert queue.claim() is second  # CALLBACKS frees it


def test_setting_quota_names(conn, queue):
    queue.quotas.create('db')
    job = queue.put(zcasync.job.Job(double, 1))
    assert job.status == PENDING
    job.quota_names = ('db',)
    with pytest.raises(ValueError) as raised:
        job.quota_names = ('db', 'nope')
    assert raised.value.args == ('unknown quota name', 'nope')
    assert 'queue.quotas.create' in str(raised.value)
    assert job.quota_names == ('db',)
    agents = zcasync.testing.activeRegistration(queue, uuid.uuid4())
    agents['main'] = zcasync.agent.Agent()
    assert agents['main'].claimJob() is job and job.status == ASSIGNED
    with pytest.raises(zcasync.interfaces.BadStatusError):
        job.quota_names = ()
    free = zcasync.job.Job(double, 2)
    free.quota_names = ('anything',)  # NEW: checked when put
    with pytest.raises(ValueError, match='unknown quota name'):
        queue.put(free)


# --- dispatcher records ----------------------------------------------------

def test_dispatcher_records(conn, queue, clock):
    uid = uuid.uuid4()
    assert queue.dispatchers.register(uid) is None
    record = queue.dispatchers[uid]
    assert record.parent is queue and record.queue is queue
    assert isinstance(record.last_ping, zope.minmax.Maximum)
    assert record.last_ping.value is None
    record.activate()
    assert record.last_ping.value == T0
    clock.advance(31)
    assert queue.dispatchers.ping(uid) is None
    assert record.last_ping.value == T0 + datetime.timedelta(seconds=31)
    commit(conn)


def test_concurrent_pings_keep_the_latest(db, conn, queue, clock):
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    queue.dispatchers[uid].activate()
    commit(conn)
    tm = transaction.TransactionManager()
    other = db.open(transaction_manager=tm)
    try:
        later = T0 + datetime.timedelta(seconds=90)
        other.root()[zcasync.interfaces.KEY][''].dispatchers[uid] \
            .last_ping.value = later
        queue.dispatchers[uid].last_ping.value = T0 + datetime.timedelta(
            seconds=60)
        tm.commit()
        commit(conn)  # resolved by the max register: no ConflictError
        conn.transaction_manager.begin()
        assert queue.dispatchers[uid].last_ping.value == later
    finally:
        tm.abort()
        other.close()


def test_records_stored_with_a_datetime_ping_still_load(db, conn, queue,
                                                        clock):
    """A DispatcherAgents stored before last_ping became a register held
    the datetime itself (and its parent was the queue's Dispatchers)."""
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    record = queue.dispatchers[uid]
    record.activated = T0
    record.__dict__['last_ping'] = T0
    record.__dict__['parent'] = queue.dispatchers
    record._p_changed = True
    commit(conn)
    tm = transaction.TransactionManager()
    other = db.open(transaction_manager=tm)
    try:
        old = other.root()[zcasync.interfaces.KEY][''].dispatchers[uid]
        assert old.last_ping.value == T0 and not old.dead
        assert old.queue._p_oid == queue._p_oid
        clock.advance(40)
        old.queue.dispatchers.ping(uid)
        tm.commit()
    finally:
        tm.abort()
        other.close()
    conn.transaction_manager.begin()
    assert record.last_ping.value == T0 + datetime.timedelta(seconds=40)
    assert isinstance(record.__dict__['last_ping'], zope.minmax.Maximum)


# --- agents ----------------------------------------------------------------

def test_claimJob_needs_a_live_activated_registration(conn, queue, clock):
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    record = queue.dispatchers[uid]
    agent = record['main'] = zcasync.agent.Agent()
    job = queue.put(zcasync.job.Job(double, 1))
    assert agent.claimJob() is None          # not activated
    record.activate()
    clock.advance(61)
    assert record.dead and agent.claimJob() is None   # dead
    queue.dispatchers.ping(uid)
    assert agent.claimJob() is job
    record.deactivate()
    queue.put(zcasync.job.Job(double, 2))
    assert agent.claimJob() is None          # deactivated


def test_filter_agents(conn, queue):
    agent = zcasync.agent.Agent()
    assert zcasync.interfaces.IFilterAgent.providedBy(agent)
    agent.filter = lambda job: True
    with pytest.raises(ValueError, match='not both'):
        agent.chooser = zcasync.agent.chooseFirst
    agent.filter = None
    agent.chooser = zcasync.agent.chooseFirst
    assert not zcasync.interfaces.IFilterAgent.providedBy(agent)
    assert zcasync.interfaces.IAgent.providedBy(agent)
    with pytest.raises(ValueError, match='not both'):
        agent.filter = bool
    agent.chooser = None
    assert zcasync.interfaces.IFilterAgent.providedBy(agent)
    assert zcasync.interfaces.ICompletedCollection.providedBy(
        agent.completed)


def test_agents_stored_with_plain_chooser_and_filter_still_load(
        db, conn, queue):
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    agent = queue.dispatchers[uid]['main'] = zcasync.agent.Agent()
    state = agent.__getstate__()
    for name in ('_chooser', '_filter'):
        state.pop(name, None)
    state.pop('__provides__', None)
    state['chooser'] = None
    state['filter'] = None
    agent.__setstate__(state)
    assert agent.chooser is None and agent.filter is None
    assert zcasync.interfaces.IFilterAgent.providedBy(agent)
    queue.put(zcasync.job.Job(double, 1))
    queue.dispatchers[uid].activate()
    assert agent.claimJob() is not None
