"""Helpers shared by the dispatcher integration tests (no tests here).

``Running`` starts a real dispatcher driven by a reactor running in its
own thread (Twisted's SelectReactor, or Twisted's asyncio reactor on a
loop created in that thread) and stops it again, checking that the
database's pool size is back to what it was.  The module-level job
functions below are stored by reference, so worker threads find them by
importing this module.
"""
import asyncio
import collections
import logging
import queue as queuemodule
import threading
import uuid

from zcasync import agent as agentmodule
from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import testing
from zcasync import utils

WAIT = 20  # seconds: generous, the machine is shared

# --- job functions (stored by reference) ----------------------------------

#: name -> threading.Event, released by the tests
EVENTS = collections.defaultdict(threading.Event)
#: name -> number of calls so far
CALLS = collections.Counter()


def double(value):
    return value * 2


def echo(value):
    return value


def fail(message):
    raise RuntimeError(message)


def blockOn(name, result='released'):
    """Count the call, then wait (at most WAIT s) for EVENTS[name]."""
    CALLS[name] += 1
    EVENTS[name].wait(WAIT)
    return result


def blockFirstCall(name):
    """The first call blocks on EVENTS[name]; later calls return at once."""
    CALLS[name] += 1
    if CALLS[name] == 1:
        EVENTS[name].wait(WAIT)
        return 'first call'
    return 'call %d' % CALLS[name]


class Interrupt(BaseException):
    """Like KeyboardInterrupt: not an Exception, kills a worker thread."""


def dieFirstCall(name, exception='SystemExit'):
    CALLS[name] += 1
    if CALLS[name] == 1:
        if exception == 'SystemExit':
            raise SystemExit('worker thread killed on purpose')
        raise Interrupt('worker thread killed on purpose')
    return 'survived call %d' % CALLS[name]


def resetJobState():
    for event in EVENTS.values():
        event.set()
    EVENTS.clear()
    CALLS.clear()


# --- running a dispatcher ------------------------------------------------

class Running:
    """A dispatcher on `db` driven by a Twisted reactor in a thread.

    ``kind`` is 'select' or 'asyncio'.  Use as a context manager; on exit
    the reactor stops (deactivating the dispatcher) and the pool size of
    the database must be what it was before.
    """

    def __init__(self, db, kind='select', poll_interval=0.05, uuid_=None,
                 setup=None):
        self.db = db
        self.setup = setup
        self.kind = kind
        self.poll_interval = poll_interval
        self.uuid = uuid_ or uuid.uuid4()
        self.dispatcher = None
        self.reactor = None
        self.thread = None
        self.pool_size = db.getPoolSize()
        self.loop_closed = None
        self._ready = queuemodule.Queue()

    def _run(self):
        loop = None
        try:
            if self.kind == 'asyncio':
                from twisted.internet import asyncioreactor
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                reactor = asyncioreactor.AsyncioSelectorReactor(loop)
            else:
                from twisted.internet import selectreactor
                reactor = selectreactor.SelectReactor()
            dispatcher = dispatchermodule.Dispatcher(
                self.db, reactor, poll_interval=self.poll_interval,
                uuid=self.uuid)
            if self.setup is not None:
                self.setup(dispatcher)
            dispatcher.activate()
        except BaseException as e:
            self._ready.put(e)
            raise
        self._ready.put((reactor, dispatcher))
        try:
            reactor.run(installSignalHandlers=False)
        finally:
            if loop is not None:
                loop.close()
                self.loop_closed = loop.is_closed()

    def start(self):
        self.threads_before = set(threading.enumerate())
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='reactor %s' % self.kind)
        self.thread.start()
        started = self._ready.get(timeout=WAIT)
        if isinstance(started, BaseException):
            raise started
        self.reactor, self.dispatcher = started
        return self

    def stop(self):
        """Stop the reactor (which deactivates the dispatcher)."""
        if self.thread is None:
            return
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), 'the reactor did not stop'
        self.thread = None
        assert not self.dispatcher.activated
        waitForWorkers(self.threads_before)
        assert self.db.getPoolSize() == self.pool_size, (
            'pool size %d after stopping, %d before activating'
            % (self.db.getPoolSize(), self.pool_size))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        resetJobState()  # let blocked jobs end
        self.stop()


