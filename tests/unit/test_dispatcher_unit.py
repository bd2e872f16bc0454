"""Dispatcher pieces driven by the test reactor and a FixedClock, so that
every poll happens at a time the test chose: poll keys, the poll history,
getPollInfo, getStatusInfo, callInReactor and the bad paths."""
import datetime
import threading
import uuid

import pytest

from zcasync import dispatcher as dispatchermodule
from zcasync import testing
from zcasync import utils
from zcasync.agent import Agent

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
SECOND = datetime.timedelta(seconds=1)



@pytest.fixture
def driven(db):
    """(dispatcher, reactor), activated; the reactor is not started."""
    original = db.getPoolSize()
    reactor = testing.Reactor()
    dispatcher = dispatchermodule.Dispatcher(db, reactor, poll_interval=5,
                                             uuid=uuid.uuid4())
    dispatcher.activate()
    yield dispatcher, reactor
    if not reactor.running:
        reactor.start()
    reactor.stop()
    assert not dispatcher.activated
    assert db.getPoolSize() == original


# --- keys and history ------------------------------------------------------

def test_pollKey():
    micros = utils.toMicros(T0)
    key = dispatchermodule.pollKey(micros)
    assert dispatchermodule.pollKey(micros + 1) == key - 16  # newer: smaller
    # the 16th poll within one microsecond
    assert dispatchermodule.pollKey(micros, 15) == key - 15
    assert dispatchermodule.pollKey(micros + 1, 0) < \
        dispatchermodule.pollKey(micros, 15)
    assert key > 0


def test_PollHistory():
    history = dispatchermodule.PollHistory(3)
    assert history.first() is None
    assert len(history) == 0 and list(history) == []
    polls = []
    for i in range(5):
        poll = dispatchermodule.Poll(n=i)
        polls.append(poll)
        history.add(poll)
    assert len(history) == 3
    assert history.first() is polls[-1]
    assert [p['n'] for p in history] == [4, 3, 2]


# --- polls at chosen times ---------------------------------------------------

def test_polls_and_getPollInfo(driven, clock, conn):
    dispatcher, reactor = driven
    reactor.start()  # first poll at T0, no queues
    first = dispatcher.polls.first()
    assert first == {}
    assert first.utc_timestamp == T0
    clock.advance(5)
    reactor.advance(5)
    second = dispatcher.polls.first()
    assert second.utc_timestamp == T0 + 5 * SECOND
    clock.advance(5)
    reactor.advance(5)
    third = dispatcher.polls.first()
    assert list(dispatcher.polls) == [third, second, first]
    assert third.key < second.key < first.key
    assert first.key - second.key == 5 * 1000000 * 16

    info = dispatcher.getPollInfo
    assert info() is third
    assert info(at=second.key) is second
    assert info(at=T0 + 5 * SECOND) is second
    assert info(at=T0 + 6 * SECOND) is None
    assert info(at=second.key + 1) is None
    assert info(before=third.key) is second
    assert info(before=T0 + 10 * SECOND) is second
    assert info(before=T0 + 7 * SECOND) is second
    assert info(before=second.key - 16) is second
    assert info(before=second.utc_timestamp +
                datetime.timedelta(microseconds=1)) is second
    assert info(before=first.key) is None
    assert info(before=T0) is None
    with pytest.raises(ValueError, match='naive'):
        info(before=datetime.datetime(2030, 1, 1))
    with pytest.raises(TypeError, match='datetime'):
        utils.checkAware('yesterday', 'at')


def test_polls_in_the_same_microsecond(driven, clock):
    dispatcher, reactor = driven
    reactor.start()
    older = dispatcher.polls.first()
    dispatcher.poll()  # in the reactor's thread (this one), same time
    newer = dispatcher.polls.first()
    assert newer is not older
    assert newer.utc_timestamp == older.utc_timestamp
    assert newer.key < older.key  # newer polls have smaller keys
    assert dispatcher.getPollInfo(before=newer.key) is older
    assert dispatcher.getPollInfo(at=T0) is newer
    assert dispatcher.getPollInfo(before=newer.key - 16) is newer
    assert dispatcher.getPollInfo(before=T0) is None


def test_empty_history():
    dispatcher = dispatchermodule.Dispatcher(None, testing.Reactor(),
                                             uuid=uuid.uuid4())
    assert dispatcher.getPollInfo() is None
    assert dispatcher.getPollInfo(at=1) is None
    assert dispatcher.getPollInfo(before=T0) is None


# --- getStatusInfo -----------------------------------------------------------

CHOOSER = {}


def statusChooser(agent):
    """An agent chooser that, in the middle of a poll, lets an hour pass
    and asks the dispatcher for its status."""
    if 'dispatcher' in CHOOSER:
        CHOOSER['clock'].advance(3600)
        CHOOSER['seen'] = CHOOSER['dispatcher'].getStatusInfo()['status']
    return None


