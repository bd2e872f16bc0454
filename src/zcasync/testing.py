"""Test support: a virtual-time reactor, wait helpers and immediate mode.

- ``Reactor``: a deterministic reactor with the five ``IReactor`` methods.
  Time is virtual: nothing scheduled runs until the test calls
  ``advance(seconds)`` (or ``pump()`` for what is due now and what other
  threads handed over with ``callFromThread``).  ``callInThread`` uses real
  threads.
- Wait helpers (``wait_for_result``, ``wait_for_start``,
  ``wait_for_annotation``, ``get_poll``, ``wait_for_deactivation``,
  ``wait_for_death``) re-check until a condition holds or a timeout
  passes, then fail with a clear ``AssertionError``.  While they wait they
  pump every running test ``Reactor`` started in the calling thread, so a
  worker thread waiting on the reactor is not left hanging.  They begin a
  new transaction on the object's connection to see other commits (which
  aborts uncommitted changes there, like ``transaction.begin()``).
- Immediate mode, for an application's own unit tests:
  ``runQueuedJobs(conn)`` runs every due job queued in the database,
  synchronously, callbacks included, without threads or a reactor.
"""
import heapq
import itertools
import threading
import time
import uuid
import weakref

import transaction

from zcasync import interfaces
from zcasync import utils

_reactors = weakref.WeakSet()


class DelayedCall:

    def __init__(self, reactor, when, func, args, kw):
        self.reactor = reactor
        self.time = when
        self.func, self.args, self.kw = func, args, kw
        self.called = self.cancelled = False

    def active(self):
        return not (self.called or self.cancelled)

    def cancel(self):
        if not self.active():
            raise ValueError('call already %s' % (
                'called' if self.called else 'cancelled'))
        self.cancelled = True

    def getTime(self):
        return self.time


class Reactor:
    """A deterministic reactor with virtual time (see the module doc)."""

    def __init__(self):
        self.time = 0.0
        self.running = False
        self._calls = []
        self._counter = itertools.count()
        self._from_threads = []
        self._lock = threading.Lock()
        self._triggers = {}
        self._when_running = []
        self.thread = None

    def seconds(self):
        return self.time

    # -- the five IReactor methods -----------------------------------

    def callLater(self, seconds, func, *args, **kw):
        call = DelayedCall(self, self.time + seconds, func, args, kw)
        heapq.heappush(self._calls, (call.time, next(self._counter), call))
        return call

    def callFromThread(self, func, *args, **kw):
        with self._lock:
            self._from_threads.append((func, args, kw))

    def callInThread(self, func, *args, **kw):
        thread = threading.Thread(target=func, args=args, kwargs=kw,
                                  daemon=True)
        thread.start()
        return thread

    def addSystemEventTrigger(self, phase, event, func, *args, **kw):
        key = (phase, event)
        entry = (func, args, kw)
        self._triggers.setdefault(key, []).append(entry)
        return (key, entry)

    def callWhenRunning(self, func, *args, **kw):
        if self.running:
            return func(*args, **kw)
        self._when_running.append((func, args, kw))

    # -- driving ----------------------------------------------------------

    def removeSystemEventTrigger(self, trigger):
        key, entry = trigger
        self._triggers.get(key, []).remove(entry)

    def start(self):
        """Start 'running' in the calling thread: run callWhenRunning
        calls.  Then drive with advance() and pump()."""
        self.running = True
        self.thread = threading.get_ident()
        _reactors.add(self)
        calls, self._when_running = self._when_running, []
        for func, args, kw in calls:
            func(*args, **kw)

    def stop(self):
        """Run the before-shutdown triggers and stop."""
        for phase in ('before', 'during', 'after'):
            for func, args, kw in list(
                    self._triggers.get((phase, 'shutdown'), [])):
                func(*args, **kw)
        self.running = False
        _reactors.discard(self)

    def pump(self):
        """Run what other threads handed over and what is due now."""
        with self._lock:
            calls, self._from_threads = self._from_threads, []
        for func, args, kw in calls:
            func(*args, **kw)
        while self._calls and self._calls[0][0] <= self.time:
            when, _, call = heapq.heappop(self._calls)
            if call.active():
                call.called = True
                call.func(*call.args, **call.kw)
        return len(calls)

    def advance(self, seconds=0):
        """Move virtual time forward, running calls as they come due."""
        target = self.time + seconds
        self.pump()
        while self._calls and self._calls[0][0] <= target:
            self.time = max(self.time, self._calls[0][0])
            self.pump()
        self.time = target
        self.pump()

    def pending(self):
        """Delayed calls still to run, in time order."""
        return [c for _, _, c in sorted(self._calls) if c.active()]


def pumpReactors():
    me = threading.get_ident()
    for reactor in list(_reactors):
        if reactor.running and reactor.thread == me:
            reactor.pump()


def wait(condition, timeout=10, message='condition never held',
         interval=0.01):
    """Re-check `condition()` until it returns a true value (returned) or
    `timeout` seconds pass (AssertionError with `message`, or with what
    `message()` returns then when it is callable)."""
    deadline = time.monotonic() + timeout
    while True:
        pumpReactors()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            if callable(message):
                message = message()
            raise AssertionError('%s (after %s s)' % (message, timeout))
        time.sleep(interval)


