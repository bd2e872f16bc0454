"""The dispatcher registry (issue 3, section 4): registration, the
DispatcherAgents mapping, liveness data, activation with the cleanup of
held jobs, and pings.  The three-dispatcher ring, with one connection per
dispatcher, is in tests/integration/test_registry_ring.py."""
import datetime
import logging
import uuid

import pytest
import zope.component.eventtesting

from zcasync import interfaces, retry, testing
from zcasync.agent import Agent
from zcasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, PENDING)
from zcasync.job import Job
from zcasync.registry import DispatcherAgents

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class ProcessDied(BaseException):
    """Raised by a job to leave it as a killed process would: its start
    (or its result) committed, nothing after."""


DEATHS = []


def double(value):
    return value * 2


def dieOnce(*args):
    """Dies the first time it is called after `DEATHS.append(1)`."""
    if DEATHS:
        DEATHS.pop()
        raise ProcessDied()
    return 'survived'


@pytest.fixture
def events():
    zope.component.eventtesting.setUp()
    zope.component.eventtesting.clearEvents()
    return zope.component.eventtesting.getEvents



@pytest.fixture
def dispatchers(queue):
    return queue.dispatchers


def register(dispatchers, uid):
    """Register `uid` (register() returns None, as in zc.async) and return
    its record."""
    assert dispatchers.register(uid) is None
    return dispatchers[uid]


@pytest.fixture
def agents(dispatchers):
    agents = register(dispatchers, uuid.uuid4())
    agents['main'] = Agent(size=5)
    return agents


def commit(conn):
    conn.transaction_manager.commit()


# --- registration ----------------------------------------------------------

def test_register(queue, dispatchers, events):
    uid = uuid.uuid4()
    agents = register(dispatchers, uid)
    assert isinstance(agents, DispatcherAgents)
    assert interfaces.IDispatcherAgents.providedBy(agents)
    assert dispatchers[uid] is agents and uid in dispatchers
    assert dispatchers.get(uid) is agents and len(dispatchers) == 1
    assert list(dispatchers) == [uid] and dispatchers.keys() == [uid]
    assert dispatchers.items() == [(uid, agents)]
    assert agents.UUID == uid and agents.name == uid
    assert agents.parent is queue and agents.queue is queue
    assert agents.activated is None and len(agents) == 0
    registered = events(interfaces.IDispatcherRegistered)
    assert [e.object for e in registered] == [agents]


def test_register_twice_refused(dispatchers, events):
    uid = uuid.uuid4()
    agents = register(dispatchers, uid)
    with pytest.raises(ValueError, match='already registered'):
        dispatchers.register(uid)
    assert dispatchers[uid] is agents
    assert len(events(interfaces.IDispatcherRegistered)) == 1


def test_unregister(dispatchers, events):
    uid = uuid.uuid4()
    agents = register(dispatchers, uid)
    assert dispatchers.unregister(uid) is agents
    assert uid not in dispatchers and agents.parent is None
    unregistered = events(interfaces.IDispatcherUnregistered)
    assert [e.object for e in unregistered] == [agents]
    with pytest.raises(KeyError):
        dispatchers.unregister(uid)


def test_unregister_refused_while_activated(dispatchers, events, agents):
    agents.activate()
    with pytest.raises(ValueError, match='deactivate it before'):
        dispatchers.unregister(agents.UUID)
    assert dispatchers[agents.UUID] is agents
    assert events(interfaces.IDispatcherUnregistered) == []
    agents.deactivate()
    dispatchers.unregister(agents.UUID)
    assert agents.UUID not in dispatchers


# --- the DispatcherAgents mapping ----------------------------------------

