"""Event-driven dispatch: a dispatcher polls as soon as a committed
transaction touches its queue -- in the same process (FileStorage), from
another ZEO client, and from another RelStorage client (PostgreSQL
LISTEN/NOTIFY).  Every dispatcher here has a poll interval of 60 s, so a
job that completes within the test's timeout was started by an event, not
by the heartbeat."""
import datetime
import threading
import uuid

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import twisted.internet.selectreactor

from zcasync import invalidations
from zcasync import testing
from zcasync import utils
from zcasync.agent import Agent
from zcasync.dispatcher import Dispatcher
from zcasync.interfaces import KEY, COMPLETED
from zcasync.job import Job
from zcasync.queue import Queue, Queues

HEARTBEAT = 60


def stamp():
    return utils.now()


class Running:
    """A dispatcher on a SelectReactor in a thread."""

    def __init__(self, db):
        self.reactor = twisted.internet.selectreactor.SelectReactor()
        self.dispatcher = Dispatcher(db, self.reactor,
                                     poll_interval=HEARTBEAT,
                                     uuid=uuid.uuid4())

        def run():
            self.dispatcher.activate()
            self.reactor.run(installSignalHandlers=False)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        testing.get_poll(self.dispatcher, 0)

    def stop(self, wait=True):
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)
        assert not self.thread.is_alive()
        if not wait:
            return
        # worker threads close their connections as they leave: wait, so
        # that none outlives its database
        testing.wait(lambda: not [t for t in threading.enumerate()
                                  if t.name.startswith('zcasync ')],
                     message='worker threads did not stop')


def setUpQueue(conn, dispatcher):
    tm = conn.transaction_manager
    queues = conn.root()[KEY] = Queues()
    queue = queues[''] = Queue()
    tm.commit()

    def registered():
        tm.begin()
        return dispatcher.UUID in queue.dispatchers
    testing.wait(registered, timeout=10,
                 message='the root change did not make the dispatcher poll')
    queue.dispatchers[dispatcher.UUID]['main'] = Agent(size=2)
    tm.commit()
    return queue


def wait_completed(conn, job, timeout=10):
    tm = conn.transaction_manager

    def done():
        tm.begin()
        return job.status == COMPLETED
    testing.wait(done, timeout, 'job %r did not complete' % (job,))
    return job.result


def test_same_process_put_starts_at_once(db):
    running = Running(db)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        queue = setUpQueue(conn, running.dispatcher)
        polls = len(running.dispatcher.polls)
        job = queue.put(Job(stamp))
        conn.transaction_manager.commit()
        committed = utils.now()
        started = wait_completed(conn, job)
        assert started >= committed - datetime.timedelta(seconds=1)
        # the poll that claimed it is recorded, as every poll is
        claimed = [p for p in running.dispatcher.polls
                   if p.get('') and p['']['main']['new jobs']]
        assert [p['']['main']['new jobs'] for p in claimed] == [
            [(job._p_oid, 'unnamed')]]
        assert len(running.dispatcher.polls) > polls
        conn.close()
    finally:
        running.stop()


def test_scheduled_job_starts_when_due_not_at_the_heartbeat(db):
    running = Running(db)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        queue = setUpQueue(conn, running.dispatcher)
        due = utils.now() + datetime.timedelta(seconds=0.5)
        job = queue.put(Job(stamp), begin_after=due)
        conn.transaction_manager.commit()
        started = wait_completed(conn, job, timeout=10)
        assert started >= due
        conn.close()
    finally:
        running.stop()


def test_room_freed_by_a_completion_starts_the_next_job(db):
    running = Running(db)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        queue = setUpQueue(conn, running.dispatcher)
        agent = queue.dispatchers[running.dispatcher.UUID]['main']
        agent.size = 1
        jobs = [queue.put(Job(stamp)) for i in range(5)]
        conn.transaction_manager.commit()
        for job in jobs:
            wait_completed(conn, job)
        starts = [job.result for job in jobs]
        assert starts == sorted(starts)  # one at a time, in order
        conn.close()
    finally:
        running.stop()


