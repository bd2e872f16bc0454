"""Process start-up as a zc.async 1.5 application does it, after renaming
``zc.async`` to ``zcasync``: the subscribers, ``configure.start``, the
dispatcher registry, ``IQueue`` adaptation, ``IUUID``, the agent
helpers (issue 11, "Process start-up")."""
import os
import signal
import threading
import uuid

import persistent
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
import zope.component.eventtesting
import zope.event

import zcasync.agent
import zcasync.configure
import zcasync.dispatcher
import zcasync.instanceuuid
import zcasync.interfaces
import zcasync.job
import zcasync.queue
import zcasync.subscribers
import zcasync.testing

WAIT = 20


def mul(a, b):
    return a * b


class Document(persistent.Persistent):
    pass


@pytest.fixture
def events():
    zope.component.eventtesting.setUp()
    yield lambda iface: zope.component.eventtesting.getEvents(iface)
    zope.component.eventtesting.clearEvents()


def fileDB(tmp_path, name='Data.fs', **kw):
    return ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / name)), **kw)


@pytest.fixture
def tear_down():
    """Tear down every dispatcher a test started, as zc.async users do."""
    yield
    for dispatcher in list(zcasync.dispatcher._dispatchers.values()):
        zcasync.testing.tear_down_dispatcher(dispatcher)


# --- QueueInstaller ---------------------------------------------------------

def test_queue_installer_creates_queues_once_and_fires_events(
        tmp_path, events):
    db = fileDB(tmp_path)
    zope.component.provideHandler(zcasync.subscribers.queue_installer)
    zope.event.notify(zcasync.interfaces.DatabaseOpened(db))
    conn = db.open()
    queues = conn.root()[zcasync.interfaces.KEY]
    assert isinstance(queues, zcasync.queue.Queues)
    assert list(queues) == ['']
    added = events(zcasync.interfaces.IObjectAdded)
    assert [(type(e.object).__name__, e.name) for e in added] == [
        ('Queues', zcasync.interfaces.KEY), ('Queue', '')]
    assert added[1].parent._p_oid == queues._p_oid
    # a second opening adds only what is missing
    zope.component.eventtesting.clearEvents()
    installer = zcasync.subscribers.QueueInstaller(queues=('', 'reports'))
    installer(zcasync.interfaces.DatabaseOpened(db))
    transaction.begin()
    assert list(queues) == ['', 'reports']
    assert queues['reports'].name == 'reports'
    assert [e.name for e in events(zcasync.interfaces.IObjectAdded)] == [
        'reports']
    transaction.abort()
    conn.close()
    db.close()


def test_queue_installer_refuses_a_string(tmp_path):
    with pytest.raises(TypeError, match="not the string 'reports'"):
        zcasync.subscribers.QueueInstaller(queues='reports')


def test_multidb_queue_installer_puts_the_queues_in_the_async_database(
        tmp_path):
    databases = {}
    main = fileDB(tmp_path, 'main.fs', databases=databases,
                  database_name='main')
    fileDB(tmp_path, 'async.fs', databases=databases, database_name='async')
    zcasync.subscribers.multidb_queue_installer(
        zcasync.interfaces.DatabaseOpened(main))
    conn = main.open()
    queues = conn.root()[zcasync.interfaces.KEY]
    assert queues._p_jar.db().database_name == 'async'
    assert queues['']._p_jar.db().database_name == 'async'
    # a job put through the main connection lives in the async database
    zcasync.configure.base()
    job = zcasync.interfaces.IQueue(conn).put(zcasync.job.Job(mul, 6, 7))
    transaction.commit()
    assert job._p_jar.db().database_name == 'async'
    transaction.abort()
    conn.close()
    main.close()


# --- IQueue, IUUID, agents --------------------------------------------------