def _sync(ob):
    jar = ob._p_jar
    if jar is not None:
        jar.transaction_manager.begin()


def wait_for_result(job, timeout=10):
    """The job's result once it is COMPLETED."""
    def done():
        _sync(job)
        return job.status == interfaces.COMPLETED
    wait(done, timeout,
         lambda: 'job never completed: %r is %s' % (job, job.status))
    return job.result


def wait_for_start(job, timeout=10):
    """Wait until the job has started (is ACTIVE or later)."""
    def started():
        _sync(job)
        return job.status in (interfaces.ACTIVE, interfaces.CALLBACKS,
                              interfaces.COMPLETED)
    wait(started, timeout,
         lambda: 'job never started: %r is %s' % (job, job.status))


def wait_for_annotation(job, name, timeout=10):
    def present():
        _sync(job)
        return name in job.annotations
    wait(present, timeout, 'annotation %r never appeared on %r'
         % (name, job))
    return job.annotations[name]


def get_poll(dispatcher, count=None, timeout=10):
    """The newest poll once there are more than `count` polls; by default
    the next poll (one newer than the newest now, which also works once
    the bounded history is full)."""
    if count is None:
        previous = dispatcher.polls.first()

        def newer():
            poll = dispatcher.polls.first()
            return (poll,) if poll is not previous else None  # {} is false
        return wait(newer, timeout, 'no new poll from dispatcher %s'
                    % dispatcher.UUID)[0]
    wait(lambda: len(dispatcher.polls) > count, timeout,
         'dispatcher %s never had more than %d polls'
         % (dispatcher.UUID, count))
    return dispatcher.polls.first()


def wait_for_deactivation(dispatcher, timeout=10):
    wait(lambda: not dispatcher.activated, timeout,
         'dispatcher %s never deactivated' % dispatcher.UUID)


def wait_for_death(dispatcher_agents, timeout=30):
    def dead():
        _sync(dispatcher_agents)
        return dispatcher_agents.dead
    wait(dead, timeout, 'dispatcher %s never became dead'
         % dispatcher_agents.UUID)


def activeRegistration(queue, uuid):
    """The registration of dispatcher `uuid` in `queue`, registered if
    needed and activated (or pinged, when it looks dead) so that its agents
    claim jobs: for tests that drive agents by hand."""
    agents = queue.dispatchers.get(uuid)
    if agents is None:
        queue.dispatchers.register(uuid)
        agents = queue.dispatchers[uuid]
    if not agents.activated:
        agents.activate()
    elif agents.dead:
        agents._setPing(utils.now())
    return agents


# --- immediate mode ------------------------------------------------------

IMMEDIATE_UUID = uuid.UUID(int=0)
IMMEDIATE_AGENT = 'immediate'


def _immediateAgent(queue):
    from zcasync.agent import Agent
    agents = queue.dispatchers.get(IMMEDIATE_UUID)
    if agents is None:
        queue.dispatchers.register(IMMEDIATE_UUID)
        agents = queue.dispatchers[IMMEDIATE_UUID]
    agent = agents.get(IMMEDIATE_AGENT)
    if agent is None:
        agent = agents[IMMEDIATE_AGENT] = Agent(size=1)
    return agent


def _immediateClaim(agent):
    """What ``agent.claimJob()`` does, for a registration that is never
    activated (no dispatcher runs here: dashboards show it stopped)."""
    if len(agent) >= agent.size:
        return None
    job = agent.queue.claim(agent.filter)
    if job is not None:
        agent._add(job)
    return job


def runQueuedJobs(conn, queue_names=None, limit=10000):
    """Immediate mode: run, in this thread, every due job queued in the
    database of `conn` (a connection, or a DB), until none is left; jobs
    that jobs queue run too, and callbacks run as part of their job.
    Returns the jobs that ran, in order.

    The jobs are claimed by an agent named 'immediate' of a dispatcher
    with the all-zero UUID, so ``job.queue`` and ``job.agent`` work as
    they do under a real dispatcher.  Commits pending changes first.
    """
    own = not hasattr(conn, 'root')
    if own:
        tm = transaction.TransactionManager()
        conn = conn.open(transaction_manager=tm)
    tm = conn.transaction_manager
    ran = []
    try:
        tm.commit()
        while len(ran) < limit:
            queues = conn.root().get(interfaces.KEY)
            if queues is None:
                break
            job = None
            for name, queue in queues.items():
                if queue_names is not None and name not in queue_names:
                    continue
                job = _immediateClaim(_immediateAgent(queue))
                if job is not None:
                    break
            if job is None:
                tm.commit()
                break
            tm.commit()
            job()
            ran.append(job)
    finally:
        if own:
            tm.abort()
            conn.close()
    return ran


def fixedClock(start=None):
    """A settable clock for ``zcasync.utils.setClock``: call ``.advance(
    seconds)`` or set ``.now``."""
    return FixedClock(start)


class FixedClock:

    def __init__(self, start=None):
        self.now = start or utils.now()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        import datetime
        self.now += datetime.timedelta(seconds=seconds)
        return self.now
