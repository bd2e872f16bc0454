"""zcasync.testing: the virtual-time Reactor, the wait helpers and
immediate mode (runQueuedJobs)."""
import datetime
import threading
import uuid

import pytest

import zcasync
from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.job import Job
from zcasync.queue import Queue


# --- job functions (stored by reference) -----------------------------------

def double(value):
    return value * 2


def fail(message):
    raise RuntimeError(message)


def handOff(value):
    """Queue another job and return it: the result is that job's."""
    return zcasync.local.getJob().queue.put(Job(double, value))


def whereAmI():
    job = zcasync.local.getJob()
    errors = []
    for getter in (zcasync.local.getDispatcher, zcasync.local.getReactor,
                   zcasync.local.getAgentName):
        try:
            getter()
        except ValueError as e:
            errors.append(str(e))
    return (job.queue.name, job.agent.name, errors)


def describe(result):
    if utils.isFailure(result):
        return 'failed: %s' % result.getErrorMessage()
    return 'got %r' % (result,)


# --- the Reactor -------------------------------------------------------------

def test_callLater_runs_in_time_order_at_its_time():
    reactor = testing.Reactor()
    ran = []

    def record(name):
        ran.append((name, reactor.seconds()))
    reactor.callLater(3, record, 'c')
    reactor.callLater(1, record, 'a1')
    reactor.callLater(2, record, 'b')
    reactor.callLater(1, record, name='a2')
    assert [c.getTime() for c in reactor.pending()] == [1, 1, 2, 3]
    reactor.advance(1.5)
    assert ran == [('a1', 1), ('a2', 1)]
    assert reactor.seconds() == 1.5
    assert [c.getTime() for c in reactor.pending()] == [2, 3]
    reactor.advance(10)
    assert ran[2:] == [('b', 2), ('c', 3)]
    assert reactor.seconds() == 11.5
    assert reactor.pending() == []


def test_calls_scheduled_by_calls():
    reactor = testing.Reactor()
    ran = []

    def first():
        ran.append(('first', reactor.seconds()))
        reactor.callLater(0, lambda: ran.append(('now', reactor.seconds())))
        reactor.callLater(4, lambda: ran.append(('later', reactor.seconds())))
    reactor.callLater(1, first)
    reactor.advance(3)
    assert ran == [('first', 1), ('now', 1)]
    reactor.advance(2)
    assert ran[2:] == [('later', 5)]


def test_cancel():
    reactor = testing.Reactor()
    ran = []
    call = reactor.callLater(1, ran.append, 'cancelled')
    kept = reactor.callLater(1, ran.append, 'kept')
    assert call.active()
    call.cancel()
    assert not call.active()
    with pytest.raises(ValueError, match='already cancelled'):
        call.cancel()
    assert reactor.pending() == [kept]
    reactor.advance(1)
    assert ran == ['kept']
    assert not kept.active()
    with pytest.raises(ValueError, match='already called'):
        kept.cancel()


def test_pump_runs_what_is_due_and_what_threads_handed_over():
    reactor = testing.Reactor()
    ran = []
    reactor.callLater(0, ran.append, 'due')
    reactor.callLater(1, ran.append, 'not yet')
    main = threading.get_ident()

    def handOver():
        reactor.callFromThread(lambda: ran.append(
            ('from thread', threading.get_ident() == main)))
    thread = threading.Thread(target=handOver)
    thread.start()
    thread.join()
    assert ran == []  # nothing runs until the reactor is driven
    assert reactor.pump() == 1
    assert ran == [('from thread', True), 'due']
    assert reactor.pump() == 0
    assert reactor.seconds() == 0


def test_callInThread_uses_a_real_thread():
    reactor = testing.Reactor()
    seen = []
    thread = reactor.callInThread(
        lambda x: seen.append((x, threading.get_ident())), 'x')
    thread.join(5)
    assert seen == [('x', thread.ident)]
    assert thread.ident != threading.get_ident()


def test_callWhenRunning_and_shutdown_triggers():
    reactor = testing.Reactor()
    ran = []
    reactor.callWhenRunning(ran.append, 'queued')
    assert ran == [] and not reactor.running
    reactor.addSystemEventTrigger('after', 'shutdown', ran.append, 'after')
    reactor.addSystemEventTrigger('during', 'shutdown', ran.append, 'during')
    reactor.addSystemEventTrigger('before', 'shutdown', ran.append, 'before')
    removed = reactor.addSystemEventTrigger(
        'before', 'shutdown', ran.append, 'removed')
    reactor.removeSystemEventTrigger(removed)
    reactor.start()
    assert reactor.running
    assert ran == ['queued']
    reactor.callWhenRunning(ran.append, 'at once')
    assert ran == ['queued', 'at once']
    reactor.stop()
    assert not reactor.running
    assert ran[2:] == ['before', 'during', 'after']