def test_watch_hears_commits_of_other_connections(db):
    heard = []
    watch = invalidations.watch(db, lambda oids, inst: heard.append(
        set(oids)))
    assert watch is not None
    conn = db.open(transaction_manager=transaction.TransactionManager())
    root = conn.root()
    root['x'] = 1
    conn.transaction_manager.commit()
    assert heard and root._p_oid in heard[-1]
    watch.close()
    heard.clear()
    root['x'] = 2
    conn.transaction_manager.commit()
    assert heard == []
    conn.close()


def _two_clients(make_db):
    """A dispatcher on one client, a producer on another; the job must
    start long before the heartbeat."""
    worker_db, producer_db = make_db(), make_db()
    running = Running(worker_db)
    try:
        conn = producer_db.open(
            transaction_manager=transaction.TransactionManager())
        queue = setUpQueue(conn, running.dispatcher)
        job = queue.put(Job(stamp))
        conn.transaction_manager.commit()
        started = wait_completed(conn, job, timeout=15)
        assert isinstance(started, datetime.datetime)
        conn.close()
    finally:
        running.stop()
        worker_db.close()
        producer_db.close()


def test_zeo_client_hears_another_clients_put(tmp_path):
    import ZEO
    address, stop = ZEO.server(str(tmp_path / 'Data.fs'), threaded=False)
    try:
        _two_clients(lambda: ZEO.DB(address, wait_timeout=10))
    finally:
        stop()


def _postgres():
    try:
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=5432,
                                user='postgres', dbname='postgres',
                                connect_timeout=3)
    except Exception as e:
        pytest.skip('PostgreSQL is not reachable on 127.0.0.1:5432 '
                    '(user postgres, trust auth): %s' % (e,))
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_database():
    admin = _postgres()
    name = 'zcasync_test_%s' % uuid.uuid4().hex[:12]
    with admin.cursor() as cursor:
        cursor.execute('CREATE DATABASE %s' % name)
    try:
        yield "host=127.0.0.1 port=5432 user=postgres dbname=%s" % name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                'WHERE datname = %s AND pid <> pg_backend_pid()', (name,))
            cursor.execute('DROP DATABASE IF EXISTS %s' % name)
        admin.close()


def test_relstorage_client_hears_another_clients_put(pg_database):
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    from zcasync import pgnotify

    def make_db():
        options = Options(keep_history=False)
        adapter = PostgreSQLAdapter(dsn=pg_database, options=options)
        db = ZODB.DB(RelStorage(adapter, options=options))
        # the explicit, once-per-database step (zcasync pg-notify install)
        pgnotify.installTrigger(pg_database)
        return db
    _two_clients(make_db)


RELEASE = threading.Event()


def blockUntilReleased():
    RELEASE.wait(30)
    return utils.now()


def forA(job):
    return job.annotations.get('for') == 'A'


def forB(job):
    return job.annotations.get('for') == 'B'


def test_quota_room_freed_in_another_dispatcher_starts_a_job(db):
    """B waits on a quota that A's job fills; when A's job completes, B
    hears of it (the queue has quotas, so B watches every agent) and starts
    its job long before its heartbeat."""
    RELEASE.clear()
    a, b = Running(db), Running(db)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        tm = conn.transaction_manager
        queue = setUpQueue(conn, a.dispatcher)
        testing.wait(lambda: (tm.begin(), b.dispatcher.UUID in
                              queue.dispatchers)[1], timeout=10)
        queue.dispatchers[a.dispatcher.UUID]['main'].filter = forA
        queue.dispatchers[b.dispatcher.UUID]['main'] = Agent(filter=forB)
        queue.quotas.create('pdf', size=1)
        tm.commit()
        first = Job(blockUntilReleased)
        first.annotations['for'] = 'A'
        first.quota_names = ('pdf',)
        second = Job(stamp)
        second.annotations['for'] = 'B'
        second.quota_names = ('pdf',)
        queue.put(first)
        tm.commit()
        testing.wait_for_start(first)
        queue.put(second)
        tm.commit()
        assert second.status == 'pending-status'
        RELEASE.set()
        released = wait_completed(conn, first)
        started = wait_completed(conn, second, timeout=15)
        assert started >= released
        assert second.agent.parent.UUID == b.dispatcher.UUID
        conn.close()
    finally:
        RELEASE.set()
        a.stop(wait=False)
        b.stop()
