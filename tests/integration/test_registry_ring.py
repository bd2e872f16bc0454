"""The ping ring (issue 3, section 4) with three dispatchers, each with its
own connection on one FileStorage, as three processes would be.  The
middle one dies (stops pinging, with one job claimed and one running); its
predecessor finds it dead, deactivates it and its jobs are recovered by
the others; when it comes back it re-activates itself.  Time is a
FixedClock."""
import datetime
import logging
import uuid

import pytest
import transaction
import zope.component.eventtesting

from zcasync import testing
from zcasync import interfaces
from zcasync.agent import Agent
from zcasync.interfaces import ACTIVE, COMPLETED, PENDING
from zcasync.job import Job
from zcasync.queue import Queue, Queues

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
UUIDS = sorted(uuid.uuid4() for i in range(3))


class ProcessDied(BaseException):
    """Leaves a running job as a killed process would."""


DEATHS = []


def work(value):
    if DEATHS:
        DEATHS.pop()
        raise ProcessDied()
    return value * 2


class Process:
    """One dispatcher's connection, with its own transaction manager."""

    def __init__(self, db, uid):
        self.uid = uid
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    @property
    def agents(self):
        return self.queue.dispatchers[self.uid]

    @property
    def agent(self):
        return self.agents['main']

    def ping(self):
        """Ping; returns the registration it checked (ping() itself
        returns None, as in zc.async)."""
        self.tm.begin()  # see the others' commits
        checked = []
        registry = self.queue.dispatchers

        def isDead(following):
            checked.append(following)
            return following.dead
        assert registry.ping(self.uid, isDead) is None
        self.tm.commit()
        return checked[0] if checked else None

    def close(self):
        self.tm.abort()
        self.conn.close()



@pytest.fixture
def ring(db, clock):
    zope.component.eventtesting.setUp()
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    queues = conn.root()[interfaces.KEY] = Queues()
    queue = queues[''] = Queue()
    tm.commit()
    for i in range(4):
        queue.put(Job(work, i))
    tm.commit()
    conn.close()
    processes = [Process(db, uid) for uid in UUIDS]
    for process in processes:
        agents = testing.activeRegistration(process.queue, process.uid)
        agents['main'] = Agent(size=2)
        process.tm.commit()
    yield processes
    for process in processes:
        process.close()


def events(iface):
    return [e.object.UUID for e in zope.component.eventtesting.getEvents(
        iface)]


def test_middle_dispatcher_dies_and_is_recovered(ring, clock, caplog):
    first, middle, last = ring
    clock.advance(40)
    # each writes its ping and checks the next one
    assert [p.ping().UUID for p in ring] == [middle.uid, last.uid, first.uid]
    # the middle process claims two jobs and starts one, then dies
    middle.tm.begin()
    waiting = middle.agent.claimJob()
    running = middle.agent.claimJob()
    middle.tm.commit()
    DEATHS.append(1)
    with pytest.raises(ProcessDied):
        running()
    middle.tm.abort()
    assert running.status == ACTIVE
    zope.component.eventtesting.clearEvents()

    clock.advance(40)  # 80 s; the middle one last pinged at 40 s
    first.ping()
    last.ping()
    assert events(interfaces.IDispatcherDeactivated) == []  # 40 s < 60 s
    clock.advance(30)  # 110 s: 70 s since the middle one's last ping
    last.ping()  # checks the first one (wrapping around), alive
    assert events(interfaces.IDispatcherDeactivated) == []
    assert first.ping().UUID == middle.uid
    assert events(interfaces.IDispatcherDeactivated) == [middle.uid]
    assert not first.queue.dispatchers[middle.uid].activated

    # the recovery, as seen by the first process
    first.tm.begin()
    queue = first.queue
    jobs = list(queue)
    assert jobs[0]._p_oid == waiting._p_oid  # back at the front
    assert jobs[0].status == PENDING
    recovery = jobs[-1]
    assert recovery.callable.__name__ == 'handleInterrupt'
    assert recovery.callable.__self__._p_oid == running._p_oid
    assert len(first.queue.dispatchers[middle.uid]['main']) == 0
    # the first process runs the recovery job, then the job itself
    agent = first.agent
    agent.size = 10
    claimed = [agent.claimJob() for i in range(len(jobs))]
    first.tm.commit()
    claimed[-1]()  # handleInterrupt: the job goes back to the front
    first.tm.begin()
    again = agent.claimJob()
    assert again._p_oid == running._p_oid
    first.tm.commit()
    assert again() == 2 and again.status == COMPLETED
    for job in claimed[:-1]:
        job()
        assert job.status == COMPLETED
    first.tm.begin()
    assert len(first.queue) == 0

    # the middle process was only paused: it pings and re-activates
    clock.advance(5)
    with caplog.at_level(logging.CRITICAL, logger='zcasync.events'):
        middle.ping()
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and str(middle.uid) in critical[0].getMessage()
    assert events(interfaces.IDispatcherReactivated) == [middle.uid]
    first.tm.begin()
    assert first.queue.dispatchers[middle.uid].activated == clock()
    assert not first.queue.dispatchers[middle.uid].dead


def test_only_the_predecessor_checks(ring, clock):
    first, middle, last = ring
    clock.advance(61)
    zope.component.eventtesting.clearEvents()
    # the last one checks the first (wrapping around), which is dead too
    # by now: it deactivates it, not the middle one
    assert last.ping().UUID == first.uid
    assert events(interfaces.IDispatcherDeactivated) == [first.uid]
    middle.tm.begin()
    assert middle.agents.activated is not None
    # the middle one checks the last, which just pinged
    assert middle.ping().UUID == last.uid
    assert events(interfaces.IDispatcherDeactivated) == [first.uid]


def test_pings_of_the_three_commit_concurrently(ring, clock):
    clock.advance(31)
    for process in ring:
        process.tm.begin()
        process.queue.dispatchers.ping(process.uid)
    for process in ring:  # none of them conflicts
        process.tm.commit()
    ring[0].tm.begin()
    for uid in UUIDS:
        assert ring[0].queue.dispatchers[uid].last_ping.value == clock()
