"""Sane liveness (issue 9, case 8): pings follow ``ping_interval`` whatever
the poll interval; ping settings that make a healthy dispatcher look dead
are refused; and a dispatcher never declares a sibling dead on the
strength of time in which it could not see the database itself (a storage
outage that all processes share).  Driven by the test reactor and a
FixedClock, moved together."""
import datetime
import uuid

import pytest
import transaction
import zope.minmax

from zcasync import dispatcher as dispatchermodule
from zcasync import liveness
from zcasync import testing
from zcasync.interfaces import KEY

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
SECOND = datetime.timedelta(seconds=1)


class Driven:
    """A dispatcher on the test reactor; `tick` moves the FixedClock and
    the reactor's time together."""

    def __init__(self, db, clock, poll_interval):
        self.clock = clock
        self.reactor = testing.Reactor()
        self.dispatcher = dispatchermodule.Dispatcher(
            db, self.reactor, poll_interval=poll_interval, uuid=uuid.uuid4())
        self.dispatcher.activate()
        self.reactor.start()

    def tick(self, seconds, step=0.5):
        for i in range(int(round(seconds / step))):
            self.clock.advance(step)
            self.reactor.advance(step)

    def stop(self):
        self.reactor.stop()


def record(conn, dispatcher):
    conn.transaction_manager.begin()
    return conn.root()[KEY][''].dispatchers[dispatcher.UUID]


def test_pings_follow_the_ping_interval_not_the_poll_interval(
        db, conn, queue, clock):
    driven = Driven(db, clock, poll_interval=100)
    try:
        first = record(conn, driven.dispatcher).last_ping.value
        assert first == T0
        driven.tick(31)
        # a poll came at the ping's due time, not at the 100 s heartbeat
        second = record(conn, driven.dispatcher).last_ping.value
        assert T0 + 30 * SECOND < second <= T0 + 31 * SECOND
        driven.tick(30)
        third = record(conn, driven.dispatcher).last_ping.value
        assert second + 30 * SECOND <= third <= second + 31 * SECOND
        assert not record(conn, driven.dispatcher).dead
    finally:
        driven.stop()


@pytest.mark.parametrize('ping, death, ok', [
    (30, 60, True), (0.5, 2.5, True), (5, 10, True),
    (5, 2, False), (30, 45, False), (30, 30, False), (0, 10, False),
])
def test_ping_settings_that_kill_healthy_workers_are_refused(ping, death, ok):
    problem = liveness.checkIntervals(ping, death)
    assert (problem is None) == ok
    if not ok:
        assert 'ping' in problem
    assert liveness.checkIntervals(
        datetime.timedelta(seconds=ping),
        datetime.timedelta(seconds=death)) == problem


# --- the death watch ------------------------------------------------------

class Record:
    def __init__(self, last_ping, death=60):
        self.UUID = 'other'
        self.last_ping = zope.minmax.Maximum(last_ping)
        self.activated = T0
        self.ping_death_interval = datetime.timedelta(seconds=death)


def test_death_needs_a_whole_interval_of_watching():
    watch = liveness.DeathWatch(heartbeat=5)
    other = Record(T0 - 1000 * SECOND)  # its last ping is very old...
    watch.saw(T0)
    assert not watch.isDead('', other, T0)  # ...but watching starts now
    for t in range(5, 60, 5):
        watch.saw(T0 + t * SECOND)
        assert not watch.isDead('', other, T0 + t * SECOND)
    watch.saw(T0 + 60 * SECOND)
    assert watch.isDead('', other, T0 + 60 * SECOND)


def test_a_new_ping_restarts_the_watch():
    watch = liveness.DeathWatch(heartbeat=5)
    other = Record(T0)

    def check(t):
        watch.saw(T0 + t * SECOND)
        return watch.isDead('', other, T0 + t * SECOND)
    assert not any(check(t) for t in range(0, 55, 5))
    other.last_ping.value = T0 + 50 * SECOND  # seen first at 55 s
    assert not any(check(t) for t in range(55, 115, 5))
    assert check(115)


@pytest.mark.parametrize('blindness', ['failed poll', 'long gap'])
def test_time_without_seeing_the_database_does_not_count(blindness):
    watch = liveness.DeathWatch(heartbeat=5)
    other = Record(T0)
    watch.saw(T0)
    assert not watch.isDead('', other, T0)
    if blindness == 'failed poll':
        watch.blind()
    # 90 s later: more than the death interval, but this process saw
    # nothing in between
    watch.saw(T0 + 90 * SECOND)
    assert not watch.isDead('', other, T0 + 90 * SECOND)
    # the watch started again at 90 s
    for t in range(95, 150, 5):
        watch.saw(T0 + t * SECOND)
        assert not watch.isDead('', other, T0 + t * SECOND)
    watch.saw(T0 + 150 * SECOND)
    assert watch.isDead('', other, T0 + 150 * SECOND)


# --- a shared storage outage, end to end ----------------------------------

class Switch:
    """Stands for a ZEO client's ``is_connected``."""

    def __init__(self):
        self.connected = True

    def __call__(self):
        return self.connected


def test_a_shared_outage_does_not_make_siblings_declare_each_other_dead(
        db, conn, queue, clock, monkeypatch):
    """Dispatcher B and a sibling A (pinged by hand) share a storage that
    goes away for longer than the death interval.  When it comes back, B
    sees A's last ping 100 s old -- A could not ping either -- and must
    not declare it dead; it does once A really stays silent for a whole
    death interval that B watched."""
    switch = Switch()
    monkeypatch.setattr(db.storage, 'is_connected', switch, raising=False)
    tm = conn.transaction_manager
    # A comes first in the ring order of B (B looks at A)
    a_uuid = uuid.UUID(int=0)
    a = testing.activeRegistration(queue, a_uuid)
    tm.commit()
    driven = Driven(db, clock, poll_interval=5)
    try:
        driven.tick(10)
        switch.connected = False  # the storage server goes away
        driven.tick(100)
        switch.connected = True  # ...and comes back
        driven.tick(10)
        tm.begin()
        assert a.activated is not None, 'A was declared dead after an outage'
        # A pings again now and then: never dead
        for i in range(4):
            tm.begin()
            queue.dispatchers.ping(a_uuid)
            tm.commit()
            driven.tick(30)
        tm.begin()
        assert a.activated is not None
        # A stops: after a death interval that B watched, A is dead
        silent_since = a.last_ping.value
        driven.tick((silent_since - clock.now).total_seconds() + 55)
        tm.begin()
        assert a.activated is not None
        driven.tick(15)
        tm.begin()
        assert a.activated is None
    finally:
        driven.stop()
        transaction.abort()


def test_a_paused_process_judges_nobody_on_its_first_poll_back():
    """Paused (SIGSTOP, a long GC) right after a poll: the first poll back
    must not count the pause as time spent watching."""
    watch = liveness.DeathWatch(heartbeat=0.3)
    other = Record(T0, death=2.5)
    watch.begin(T0)
    assert not watch.isDead('', other, T0)
    watch.saw(T0)
    later = T0 + 4 * SECOND  # the process was stopped meanwhile
    watch.begin(later)
    assert not watch.isDead('', other, later)
