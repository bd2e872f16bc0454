"""The dispatcher with three reactors: Twisted's SelectReactor in a thread,
Twisted's asyncio reactor in a thread (on an event loop made there), and
zcasync.testing.Reactor driven by the test.  Each runs a few jobs,
including one that talks through live annotations, and ends with
deactivation and the database's pool size restored."""
import threading
import uuid

import pytest

import zcasync
from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import testing
from zcasync.job import Job

from test_dispatcher_support import (
    WAIT, Running, addAgent, commit, sync, waitForRecord, waitForWorkers,
    double, fail)


def converse():
    """Say hello live, wait for a reply, say what the reactor was."""
    zcasync.local.setLiveAnnotation('hello', 'from the job')
    reply = zcasync.local.getLiveAnnotation('reply', timeout=WAIT, poll=0.05)
    return '%s via %s' % (reply, type(zcasync.local.getReactor()).__name__)


def exercise(conn, queue, dispatcher, until=None):
    """Run the jobs; `until(condition, message)` drives the reactor when
    the test thread is the reactor's."""
    until = until or (lambda condition, message: testing.wait(
        condition, WAIT, message))

    def completed(job):
        sync(conn)
        return job.status == interfaces.COMPLETED

    addAgent(conn, dispatcher, 'main', size=2)
    plain = queue.put(Job(double, 21))
    broken = queue.put(Job(fail, 'on purpose'))
    talking = queue.put(Job(converse))
    commit(conn)

    def said_hello():
        sync(conn)
        return 'hello' in talking.annotations
    until(said_hello, 'the job never said hello')
    assert talking.annotations['hello'] == 'from the job'
    assert talking.status == interfaces.ACTIVE
    talking.annotations['reply'] = 'hi there'
    commit(conn)
    for job in (plain, broken, talking):
        until(lambda: completed(job), 'job %r never completed' % job)
        waitForRecord(dispatcher, job)
    assert plain.result == 42
    assert broken.result.check(RuntimeError)
    stats = dispatcher.getStatistics()
    assert (stats['started'], stats['successful'], stats['failed']) == \
        (3, 2, 1)
    return talking.result


@pytest.mark.parametrize('kind, reactor_class', [
    ('select', 'SelectReactor'), ('asyncio', 'AsyncioSelectorReactor')])
def test_twisted_reactor_in_a_thread(db, conn, queue, kind, reactor_class):
    original = db.getPoolSize()
    running = Running(db, kind=kind).start()
    try:
        assert type(running.reactor).__name__ == reactor_class
        assert testing.get_poll(running.dispatcher, 0, WAIT) == {'': {}}
        assert db.getPoolSize() == original + 1
        result = exercise(conn, queue, running.dispatcher)
        assert result == 'hi there via %s' % reactor_class
        assert db.getPoolSize() == original + 1 + 2
    finally:
        running.stop()  # checks the pool size and deactivation
    assert running.dispatcher.getStatusInfo()['status'] == 'STOPPED'
    sync(conn)
    assert not queue.dispatchers[running.uuid].activated
    assert db.getPoolSize() == original
    if kind == 'asyncio':
        assert running.loop_closed is True


def test_test_reactor_driven_by_the_test(db, conn, queue):
    original = db.getPoolSize()
    threads_before = set(threading.enumerate())
    reactor = testing.Reactor()
    dispatcher = dispatchermodule.Dispatcher(db, reactor, poll_interval=5,
                                             uuid=uuid.uuid4())
    dispatcher.activate()
    assert dispatcher.getStatusInfo()['status'] == 'STARTING'
    assert db.getPoolSize() == original + 1
    reactor.start()
    try:
        assert dispatcher.polls.first() == {'': {}}

        def until(condition, message):
            def step():
                reactor.advance(dispatcher.poll_interval)
                return condition()
            return testing.wait(step, WAIT, message)
        result = exercise(conn, queue, dispatcher, until)
        assert result == 'hi there via Reactor'
        assert db.getPoolSize() == original + 1 + 2
        # virtual time passed in poll-interval steps
        assert reactor.seconds() >= dispatcher.poll_interval
    finally:
        reactor.stop()  # the before-shutdown trigger deactivates
        waitForWorkers(threads_before)
    assert not dispatcher.activated
    assert dispatcher.getStatusInfo()['status'] == 'STOPPED'
    assert db.getPoolSize() == original
    sync(conn)
    assert not queue.dispatchers[dispatcher.UUID].activated