def test_wait_pumps_the_reactor_started_in_this_thread():
    reactor = testing.Reactor()
    reactor.start()
    done = []
    try:
        thread = threading.Thread(
            target=reactor.callFromThread, args=(done.append, 'pumped'))
        thread.start()
        assert testing.wait(lambda: done, 5) == ['pumped']
    finally:
        reactor.stop()
    # a stopped reactor is not pumped any more
    reactor.callFromThread(done.append, 'again')
    with pytest.raises(AssertionError):
        testing.wait(lambda: len(done) > 1, 0.05)


def test_wait_does_not_pump_a_reactor_of_another_thread():
    reactor = testing.Reactor()
    thread = threading.Thread(target=reactor.start)
    thread.start()
    thread.join()
    done = []
    reactor.callFromThread(done.append, 'x')
    with pytest.raises(AssertionError):
        testing.wait(lambda: done, 0.05)
    reactor.pump()
    assert done == ['x']


# --- wait helpers ------------------------------------------------------------

def test_wait_returns_the_value_or_fails_clearly():
    values = iter([0, None, 'yes'])
    assert testing.wait(lambda: next(values), 5, interval=0) == 'yes'
    with pytest.raises(AssertionError) as raised:
        testing.wait(lambda: False, 0.05, 'the sky never fell')
    assert str(raised.value) == 'the sky never fell (after 0.05 s)'
    state = {'n': 0}

    def later():
        state['n'] += 1
        return 'checked %d times' % state['n']
    with pytest.raises(AssertionError, match=r'checked \d+ times'):
        testing.wait(lambda: False and state, 0.05, later)


def test_wait_for_result_and_start_time_out_with_the_status(conn, queue):
    job = queue.put(Job(double, 2))
    conn.transaction_manager.commit()
    with pytest.raises(AssertionError) as raised:
        testing.wait_for_result(job, timeout=0.05)
    assert str(raised.value) == 'job never completed: %r is %s (after ' \
        '0.05 s)' % (job, interfaces.PENDING)
    with pytest.raises(AssertionError, match='job never started: .* is '
                       + interfaces.PENDING):
        testing.wait_for_start(job, timeout=0.05)
    with pytest.raises(AssertionError, match="annotation 'x' never "
                       "appeared on"):
        testing.wait_for_annotation(job, 'x', timeout=0.05)


def test_wait_helpers_see_other_connections(db, conn, queue):
    import transaction
    job = queue.put(Job(double, 21))
    conn.transaction_manager.commit()
    tm = transaction.TransactionManager()
    other = db.open(transaction_manager=tm)
    try:
        testing.runQueuedJobs(other)
        other.get(job._p_oid).annotations['note'] = 'hi'
        tm.commit()
    finally:
        tm.abort()
        other.close()
    testing.wait_for_start(job, timeout=5)
    assert testing.wait_for_result(job, timeout=5) == 42
    assert testing.wait_for_annotation(job, 'note', timeout=5) == 'hi'


def test_get_poll(db, conn, queue):
    reactor = testing.Reactor()
    dispatcher = dispatchermodule.Dispatcher(db, reactor, poll_interval=1,
                                             uuid=uuid.uuid4())
    dispatcher.polls = dispatchermodule.PollHistory(3)
    with pytest.raises(AssertionError, match='never had more than 0 polls'):
        testing.get_poll(dispatcher, 0, timeout=0.05)
    dispatcher.activate()
    reactor.start()  # the first poll
    try:
        assert testing.get_poll(dispatcher, 0, timeout=1) == {'': {}}
        with pytest.raises(AssertionError,
                           match='no new poll from dispatcher %s'
                           % dispatcher.UUID):
            testing.get_poll(dispatcher, timeout=0.05)
        reactor.advance(2)
        assert len(dispatcher.polls) == 3  # the history is full
        newest = dispatcher.polls.first()
        reactor.callLater(0, dispatcher.poll)  # due: pumped by the wait
        poll = testing.get_poll(dispatcher, timeout=1)
        assert poll is not newest and poll is dispatcher.polls.first()
    finally:
        reactor.stop()
    testing.wait_for_deactivation(dispatcher, timeout=0.05)