def firstPoll(dispatcher, timeout=WAIT):
    return testing.get_poll(dispatcher, 0, timeout=timeout)


def waitForPoll(dispatcher, predicate, timeout=WAIT, message=None):
    """The newest poll once it satisfies `predicate`."""
    def check():
        poll = dispatcher.polls.first()
        return poll if poll is not None and predicate(poll) else None
    return testing.wait(check, timeout, message or
                        'no poll of dispatcher %s satisfied the condition'
                        % dispatcher.UUID)


def findPoll(dispatcher, predicate, timeout=WAIT):
    """Any poll in the history satisfying `predicate` (waiting for it)."""
    def check():
        for poll in dispatcher.polls:
            if predicate(poll):
                return poll
        return None
    return testing.wait(check, timeout, 'no poll of dispatcher %s matched'
                        % dispatcher.UUID)


def jobInfo(dispatcher, job):
    oid, database_name = utils.jobId(job)
    return dispatcher.getJobInfo(oid, database_name)


def waitForRecord(dispatcher, job, timeout=WAIT):
    """The dispatcher's record of `job` once it has completed."""
    def check():
        try:
            info = jobInfo(dispatcher, job)
        except ValueError:
            return None
        return info if info['completed'] else None
    return testing.wait(check, timeout, 'the dispatcher never recorded the '
                        'completion of %r' % (job,))


def addAgent(conn, dispatcher, name='main', size=3, queue_name=''):
    """Give `dispatcher` an agent in a queue, once it registered there."""
    tm = conn.transaction_manager

    def registered():
        tm.begin()
        queue = conn.root()[interfaces.KEY][queue_name]
        return dispatcher.UUID in queue.dispatchers
    testing.wait(registered, WAIT, 'dispatcher %s never registered in queue '
                 '%r' % (dispatcher.UUID, queue_name))
    queue = conn.root()[interfaces.KEY][queue_name]
    agents = queue.dispatchers[dispatcher.UUID]
    agent = agents[name] = agentmodule.Agent(size=size)
    tm.commit()
    return agent


def waitForWorkers(threads_before, timeout=WAIT):
    """Wait until the worker threads started since `threads_before` (a
    set of threads) have ended, so that none outlives its database."""
    def workers():
        return [t for t in threading.enumerate()
                if t.name.startswith('zcasync ') and t not in threads_before]
    testing.wait(lambda: not workers(), timeout,
                 lambda: 'worker threads still running: %s' % workers())


def workerThreads(queue_name, agent_name):
    prefix = 'zcasync %s/%s' % (queue_name or "''", agent_name)
    return [t for t in threading.enumerate()
            if t.name == prefix and t.is_alive()]


class Capture(logging.Handler):
    """Collect the records of the zcasync loggers."""

    def __init__(self, *names):
        super().__init__(logging.DEBUG)
        self.records = []
        self._lock2 = threading.Lock()
        self.loggers = [logging.getLogger(n) for n in
                        (names or ('zcasync.events', 'zcasync.trace'))]
        self._levels = {}

    def emit(self, record):
        with self._lock2:
            self.records.append(record)

    def install(self):
        for logger in self.loggers:
            self._levels[logger] = logger.level
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self)
        return self

    def uninstall(self):
        for logger in self.loggers:
            logger.removeHandler(self)
            logger.setLevel(self._levels.get(logger, logging.NOTSET))

    def snapshot(self):
        with self._lock2:
            return list(self.records)

    def find(self, level, text, timeout=WAIT):
        def check():
            for record in self.snapshot():
                if record.levelno == level and text in record.getMessage():
                    return record
            return None
        return testing.wait(check, timeout, 'no %s record containing %r'
                            % (logging.getLevelName(level), text))

    def messages(self, level=None):
        return [r.getMessage() for r in self.snapshot()
                if level is None or r.levelno == level]


def commit(conn):
    conn.transaction_manager.commit()


def sync(conn):
    conn.transaction_manager.begin()