def test_agents_mapping(dispatchers):
    agents = register(dispatchers, uuid.uuid4())
    main, extra = Agent(), Agent(size=1)
    agents['main'] = main
    agents['extra'] = extra
    assert (main.name, main.parent) == ('main', agents)
    assert agents['main'] is main and agents.get('nope') is None
    assert 'extra' in agents and len(agents) == 2
    assert agents.keys() == ['extra', 'main'] and list(agents) == agents.keys()
    assert agents.values() == [extra, main]
    assert agents.items() == [('extra', extra), ('main', main)]
    del agents['extra']
    assert 'extra' not in agents and extra.parent is None


def test_agents_mapping_accepts_only_agents(dispatchers):
    agents = register(dispatchers, uuid.uuid4())
    for bad in (object(), Job(double, 1), 'Agent'):
        with pytest.raises(ValueError, match='only agents'):
            agents['main'] = bad
    with pytest.raises(TypeError, match='agent names are strings'):
        agents[1] = Agent()
    assert len(agents) == 0


def test_agent_of_another_dispatcher_refused(dispatchers):
    first = register(dispatchers, uuid.uuid4())
    second = register(dispatchers, uuid.uuid4())
    agent = first['main'] = Agent()
    with pytest.raises(ValueError, match='another dispatcher'):
        second['main'] = agent
    assert 'main' not in second and agent.parent is first


def test_idle_agent_can_be_replaced(agents):
    old = agents['main']
    new = agents['main'] = Agent(size=1)
    assert agents['main'] is new and new.parent is agents
    assert old.parent is None


def test_agent_holding_jobs_cannot_be_replaced_or_removed(queue, agents):
    agent = agents['main']
    queue.put(Job(double, 1))
    job = testing._immediateClaim(agent)
    with pytest.raises(ValueError, match='cannot be replaced'):
        agents['main'] = Agent()
    with pytest.raises(ValueError, match='cannot be removed'):
        del agents['main']
    assert agents['main'] is agent and job.agent is agent
    agent.remove(job)
    del agents['main']
    assert 'main' not in agents


# --- liveness data --------------------------------------------------------

def test_intervals_default_and_changeable(agents):
    assert agents.ping_interval == datetime.timedelta(seconds=30)
    assert agents.ping_death_interval == datetime.timedelta(seconds=60)
    agents.ping_interval = datetime.timedelta(seconds=5)
    agents.ping_death_interval = datetime.timedelta(seconds=15)
    assert agents.ping_interval == datetime.timedelta(seconds=5)
    assert agents.ping_death_interval == datetime.timedelta(seconds=15)


def test_dead(dispatchers, agents, clock):
    assert not agents.dead  # never activated
    agents.activate()
    assert agents.activated == START and agents.last_ping.value == START
    clock.advance(60)
    assert not agents.dead
    clock.advance(1)
    assert agents.dead
    dispatchers.ping(agents.UUID)
    assert agents.last_ping.value == START + datetime.timedelta(seconds=61)
    assert not agents.dead
    agents.ping_death_interval = datetime.timedelta(seconds=10)
    clock.advance(11)
    assert agents.dead


def test_dead_counts_a_late_activation(agents, clock):
    agents.activate()
    clock.advance(100)
    agents.deactivate()
    agents.activate()  # re-activation sets activated and last_ping anew
    assert agents.activated == START + datetime.timedelta(seconds=100)
    assert not agents.dead


# --- activation ------------------------------------------------------------

def test_activate_and_deactivate_fire_events(agents, events, clock):
    agents.activate()
    assert agents.activated == START
    assert [e.object for e in events(interfaces.IDispatcherActivated)] == \
        [agents]
    clock.advance(5)
    agents.deactivate()
    assert agents.activated is None
    assert [e.object for e in events(interfaces.IDispatcherDeactivated)] \
        == [agents]


def test_activate_and_deactivate_refused_in_wrong_state(agents, events):
    with pytest.raises(ValueError, match='is not activated'):
        agents.deactivate()
    agents.activate()
    with pytest.raises(ValueError, match='already activated'):
        agents.activate()
    assert len(events(interfaces.IDispatcherActivated)) == 1
    assert events(interfaces.IDispatcherDeactivated) == []