def test_wait_for_deactivation_times_out(db):
    reactor = testing.Reactor()
    dispatcher = dispatchermodule.Dispatcher(db, reactor, uuid=uuid.uuid4())
    dispatcher.activate()
    try:
        with pytest.raises(AssertionError, match='dispatcher %s never '
                           'deactivated' % dispatcher.UUID):
            testing.wait_for_deactivation(dispatcher, timeout=0.05)
    finally:
        reactor.start()
        reactor.stop()


def test_wait_for_death(conn, queue):
    agents = testing.activeRegistration(queue, uuid.uuid4())
    conn.transaction_manager.commit()
    with pytest.raises(AssertionError, match='dispatcher %s never became '
                       'dead' % agents.UUID):
        testing.wait_for_death(agents, timeout=0.05)
    agents.last_ping.value = agents.activated = utils.now() - \
        datetime.timedelta(minutes=2)
    conn.transaction_manager.commit()
    testing.wait_for_death(agents, timeout=1)


def test_fixedClock():
    start = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    clock = testing.fixedClock(start)
    assert clock() == start
    assert clock.advance(90) == start + datetime.timedelta(seconds=90)
    previous = utils.setClock(clock)
    try:
        assert utils.now() == start + datetime.timedelta(seconds=90)
    finally:
        utils.setClock(previous)


# --- immediate mode ----------------------------------------------------------

def test_runQueuedJobs_runs_jobs_in_order(conn, queue):
    jobs = [queue.put(Job(double, n)) for n in range(3)]
    # not committed yet: runQueuedJobs commits first
    ran = testing.runQueuedJobs(conn)
    assert ran == jobs
    assert [j.result for j in jobs] == [0, 2, 4]
    assert all(j.status == interfaces.COMPLETED for j in jobs)
    assert len(queue) == 0
    assert testing.runQueuedJobs(conn) == []


def test_runQueuedJobs_jobs_queued_by_jobs_and_callbacks(conn, queue):
    outer = queue.put(Job(handOff, 21))
    callback = outer.addCallback(Job(describe))
    conn.transaction_manager.commit()
    ran = testing.runQueuedJobs(conn)
    assert ran[0] is outer
    assert len(ran) == 2  # the outer job and the one it queued
    inner = ran[1]
    assert inner.result == 42
    assert outer.result == 42
    assert callback.result == 'got 42'
    assert callback.status == interfaces.COMPLETED


def test_runQueuedJobs_failures(conn, queue):
    bad = queue.put(Job(fail, 'broken'))
    errback = bad.addCallbacks(failure=describe)
    good = queue.put(Job(double, 1))
    conn.transaction_manager.commit()
    assert testing.runQueuedJobs(conn) == [bad, good]
    assert utils.isFailure(bad.result)
    assert bad.result.check(RuntimeError)
    assert errback.result == 'failed: broken'
    assert good.result == 2


def test_runQueuedJobs_leaves_scheduled_jobs_until_due(conn, queue):
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    clock = testing.FixedClock(now)
    utils.setClock(clock)
    later = queue.put(Job(double, 5),
                      begin_after=now + datetime.timedelta(hours=1))
    due = queue.put(Job(double, 6))
    assert testing.runQueuedJobs(conn) == [due]
    assert later.status == interfaces.PENDING
    assert later.result is None
    clock.advance(3600)
    assert testing.runQueuedJobs(conn) == [later]
    assert later.result == 10


def test_runQueuedJobs_with_a_db_and_queue_names(db, conn, queue):
    queues = conn.root()[interfaces.KEY]
    other = queues['other'] = Queue()
    mine = queue.put(Job(double, 1))
    theirs = other.put(Job(double, 2))
    conn.transaction_manager.commit()
    ran = testing.runQueuedJobs(db, queue_names=['other'])
    assert [j._p_oid for j in ran] == [theirs._p_oid]
    conn.transaction_manager.begin()
    assert theirs.result == 4
    assert mine.status == interfaces.PENDING
    assert len(queue) == 1


def test_runQueuedJobs_without_queues(conn):
    assert testing.runQueuedJobs(conn) == []


def test_jobs_in_immediate_mode_know_their_queue_not_a_dispatcher(
        conn, queue):
    job = queue.put(Job(whereAmI))
    testing.runQueuedJobs(conn)
    queue_name, agent_name, errors = job.result
    assert (queue_name, agent_name) == ('', testing.IMMEDIATE_AGENT)
    assert len(errors) == 3
    for error in errors:
        assert 'only available inside a job that a dispatcher runs' in error
        assert 'whereAmI' in error
        assert 'immediate mode' in error