def test_IQueue_adapts_a_connection_and_a_persistent_object(tmp_path):
    zcasync.configure.base()
    db = fileDB(tmp_path)
    zcasync.subscribers.queue_installer(zcasync.interfaces.DatabaseOpened(db))
    conn = db.open()
    queue = conn.root()[zcasync.interfaces.KEY]['']
    assert zcasync.interfaces.IQueue(conn) is queue
    document = conn.root()['doc'] = Document()
    transaction.commit()
    assert zcasync.interfaces.IQueue(document) is queue
    with pytest.raises(TypeError, match='not stored'):
        zcasync.interfaces.IQueue(Document())
    transaction.abort()
    conn.close()
    db.close()


def test_IUUID_is_the_instance_uuid():
    zcasync.configure.base()
    zcasync.instanceuuid.getUUID()
    assert zope.component.getUtility(zcasync.interfaces.IUUID) == \
        zcasync.instanceuuid.UUID


def test_chooseFirst_and_the_main_agent_handler(db, conn, queue):
    zope.component.provideHandler(
        zcasync.agent.addMainAgentActivationHandler)
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    registration = queue.dispatchers[uid]
    registration.activate()
    assert list(registration) == ['main']
    registration['chosen'] = zcasync.agent.Agent(
        chooser=zcasync.agent.chooseFirst)
    first = queue.put(zcasync.job.Job(mul, 1, 2))
    queue.put(zcasync.job.Job(mul, 3, 4))
    conn.transaction_manager.commit()
    assert registration['chosen'].claimJob() is first


def test_agent_installer(db, conn, queue, events):
    zope.component.provideHandler(zcasync.subscribers.agent_installer)
    zope.component.provideHandler(zcasync.subscribers.AgentInstaller(
        'reports', size=1, queue_names=('reports',)))
    uid = uuid.uuid4()
    queue.dispatchers.register(uid)
    registration = queue.dispatchers[uid]
    registration.activate()
    assert list(registration) == ['main']  # not a 'reports' queue
    assert registration['main'].size == 3
    added = events(zcasync.interfaces.IObjectAdded)
    assert [(e.name, e.parent) for e in added] == [('main', registration)]
    registration.deactivate()
    registration.activate()  # present already: nothing added
    assert len(events(zcasync.interfaces.IObjectAdded)) == 1
    with pytest.raises(ValueError, match='chooser or a filter'):
        zcasync.subscribers.AgentInstaller(
            'x', chooser=zcasync.agent.chooseFirst, filter=bool)


# --- the dispatcher registry ------------------------------------------------

def test_dispatchers_register_themselves(db):
    reactor = zcasync.testing.Reactor()
    dispatcher = zcasync.dispatcher.Dispatcher(db, reactor)
    assert zcasync.dispatcher.get() is dispatcher
    assert zcasync.dispatcher.get(dispatcher.UUID) is dispatcher
    other = zcasync.dispatcher.Dispatcher(db, reactor, uuid=uuid.uuid4())
    assert zcasync.dispatcher.get(other.UUID) is other
    assert zcasync.dispatcher.get(uuid.uuid4()) is None
    assert zcasync.dispatcher.pop(other.UUID) is other
    assert zcasync.dispatcher.get(other.UUID) is None
    with pytest.raises(KeyError):
        zcasync.dispatcher.pop(other.UUID)
    zcasync.dispatcher.clear()
    assert zcasync.dispatcher.get() is None


def test_an_activated_dispatcher_is_not_replaced(db):
    reactor = zcasync.testing.Reactor()
    first = zcasync.dispatcher.Dispatcher(db, reactor, uuid=uuid.uuid4())
    first.activate()
    reactor.start()
    try:
        with pytest.raises(ValueError, match='already registered in this '
                           'process and activated'):
            zcasync.dispatcher.Dispatcher(db, reactor, uuid=first.UUID)
        assert zcasync.dispatcher.get(first.UUID) is first
    finally:
        reactor.stop()
    again = zcasync.dispatcher.Dispatcher(db, reactor, uuid=first.UUID)
    assert zcasync.dispatcher.get(first.UUID) is again


# --- the threaded dispatcher and configure.start --------------------------