# --- cleanup of held jobs (activate and deactivate alike) -------------------

def _start(agents, how):
    """Before the jobs are claimed: a dispatcher to be deactivated is
    active; one to be activated holds jobs while not activated (as after a
    crash, or when a sibling deactivated it while it kept working)."""
    if how == 'deactivate':
        agents.activate()


def _clean(agents, how):
    getattr(agents, how)()


CLEANUPS = ['deactivate', 'activate']


def _claimAndCommit(queue, agents, conn, job):
    queue.put(job)
    # claimed as the process did before it died (its record may not be
    # activated in this test: claim without claimJob's check)
    assert testing._immediateClaim(agents['main']) is job
    commit(conn)
    return job


@pytest.mark.parametrize('how', CLEANUPS)
def test_cleanup_new_job_back_at_front(queue, agents, conn, how):
    _start(agents, how)
    held = _claimAndCommit(queue, agents, conn, Job(double, 1))
    waiting = queue.put(Job(double, 2))
    assert held.status == ASSIGNED
    _clean(agents, how)
    assert list(queue) == [held, waiting]
    assert held.status == PENDING and held.parent is queue
    assert len(agents['main']) == 0


def _runRecovery(queue, agents, conn, how, method):
    """Clean up; check the one recovery job queued (calling `method`, with
    RetryCommonForever and CRITICAL failures), claim it and run it."""
    _clean(agents, how)
    assert len(agents['main']) == 0
    recovery, = list(queue)
    assert recovery.callable == method
    assert recovery.retry_policy_factory is retry.RetryCommonForever
    assert recovery.failure_log_level == logging.CRITICAL
    if how == 'deactivate':
        agents.activate()
    assert agents['main'].claimJob() is recovery
    commit(conn)
    recovery()
    return recovery


@pytest.mark.parametrize('how', CLEANUPS)
def test_cleanup_active_job_gets_handle_interrupt(queue, agents, conn, how):
    _start(agents, how)
    job = _claimAndCommit(queue, agents, conn, Job(dieOnce))
    DEATHS.append(1)
    with pytest.raises(ProcessDied):
        job()
    conn.transaction_manager.abort()
    assert job.status == ACTIVE
    recovery = _runRecovery(queue, agents, conn, how, job.handleInterrupt)
    # running it re-queued the job (its policy retries interruptions)
    assert recovery.status == COMPLETED
    assert list(queue) == [job] and job.status == PENDING
    # claimed as the process did before it died (its record may not be
    # activated in this test: claim without claimJob's check)
    assert testing._immediateClaim(agents['main']) is job
    commit(conn)
    assert job() == 'survived' and job.status == COMPLETED


@pytest.mark.parametrize('how', CLEANUPS)
def test_cleanup_callbacks_job_gets_resume_callbacks(
        queue, agents, conn, how):
    _start(agents, how)
    job = Job(double, 21)
    callback = job.addCallback(dieOnce)
    _claimAndCommit(queue, agents, conn, job)
    DEATHS.append(1)
    with pytest.raises(ProcessDied):
        job()
    conn.transaction_manager.abort()
    assert job.status == CALLBACKS and job.result == 42
    assert callback.status == ACTIVE
    _runRecovery(queue, agents, conn, how, job.resumeCallbacks)
    assert job.status == COMPLETED and job.result == 42
    assert callback.status == COMPLETED and callback.result == 'survived'


@pytest.mark.parametrize('how', CLEANUPS)
def test_cleanup_completed_job_moves_to_completed(queue, agents, conn, how):
    _start(agents, how)
    job = Job(double, 2)
    conn.add(job)
    assert job() == 4
    # a completed job still held (what a crash between a job's completion
    # and its agent's update would leave)
    agents['main']._add(job)
    commit(conn)
    _clean(agents, how)
    agent = agents['main']
    assert len(agent) == 0 and list(agent.completed) == [job]
    assert len(queue) == 0


