"""The worker command's database setup and UUID-clash checks, in process
on a FileStorage (the processes tier runs real workers).

- ``setupDatabase`` creates what is missing and updates this worker's
  settings, without duplicating anything on a second start;
- ``waitForPredecessor`` lets a worker start when its UUID's old record is
  stale (dead, or dying without pings), and refuses when another live
  process keeps pinging with that UUID;
- after the first poll, a queue the dispatcher refused (``None`` in the
  poll) stops the worker with exit code 8 -- checked with a real
  Dispatcher driven by zcasync.testing's virtual-time Reactor.
"""
import argparse
import datetime
import threading
import uuid as uuidmodule

import pytest
import transaction

from zcasync import utils
from zcasync.cli import worker as cli_worker
from zcasync.cli.common import CommandError, EXIT_UUID_CLASH, EXIT_OK
from zcasync.interfaces import KEY

UUID = uuidmodule.UUID('0f0e0d0c-0b0a-0908-0706-050403020100')


def setup(conn, names=('',), size=3, ping=0.5, death=2.0, agent='main'):
    cli_worker.setupDatabase(conn, UUID, list(names), agent, size, ping,
                             death)


def test_setup_creates_queues_registration_and_agent(conn):
    setup(conn, names=('', 'reports'))
    queues = conn.root()[KEY]
    assert sorted(queues.keys()) == ['', 'reports']
    for name in ('', 'reports'):
        agents = queues[name].dispatchers[UUID]
        assert agents.ping_interval == datetime.timedelta(seconds=0.5)
        assert agents.ping_death_interval == datetime.timedelta(seconds=2)
        assert agents.activated is None
        assert [(n, a.size) for n, a in agents.items()] == [('main', 3)]


def test_a_second_setup_updates_settings_and_duplicates_nothing(conn):
    setup(conn)
    first = conn.root()[KEY]['']
    agent = first.dispatchers[UUID]['main']
    setup(conn, size=5, ping=1, death=4)
    queue = conn.root()[KEY]['']
    assert queue is first
    assert queue.dispatchers.keys() == [UUID]
    assert queue.dispatchers[UUID]['main'] is agent
    assert agent.size == 5
    assert queue.dispatchers[UUID].ping_death_interval == \
        datetime.timedelta(seconds=4)
    setup(conn, agent='other', size=1)
    assert sorted(queue.dispatchers[UUID].keys()) == ['main', 'other']


def otherProcess(db):
    tm = transaction.TransactionManager()
    return db.open(transaction_manager=tm)


def markActivated(db, death=2.0, ago=0.0):
    """What another process using UUID would have committed."""
    other = otherProcess(db)
    agents = other.root()[KEY][''].dispatchers[UUID]
    stamp = utils.now() - datetime.timedelta(seconds=ago)
    agents.activated = agents.last_ping.value = stamp
    agents.ping_death_interval = datetime.timedelta(seconds=death)
    other.transaction_manager.commit()
    return other


def test_no_predecessor_and_a_dead_one_let_the_worker_start(db, conn):
    setup(conn)
    cli_worker.waitForPredecessor(conn, UUID, [''])   # not activated
    markActivated(db, death=1.0, ago=5.0).close()     # long dead
    cli_worker.waitForPredecessor(conn, UUID, [''])


def test_a_predecessor_that_stopped_pinging_is_waited_for(db, conn):
    setup(conn)
    markActivated(db, death=0.5).close()  # a crash, just now
    cli_worker.waitForPredecessor(conn, UUID, [''])
    agents = conn.root()[KEY][''].dispatchers[UUID]
    assert agents.dead  # it returned only once the record was dead


def test_a_live_process_with_the_same_uuid_is_a_clash(db, conn):
    setup(conn)
    other = markActivated(db, death=30)
    stop = threading.Event()

    def ping():  # the other process keeps pinging
        while not stop.wait(0.05):
            other.transaction_manager.begin()
            record = other.root()[KEY][''].dispatchers[UUID]
            record.last_ping.value = utils.now()
            other.transaction_manager.commit()
    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        with pytest.raises(CommandError) as info:
            cli_worker.waitForPredecessor(conn, UUID, [''])
    finally:
        stop.set()
        pinger.join()
        other.close()
    assert info.value.code == EXIT_UUID_CLASH
    assert 'is in use by another live process' in info.value.message


def worker(names=('',)):
    return cli_worker.Worker(argparse.Namespace(queue=list(names)))


def test_a_queue_refused_at_the_first_poll_stops_the_worker(db, conn,
                                                            capsys):
    from zcasync.dispatcher import Dispatcher
    from zcasync.testing import Reactor
    setup(conn)
    other = markActivated(db, death=30)  # alive, as far as anyone knows
    other.close()
    reactor = Reactor()
    running = worker()
    running.attach(Dispatcher(db, reactor, poll_interval=1, uuid=UUID),
                   reactor)
    running.dispatcher.activate()
    reactor.start()
    reactor.advance(0.1)
    assert running.dispatcher.polls.first()[''] is None
    assert running.exit_code == EXIT_UUID_CLASH
    assert not reactor.running  # stopped, and the dispatcher deactivated
    assert 'zcasync worker: error: UUID %s is in use' % UUID in \
        capsys.readouterr().err
    conn.transaction_manager.begin()
    # the other process's record is untouched
    assert conn.root()[KEY][''].dispatchers[UUID].activated is not None


def test_an_accepted_queue_passes_the_first_poll_check(db, conn):
    from zcasync.dispatcher import Dispatcher
    from zcasync.testing import Reactor
    setup(conn)
    reactor = Reactor()
    running = worker()
    running.attach(Dispatcher(db, reactor, poll_interval=1, uuid=UUID),
                   reactor)
    running.dispatcher.activate()
    reactor.start()
    try:
        reactor.advance(0.1)
        assert running.checked == {''}
        assert running.exit_code == EXIT_OK
        assert reactor.running
    finally:
        reactor.stop()