def test_threaded_dispatcher_installer(tmp_path, tear_down):
    db = fileDB(tmp_path)
    zcasync.subscribers.queue_installer(zcasync.interfaces.DatabaseOpened(db))
    zope.component.provideHandler(zcasync.subscribers.agent_installer)
    installer = zcasync.subscribers.ThreadedDispatcherInstaller(
        poll_interval=0.5)
    installer(zcasync.interfaces.DatabaseOpened(db))
    dispatcher = zcasync.dispatcher.get()
    assert dispatcher.thread.daemon and dispatcher.thread.is_alive()
    assert dispatcher.poll_interval == 0.5
    assert sorted(dispatcher.signal_handlers) == [signal.SIGINT,
                                                  signal.SIGTERM]
    zcasync.testing.get_poll(dispatcher, 0, seconds=WAIT)
    conn = db.open()
    job = conn.root()[zcasync.interfaces.KEY][''].put(
        zcasync.job.Job(mul, 6, 7))
    transaction.commit()
    assert zcasync.testing.wait_for_result(job, seconds=WAIT) == 42
    zcasync.testing.tear_down_dispatcher(dispatcher)
    assert not dispatcher.thread.is_alive() and not dispatcher.activated
    assert dispatcher.signal_handlers == {}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    transaction.abort()
    conn.close()
    db.close()


def test_SIGTERM_stops_the_dispatcher_then_calls_the_previous_handler(
        tmp_path, tear_down):
    received = []

    def recording(signum, frame):
        received.append(signum)
    previous = signal.signal(signal.SIGTERM, recording)
    try:
        db = fileDB(tmp_path)
        installer = zcasync.subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.5)
        installer(zcasync.interfaces.DatabaseOpened(db))
        dispatcher = zcasync.dispatcher.get()
        old, installed = dispatcher.signal_handlers[signal.SIGTERM]
        assert old is recording
        assert signal.getsignal(signal.SIGTERM) is installed
        zcasync.testing.wait(lambda: dispatcher.polls.first() is not None,
                             WAIT, 'no poll')
        os.kill(os.getpid(), signal.SIGTERM)
        zcasync.testing.wait(lambda: received, WAIT, 'no signal handled')
        assert received == [signal.SIGTERM]
        assert not dispatcher.thread.is_alive()
        assert dispatcher.getStatusInfo()['status'] == 'STOPPED'
        zcasync.subscribers.restore_signal_handlers(dispatcher)
        assert signal.getsignal(signal.SIGTERM) is recording
        db.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_installer_called_outside_the_main_thread_installs_no_handler(
        tmp_path, tear_down):
    db = fileDB(tmp_path)
    installer = zcasync.subscribers.ThreadedDispatcherInstaller(
        poll_interval=0.5)
    thread = threading.Thread(
        target=installer, args=(zcasync.interfaces.DatabaseOpened(db),))
    thread.start()
    thread.join(WAIT)
    dispatcher = zcasync.dispatcher.get()
    assert dispatcher.signal_handlers == {}
    zcasync.testing.tear_down_dispatcher(dispatcher)
    db.close()


def test_configure_start(tmp_path, tear_down):
    db = fileDB(tmp_path)
    zcasync.configure.start(db, poll_interval=0.5, agent_size=2)
    dispatcher = zcasync.dispatcher.get()
    assert dispatcher.db is db and dispatcher.thread.is_alive()
    conn = db.open()
    queue = zcasync.interfaces.IQueue(conn)
    job = queue.put(zcasync.job.Job(mul, 14, 3))
    transaction.commit()
    assert zcasync.testing.wait_for_result(job, seconds=WAIT) == 42
    registration = queue.dispatchers[dispatcher.UUID]
    assert registration.parent is queue
    assert registration['main'].size == 2
    assert zope.component.getUtility(zcasync.interfaces.IUUID) == \
        dispatcher.UUID
    zcasync.testing.tear_down_dispatcher(dispatcher)
    transaction.abort()
    conn.close()
    db.close()