def test_cleanup_of_several_agents_and_jobs(queue, agents, conn):
    agents['other'] = Agent(size=2)
    agents.activate()
    jobs = [queue.put(Job(double, i)) for i in range(4)]
    for agent in (agents['main'], agents['other']):
        agent.claimJob()
        agent.claimJob()
    commit(conn)
    agents.deactivate()
    assert sorted(j.args[0] for j in queue) == [0, 1, 2, 3]
    assert all(j.status == PENDING for j in jobs)
    assert len(agents['main']) == len(agents['other']) == 0


# --- pings ---------------------------------------------------------------

def test_ping_writes_only_when_older_than_ping_interval(
        dispatchers, agents, conn, clock):
    storage = conn.db().storage
    agents.activate()
    commit(conn)
    before = storage.lastTransaction()
    for i in range(5):
        clock.advance(5)  # 25 s in all: within the 30 s interval
        assert dispatchers.ping(agents.UUID) is None  # no sibling
        assert agents.last_ping.value == START
        commit(conn)
        assert storage.lastTransaction() == before
    clock.advance(5)  # 30 s: a write is due
    dispatchers.ping(agents.UUID)
    assert agents.last_ping.value == START + datetime.timedelta(seconds=30)
    commit(conn)
    assert storage.lastTransaction() > before


def test_ping_interval_change_takes_effect(dispatchers, agents, conn, clock):
    agents.activate()
    agents.ping_interval = datetime.timedelta(seconds=2)
    commit(conn)
    before = conn.db().storage.lastTransaction()
    clock.advance(1)
    dispatchers.ping(agents.UUID)
    commit(conn)
    assert conn.db().storage.lastTransaction() == before
    clock.advance(1)
    dispatchers.ping(agents.UUID)
    assert agents.last_ping.value == START + datetime.timedelta(seconds=2)


def test_ping_unknown_dispatcher(dispatchers):
    with pytest.raises(KeyError):
        dispatchers.ping(uuid.uuid4())


def test_ping_checks_only_the_next_dispatcher(queue, dispatchers, clock):
    uids = sorted(uuid.uuid4() for i in range(3))
    ring = [register(dispatchers, uid) for uid in uids]
    for agents in ring:
        agents.activate()

    def checked(uid):
        seen = []
        assert dispatchers.ping(uid, isDead=seen.append) is None
        return seen
    assert checked(uids[0]) == [ring[1]]
    assert checked(uids[1]) == [ring[2]]
    assert checked(uids[2]) == [ring[0]]  # wraps around
    clock.advance(61)
    dispatchers.ping(uids[0])  # uids[1] is dead; uids[2] is not checked
    assert ring[1].activated is None and ring[2].activated is not None
    assert checked(uids[0]) == [ring[2]]  # skips the deactivated


def test_a_deactivated_pinging_dispatcher_reactivates(
        dispatchers, agents, events, clock, caplog):
    agents.activate()
    clock.advance(90)
    agents.deactivate()  # what a sibling that thought it dead did
    zope.component.eventtesting.clearEvents()
    with caplog.at_level(logging.CRITICAL, logger='zcasync.events'):
        dispatchers.ping(agents.UUID)
    assert agents.activated == START + datetime.timedelta(seconds=90)
    assert agents.last_ping.value == agents.activated
    reactivated = events(interfaces.IDispatcherReactivated)
    assert [e.object for e in reactivated] == [agents]
    records = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(records) == 1
    message = records[0].getMessage()
    assert str(agents.UUID) in message
    for cause in ('ping_death_interval', 'transactions', 'clocks'):
        assert cause in message
    # once re-activated, pinging is quiet again
    caplog.clear()
    clock.advance(1)
    dispatchers.ping(agents.UUID)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(events(interfaces.IDispatcherReactivated)) == 1