def test_getStatusInfo(db, conn, queue, clock):
    reactor = testing.Reactor()
    dispatcher = dispatchermodule.Dispatcher(db, reactor, poll_interval=5,
                                             uuid=uuid.uuid4())
    assert dispatcher.getStatusInfo() == {
        'status': 'STOPPED', 'poll interval': datetime.timedelta(seconds=5),
        'time since last poll': None, 'uptime': None,
        'uuid': dispatcher.UUID}
    dispatcher.activate()
    info = dispatcher.getStatusInfo()
    assert info == {
        'status': 'STARTING', 'poll interval': datetime.timedelta(seconds=5),
        'time since last poll': None, 'uptime': datetime.timedelta(0)}
    try:
        reactor.start()  # the first poll
        info = dispatcher.getStatusInfo()
        assert info['status'] == 'RUNNING'
        assert info['time since last poll'] == datetime.timedelta(0)
        # late, but within the slack: still running
        clock.advance(12)
        info = dispatcher.getStatusInfo()
        assert info['status'] == 'RUNNING'
        assert info['time since last poll'] == 12 * SECOND
        assert info['uptime'] == 12 * SECOND
        # clearly overdue: stuck
        clock.advance(300)
        assert dispatcher.getStatusInfo()['status'] == 'STUCK'
        reactor.advance(5)  # the next poll comes at last
        info = dispatcher.getStatusInfo()
        assert info['status'] == 'RUNNING'
        assert info['time since last poll'] == datetime.timedelta(0)
        assert info['uptime'] == 312 * SECOND

        # a poll that takes long is in progress, not stuck
        conn.transaction_manager.begin()
        queue.dispatchers[dispatcher.UUID]['slow'] = Agent(
            chooser=statusChooser, size=1)
        conn.transaction_manager.commit()
        CHOOSER.update(dispatcher=dispatcher, clock=clock)
        count = len(dispatcher.polls)
        reactor.advance(5)
        assert len(dispatcher.polls) > count
        assert CHOOSER['seen'] == 'RUNNING'
    finally:
        CHOOSER.clear()
        reactor.stop()
    info = dispatcher.getStatusInfo()
    assert info['status'] == 'STOPPED'
    assert info['uuid'] == dispatcher.UUID
    assert (info['uptime'], info['time since last poll']) == (None, None)


# --- callInReactor ---------------------------------------------------------

def test_callInReactor(driven):
    dispatcher, reactor = driven
    reactor.start()
    assert dispatcher.inReactorThread()
    assert dispatcher.callInReactor(lambda x: x + 1, 1) == 2  # direct
    outcome = {}

    def fromThread():
        try:
            outcome['value'] = dispatcher.callInReactor(
                lambda: threading.get_ident())
            dispatcher.callInReactor(lambda: 1 / 0)
        except ZeroDivisionError as e:
            outcome['error'] = e
    thread = threading.Thread(target=fromThread)
    thread.start()
    testing.wait(lambda: 'error' in outcome, 10, 'no answer')  # pumps
    thread.join(10)
    assert outcome['value'] == threading.get_ident()


def test_callInReactor_times_out_when_the_reactor_does_not_answer(driven):
    dispatcher, reactor = driven
    reactor.start()
    outcome = {}

    def fromThread():
        try:
            dispatcher.callInReactor(lambda: None, timeout=0.05)
        except RuntimeError as e:
            outcome['error'] = str(e)
    thread = threading.Thread(target=fromThread)
    thread.start()
    thread.join(10)  # this thread does not pump meanwhile
    assert outcome['error'] == 'the reactor did not answer within 0.05 s'


# --- bad paths ---------------------------------------------------------------

def test_activate_twice_and_deactivate_when_stopped(driven):
    dispatcher, reactor = driven
    with pytest.raises(ValueError, match='is already activated'):
        dispatcher.activate()
    idle = dispatchermodule.Dispatcher(dispatcher.db, reactor,
                                       uuid=uuid.uuid4())
    with pytest.raises(ValueError, match='is not activated'):
        idle.deactivate()


def test_getJobInfo_of_an_unknown_job(driven):
    dispatcher, reactor = driven
    with pytest.raises(ValueError) as raised:
        dispatcher.getJobInfo(b'\0' * 7 + b'\x42')
    message = str(raised.value)
    assert "no record of job b'\\x00" in message
    assert "in database 'unnamed'" in message
    with pytest.raises(ValueError, match="in database 'other'"):
        dispatcher.getJobInfo(b'\0' * 8, 'other')


def test_default_uuid_is_the_instance_uuid(db):
    from zcasync import instanceuuid
    dispatcher = dispatchermodule.Dispatcher(db, testing.Reactor())
    assert dispatcher.UUID is instanceuuid.UUID
    assert dispatcher.poll_interval == 5


def test_activate_deactivate_activate_before_the_reactor_runs(db):
    from zcasync.invalidations import _HUB_ATTRIBUTE
    reactor = testing.Reactor()
    size = db.getPoolSize()
    d = dispatchermodule.Dispatcher(db, reactor, poll_interval=60,
                                    uuid=uuid.uuid4())
    d.activate()
    d.deactivate()
    d.activate()
    reactor.start()
    hub = getattr(db._mvcc_storage, _HUB_ATTRIBUTE)
    assert len(hub._listeners) == 1  # started once, not twice
    assert db.getPoolSize() == size + 1
    reactor.stop()
    assert hub._listeners == ()
    assert d.getStatusInfo()['status'] == 'STOPPED'
    assert db.getPoolSize() == size
