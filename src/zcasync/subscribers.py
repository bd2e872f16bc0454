"""Start-up subscribers, as zc.async had them: register them as handlers
(``zope.component.provideHandler``), then announce the opened database
with ``zope.event.notify(zcasync.interfaces.DatabaseOpened(db))``, or let
``zcasync.configure.start(db)`` do all of it.

- ``QueueInstaller(queues=('',), db_name=None)``: on a database-opened
  event, create the queues mapping at ``root[zcasync.interfaces.KEY]``
  (in the database `db_name` of a multi-database set-up, referred to
  from the main root) and the named queues that are missing, firing an
  ``ObjectAdded`` event for each; ``queue_installer`` and
  ``multidb_queue_installer`` (``db_name='async'``) are instances.
- ``ThreadedDispatcherInstaller(poll_interval=5, reactor_factory=...,
  uuid=None)``: a dispatcher on a reactor of its own, run in a daemon
  thread (``dispatcher.thread``).  Called in the main thread it installs
  SIGINT and SIGTERM handlers that stop the reactor (the dispatcher
  deactivates, handing its unfinished jobs to recovery), wait a little for
  the thread and then do what the previous handler did; they are recorded
  in ``dispatcher.signal_handlers`` (signal number -> (previous handler,
  installed handler)) and ``restore_signal_handlers(dispatcher)`` puts
  the previous ones back.
- ``TwistedDispatcherInstaller(poll_interval=5)``: a dispatcher on
  Twisted's global reactor, which the application runs.
- ``AgentInstaller(agent_name, chooser=None, size=3, queue_names=None,
  filter=None)``: when a dispatcher activates in a queue (of
  `queue_names`, or any), add the agent if it is missing;
  ``agent_installer`` adds 'main'.
"""
import logging
import signal
import threading

import transaction
import zope.component
import zope.event

from zcasync import interfaces
from zcasync import utils

#: Seconds a signal handler waits for the dispatcher's thread to stop.
STOP_TIMEOUT = 10


def _selectReactor():
    import twisted.internet.selectreactor
    return twisted.internet.selectreactor.SelectReactor()


class QueueInstaller:
    """See the module docstring."""

    def __init__(self, queues=('',), db_name=None):
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)
        if isinstance(queues, str):
            raise TypeError('queues is a sequence of queue names, not the '
                            'string %r; write (%r,)' % (queues, queues))
        self.queues = tuple(queues)
        self.db_name = db_name

    def __call__(self, event):
        from zcasync.queue import Queue, Queues
        tm = transaction.TransactionManager()
        conn = event.database.open(transaction_manager=tm)
        try:
            added = []
            for attempt in tm.attempts(5):
                with attempt:
                    added = self._install(conn, Queue, Queues)
            for event_ in added:
                zope.event.notify(event_)
        finally:
            tm.abort()
            conn.close()

    def _install(self, conn, Queue, Queues):
        from zcasync import stable
        added = []
        root = conn.root()
        stable.checkFormat(root)
        queues = root.get(interfaces.KEY)
        if queues is None:
            queues = Queues()
            if self.db_name is not None:
                other = conn.get_connection(self.db_name)
                stable.checkFormat(other.root())
                other.add(queues)
                other.root()[interfaces.KEY] = queues
            root[interfaces.KEY] = queues
            added.append(interfaces.ObjectAdded(queues, root, interfaces.KEY))
        jar = queues._p_jar or conn
        for name in self.queues:
            if name not in queues:
                queue = Queue()
                jar.add(queue)
                queues[name] = queue
                added.append(interfaces.ObjectAdded(queue, queues, name))
        if added:
            stable.markFormat(root)
            if queues._p_jar is not None and queues._p_jar is not conn:
                stable.markFormat(queues._p_jar.root())
        return added


queue_installer = QueueInstaller()
multidb_queue_installer = QueueInstaller(db_name='async')


def _stopper(dispatcher, signum, previous):
    def handler(sig, frame):
        utils.log.info('signal %d: stopping dispatcher %s', sig,
                       dispatcher.UUID)
        reactor = dispatcher.reactor
        try:
            reactor.callFromThread(reactor.stop)
        except Exception:
            pass  # not running any more
        thread = getattr(dispatcher, 'thread', None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
        if callable(previous):
            return previous(sig, frame)
        if previous == signal.SIG_IGN:
            return None
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + sig)
    return handler


def restore_signal_handlers(dispatcher):
    """Put back the signal handlers that ``ThreadedDispatcherInstaller``
    replaced (those still in place)."""
    handlers = getattr(dispatcher, 'signal_handlers', None) or {}
    for signum, (previous, installed) in list(handlers.items()):
        if signal.getsignal(signum) is installed:
            signal.signal(signum, previous)
        del handlers[signum]


class ThreadedDispatcherInstaller:
    """See the module docstring."""

    def __init__(self, poll_interval=5, reactor_factory=_selectReactor,
                 uuid=None):
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)
        self.poll_interval = poll_interval
        self.reactor_factory = reactor_factory
        self.uuid = uuid

    def __call__(self, event):
        from zcasync.dispatcher import Dispatcher
        reactor = self.reactor_factory()
        dispatcher = Dispatcher(event.database, reactor,
                                poll_interval=self.poll_interval,
                                uuid=self.uuid)

        def run():
            dispatcher.activate()
            reactor.run(installSignalHandlers=False)
        thread = dispatcher.thread = threading.Thread(
            target=run, name='zcasync dispatcher %s' % dispatcher.UUID,
            daemon=True)
        dispatcher.signal_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                handler = _stopper(dispatcher, signum, previous)
                signal.signal(signum, handler)
                dispatcher.signal_handlers[signum] = (previous, handler)
        else:
            utils.safeLog(
                utils.log, logging.WARNING,
                'dispatcher %s started outside the main thread: no SIGINT/'
                'SIGTERM handlers installed; stop it with '
                'reactor.callFromThread(reactor.stop)', dispatcher.UUID)
        thread.start()
        return dispatcher


class TwistedDispatcherInstaller:
    """See the module docstring."""

    def __init__(self, poll_interval=5):
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)
        self.poll_interval = poll_interval

    def __call__(self, event):
        from zcasync.dispatcher import Dispatcher
        dispatcher = Dispatcher(event.database,
                                poll_interval=self.poll_interval)
        dispatcher.activate()  # starts when the application runs the reactor
        return dispatcher


class AgentInstaller:
    """See the module docstring."""

    def __init__(self, agent_name, chooser=None, size=3, queue_names=None,
                 filter=None):
        zope.component.adapter(interfaces.IDispatcherActivated)(self)
        if chooser is not None and filter is not None:
            raise ValueError('give the agent a chooser or a filter, not '
                             'both: a chooser picks jobs itself')
        if isinstance(queue_names, str):
            raise TypeError('queue_names is a sequence of names (or None '
                            'for all queues), not the string %r'
                            % (queue_names,))
        self.agent_name = agent_name
        self.chooser = chooser
        self.size = size
        self.queue_names = None if queue_names is None else \
            frozenset(queue_names)
        self.filter = filter

    def __call__(self, event):
        from zcasync.agent import Agent
        registration = event.object
        queue = registration.queue
        if self.agent_name in registration or (
                self.queue_names is not None and
                (queue is None or queue.name not in self.queue_names)):
            return
        agent = Agent(chooser=self.chooser, filter=self.filter,
                      size=self.size)
        registration[self.agent_name] = agent
        zope.event.notify(
            interfaces.ObjectAdded(agent, registration, self.agent_name))


agent_installer = AgentInstaller('main')
