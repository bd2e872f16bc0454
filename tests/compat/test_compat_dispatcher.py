"""The dispatcher's introspection and the test reactor as zc.async 1.5
tests use them, after renaming ``zc.async`` to ``zcasync`` (issue 11,
"Dispatcher introspection", "Testing")."""
import datetime
import uuid

import pytest

import zcasync.agent
import zcasync.configure
import zcasync.dispatcher
import zcasync.interfaces
import zcasync.job
import zcasync.testing
import zcasync.utils
from zcasync.interfaces import COMPLETED

WAIT = 20


def mul(a, b):
    return a * b


@pytest.fixture
def started(db, conn, queue):
    """zc.async's test set-up: a started test reactor, a dispatcher with an
    agent, the clock frozen by the reactor."""
    zcasync.configure.base()
    reactor = zcasync.testing.Reactor()
    reactor.start()
    dispatcher = zcasync.dispatcher.Dispatcher(
        db, reactor, uuid=uuid.uuid4(), jobs_size=3, polls_size=5)
    dispatcher.activate()  # the reactor runs: it polls at once
    conn.transaction_manager.begin()
    queue.dispatchers[dispatcher.UUID]['main'] = zcasync.agent.Agent()
    conn.transaction_manager.commit()
    yield reactor, dispatcher
    zcasync.testing.tear_down_dispatcher(dispatcher)
    zcasync.testing.tearDownDatetime()


def test_the_reactor_freezes_the_clock():
    reactor = zcasync.testing.Reactor()
    before = zcasync.utils.now()
    reactor.start()
    try:
        frozen = zcasync.utils.now()
        assert frozen >= before and zcasync.utils.now() == frozen
        ran = []
        reactor.callLater(10, ran.append, 'ten')
        reactor.callLater(5, ran.append, 'five')
        reactor.callLater(20, ran.append, 'twenty')
        assert reactor.time_passes() is False
        assert reactor.time_flies(12) == 2
        assert ran == ['five', 'ten']
        assert zcasync.utils.now() == frozen + datetime.timedelta(seconds=12)
        zcasync.testing.set_now(frozen + datetime.timedelta(seconds=30))
        assert reactor.time_passes() is True and ran[-1] == 'twenty'
        assert reactor.time_passes() is False
    finally:
        reactor.stop()
    assert zcasync.utils.getClock() is zcasync.utils.systemClock
    with pytest.raises(ValueError, match='not started'):
        reactor.time_flies(1)


def test_time_flies_moves_the_clock_to_each_call():
    zcasync.testing.setUpDatetime()
    try:
        zcasync.testing.set_now(datetime.datetime(2006, 8, 10, 15, 44))
        assert zcasync.utils.now() == datetime.datetime(
            2006, 8, 10, 15, 44, tzinfo=datetime.timezone.utc)
        reactor = zcasync.testing.Reactor()
        reactor.start()
        seen = []
        reactor.callLater(1, lambda: seen.append(zcasync.utils.now()))
        reactor.callLater(3, lambda: seen.append(zcasync.utils.now()))
        assert reactor.time_flies(5) == 2
        assert [t.second for t in seen] == [1, 3]
        assert zcasync.utils.now().second == 5
        reactor.stop()
        # the reactor did not freeze it: the test's clock stays
        assert zcasync.utils.now().second == 5
    finally:
        zcasync.testing.tearDownDatetime()
    assert zcasync.utils.getClock() is zcasync.utils.systemClock


def test_wait_for_and_the_dispatchers_records(started, conn, queue, capsys):
    reactor, dispatcher = started
    jobs = [queue.put(zcasync.job.Job(mul, n, 2)) for n in range(4)]
    conn.transaction_manager.commit()
    reactor.wait_for(*jobs, attempts=20)
    assert capsys.readouterr().out == ''
    assert [j.status for j in jobs] == [COMPLETED] * 4
    assert [j.result for j in jobs] == [0, 2, 4, 6]
    # bounded records: the oldest run was dropped
    assert dispatcher.jobs.size == 3 and len(dispatcher.jobs) == 3
    ids = [zcasync.utils.jobId(j) for j in jobs]
    assert ids[0] not in dispatcher.jobs and ids[3] in dispatcher.jobs
    record = dispatcher.jobs[ids[3]]
    assert (record['queue'], record['agent'], record['reassigned']) == (
        '', 'main', False)
    info = dispatcher.getJobInfo(*ids[3])
    assert sorted(info) == ['call', 'completed', 'failed', 'poll id',
                            'quota names', 'result', 'started', 'thread']
    assert dispatcher.polls.size == 5 and len(dispatcher.polls) <= 5
    assert isinstance(dispatcher.polls.first(),
                      zcasync.dispatcher.PollInfo)
    pools = dispatcher.queues
    assert list(pools) == [''] and list(pools['']) == ['main']
    assert pools['']['main'].size == 3  # the agent's size


def test_wait_for_times_out(started, conn, queue, capsys):
    reactor, dispatcher = started
    job = queue.put(zcasync.job.Job(mul, 1, 2),
                    begin_after=zcasync.utils.now() + datetime.timedelta(
                        days=1))
    conn.transaction_manager.commit()
    reactor.wait_for(job, attempts=2, seconds=0.05)
    assert capsys.readouterr().out == 'TIME OUT\n'
    assert job.status == zcasync.interfaces.PENDING


def test_wait_helpers_take_seconds(started, conn, queue):
    reactor, dispatcher = started
    job = queue.put(zcasync.job.Job(mul, 21, 2))
    conn.transaction_manager.commit()
    assert zcasync.testing.wait_for_result(job, seconds=WAIT) == 42
    count = len(dispatcher.polls)
    reactor.time_flies(dispatcher.poll_interval)  # the heartbeat poll
    poll = zcasync.testing.get_poll(dispatcher, count - 1, seconds=WAIT)
    assert '' in poll
    with pytest.raises(AssertionError, match='never completed'):
        zcasync.testing.wait_for_result(
            queue.put(zcasync.job.Job(mul, 1, 1), begin_after=(
                zcasync.utils.now() + datetime.timedelta(days=1))),
            seconds=0.05)


def test_tear_down_dispatcher_with_the_test_reactor(db):
    reactor = zcasync.testing.Reactor()
    dispatcher = zcasync.dispatcher.Dispatcher(db, reactor,
                                               uuid=uuid.uuid4())
    dispatcher.activate()
    reactor.start()
    zcasync.testing.tear_down_dispatcher(dispatcher)
    assert not reactor.running and not dispatcher.activated
    assert zcasync.utils.getClock() is zcasync.utils.systemClock


def test_dt_to_long():
    # the key zc.async 1.5 wrote for a job completed at 09:10:05.75 (in
    # the fixture database made by zc.async): dt_to_long + 15
    when = datetime.datetime(2011, 6, 15, 9, 10, 5, 750000,
                             tzinfo=datetime.timezone.utc)
    assert zcasync.utils.dt_to_long(when) + 15 == 6416214193833052415
    naive = when.replace(tzinfo=None)
    assert zcasync.utils.dt_to_long(naive) == zcasync.utils.dt_to_long(when)
    later = when + datetime.timedelta(microseconds=1)
    assert zcasync.utils.dt_to_long(later) == \
        zcasync.utils.dt_to_long(when) - 16
    assert zcasync.utils.long_to_dt(6416214193833052415) == when
