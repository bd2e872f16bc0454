"""The format version in the root (``zcasync.stable``): recorded where
zcasync installs its queues, checked where a process starts working on a
database; a database without it (written before it existed, or queues an
application made itself) is taken as the current format."""
import logging

import pytest
import transaction
import zope.component
import zope.component.event  # noqa: F401 (handlers hear zope.event)
import zope.event

from zcasync import interfaces
from zcasync import stable
from zcasync import subscribers
from zcasync import testing
from zcasync.cli import db as cli_db
from zcasync.cli import jobs as cli_jobs
from zcasync.cli import worker as cli_worker
from zcasync.cli.common import CommandError, EXIT_FORMAT
from zcasync.interfaces import KEY
from zcasync.job import Job

NEWER = stable.FORMAT_VERSION + 1


def newer(conn):
    conn.root()[stable.FORMAT_KEY] = NEWER
    conn.transaction_manager.commit()


def add(a, b):
    return a + b


def test_mark_records_and_check_accepts_the_current_format():
    root = {}
    assert stable.formatOf(root) is None
    stable.checkFormat(root)  # nothing recorded: the current format
    stable.markFormat(root)
    assert root == {stable.FORMAT_KEY: stable.FORMAT_VERSION}
    stable.checkFormat(root)
    stable.markFormat(root)
    assert stable.formatOf(root) == stable.FORMAT_VERSION


def test_a_newer_format_is_refused_and_never_lowered():
    root = {stable.FORMAT_KEY: NEWER}
    with pytest.raises(interfaces.DatabaseFormatError) as info:
        stable.checkFormat(root)
    message = str(info.value)
    assert '\n' not in message
    assert 'format %d' % NEWER in message and 'upgrade zcasync' in message
    with pytest.raises(interfaces.DatabaseFormatError):
        stable.markFormat(root)
    assert root == {stable.FORMAT_KEY: NEWER}


def test_unmarked_queues_of_an_earlier_version_keep_working(conn, queue):
    del conn.root()[stable.FORMAT_KEY]  # as written before the key existed
    job = queue.put(Job(add, 1, 2))
    conn.transaction_manager.commit()
    testing.runQueuedJobs(conn)
    assert job.result == 3
    assert stable.FORMAT_KEY not in conn.root()  # reading marks nothing


def test_the_queue_installer_marks_and_checks(db, conn):
    zope.component.provideHandler(subscribers.queue_installer)
    zope.event.notify(interfaces.DatabaseOpened(db))
    conn.transaction_manager.begin()
    assert stable.formatOf(conn.root()) == stable.FORMAT_VERSION
    assert '' in conn.root()[KEY]
    newer(conn)
    with pytest.raises(interfaces.DatabaseFormatError):
        zope.event.notify(interfaces.DatabaseOpened(db))
    conn.transaction_manager.begin()
    assert stable.formatOf(conn.root()) == NEWER


def test_the_worker_setup_marks_and_the_jobs_command_marks_new_queues(
        db, conn):
    import uuid
    cli_worker.setupDatabase(conn, uuid.uuid4(), [''], 'main', 1, 1, 3)
    assert stable.formatOf(conn.root()) == stable.FORMAT_VERSION
    del conn.root()[stable.FORMAT_KEY]
    conn.transaction_manager.commit()
    session = cli_jobs.Session.__new__(cli_jobs.Session)
    session.conn, session.tm = conn, conn.transaction_manager
    session.queue('reports', create=True)
    assert stable.formatOf(conn.root()) == stable.FORMAT_VERSION


def test_the_command_line_check_is_one_line_and_changes_nothing(db, conn):
    cli_db.checkFormat(conn)
    newer(conn)
    with pytest.raises(CommandError) as info:
        cli_db.checkFormat(conn)
    assert info.value.code == EXIT_FORMAT
    assert 'newer than the %d' % stable.FORMAT_VERSION in info.value.message
    conn.transaction_manager.begin()
    assert list(conn.root().keys()) == [stable.FORMAT_KEY]


def test_a_dispatcher_refuses_to_activate_on_a_newer_format(db, conn,
                                                             caplog):
    from zcasync.dispatcher import Dispatcher
    newer(conn)
    dispatcher = Dispatcher(db, testing.Reactor(), poll_interval=1)
    with caplog.at_level(logging.CRITICAL, 'zcasync.events'):
        with pytest.raises(interfaces.DatabaseFormatError):
            dispatcher.activate()
    assert not dispatcher.activated
    assert 'cannot run on this database' in caplog.text
    conn.transaction_manager.begin()
    assert list(conn.root().keys()) == [stable.FORMAT_KEY]


def test_a_dispatcher_stops_polling_when_the_format_changes(db, conn, queue,
                                                            caplog):
    import uuid
    from zcasync.agent import Agent
    from zcasync.dispatcher import Dispatcher
    me = uuid.uuid4()
    queue.dispatchers.register(me)
    queue.dispatchers[me]['main'] = Agent(size=1)
    first = queue.put(Job(add, 1, 1))
    conn.transaction_manager.commit()
    reactor = testing.Reactor()
    dispatcher = Dispatcher(db, reactor, poll_interval=1, uuid=me)
    dispatcher.activate()
    try:
        reactor.start()
        assert testing.wait_for_result(first) == 2
        newer(conn)
        second = queue.put(Job(add, 2, 2))
        conn.transaction_manager.commit()
        with caplog.at_level(logging.CRITICAL, 'zcasync.events'):
            reactor.time_flies(3)
        assert 'newer than the' in caplog.text
        assert dict(dispatcher.polls.first()) == {}  # no queue polled
        conn.transaction_manager.begin()
        assert second.status == interfaces.PENDING
    finally:
        reactor.stop()
