"""Test support: a virtual-time reactor, wait helpers and immediate mode.

- ``Reactor``: a deterministic reactor with the five ``IReactor`` methods.
  Time is virtual: nothing scheduled runs until the test calls
  ``advance(seconds)`` (or ``pump()`` for what is due now and what other
  threads handed over with ``callFromThread``).  ``callInThread`` uses real
  threads.  zc.async's test reactor API works too: ``start()`` freezes
  the clock zcasync reads (unless the test already set one with
  ``zcasync.utils.setClock``) and ``stop()`` releases it; virtual time
  is that clock, so ``time_flies(seconds)`` (run the calls due within
  `seconds`, in time order, moving the clock to each; returns how many
  ran), ``time_passes()`` (run one due call), ``set_now(dt)`` and
  ``wait_for(*jobs)`` move both.
- ``set_now(dt)``, ``setUpDatetime()``, ``tearDownDatetime()``: a frozen
  clock for zcasync (through ``zcasync.utils.setClock``; nothing patches
  ``datetime``); ``tear_down_dispatcher(dispatcher)`` stops a dispatcher
  and its thread.
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
from __future__ import annotations

import datetime
import heapq
import itertools
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

import ZODB

import transaction

from zcasync import interfaces
from zcasync import utils

if TYPE_CHECKING:
    from zcasync.dispatcher import Dispatcher
    from zcasync.job import Job
    from zcasync.registry import DispatcherAgents

_reactors: weakref.WeakSet[Reactor] = weakref.WeakSet()


class DelayedCall:

    def __init__(self, reactor: Reactor, when: float,
                 func: Callable[..., Any], args: tuple[Any, ...],
                 kw: dict[str, Any]) -> None:
        self.reactor = reactor
        self.time = when
        self.func, self.args, self.kw = func, args, kw
        self.called = self.cancelled = False

    def active(self) -> bool:
        return not (self.called or self.cancelled)

    def cancel(self) -> None:
        if not self.active():
            raise ValueError('call already %s' % (
                'called' if self.called else 'cancelled'))
        self.cancelled = True

    def getTime(self) -> float:
        return self.time


# --- a frozen clock for zcasync (zc.async's set_now & co) -----------------

_frozen = None


def _aware(dt):
    if dt.tzinfo is None or dt.utcoffset() is None:
        return dt.replace(tzinfo=utils.UTC)  # naive: UTC, as in zc.async
    return dt.astimezone(utils.UTC)


def setUpDatetime(now=None):
    """Freeze the clock zcasync reads (``zcasync.utils.now``) at `now`
    (default: the current time); move it with ``set_now``."""
    global _frozen
    _frozen = FixedClock(_aware(now) if now is not None else None)
    utils.setClock(_frozen)
    return _frozen


def tearDownDatetime():
    """Give zcasync back the system clock."""
    global _frozen
    if _frozen is not None and utils.getClock() is _frozen:
        utils.setClock(None)
    _frozen = None


def set_now(dt):
    """Set the frozen clock to `dt` (naive: UTC), freezing it first if
    needed; a started test Reactor follows it."""
    if _frozen is None or utils.getClock() is not _frozen:
        setUpDatetime(dt)
    else:
        _frozen.now = _aware(dt)


def get_now():
    return utils.now()


class Reactor:
    """A deterministic reactor with virtual time (see the module doc)."""

    def __init__(self):
        self._time = 0.0
        self._clock = None  # the frozen clock that is this reactor's time
        self._epoch = None
        self._froze = False
        self.running = False
        self._calls = []
        self._counter = itertools.count()
        self._from_threads = []
        self._lock = threading.Lock()
        self._triggers = {}
        self._when_running = []
        self.thread = None

    @property
    def time(self):
        """Virtual seconds since the reactor was made (the frozen clock,
        while the reactor drives it)."""
        clock = self._clock
        if clock is not None and utils.getClock() is clock:
            derived = (clock.now - self._epoch).total_seconds()
            # the clock keeps microseconds: within one, it is this time
            if abs(derived - self._time) >= 1e-6:
                self._time = derived  # moved by set_now
        return self._time

    @time.setter
    def time(self, value):
        clock = self._clock
        if clock is not None and utils.getClock() is clock:
            clock.now = self._epoch + datetime.timedelta(seconds=value)
        self._time = value

    @property
    def started(self):
        return self.running

    def seconds(self):
        return self.time

    # -- the five IReactor methods -----------------------------------

    def callLater(self, seconds: float, func: Callable[..., Any],
                  *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(self, self.time + seconds, func, args, kw)
        heapq.heappush(self._calls, (call.time, next(self._counter), call))
        return call

    def callFromThread(self, func: Callable[..., Any], *args: Any,
                       **kw: Any) -> None:
        with self._lock:
            self._from_threads.append((func, args, kw))

    def callInThread(self, func: Callable[..., Any], *args: Any,
                     **kw: Any) -> threading.Thread:
        thread = threading.Thread(target=func, args=args, kwargs=kw,
                                  daemon=True)
        thread.start()
        return thread

    def addSystemEventTrigger(self, phase: str, event: str,
                              func: Callable[..., Any], *args: Any,
                              **kw: Any) -> Any:
        key = (phase, event)
        entry = (func, args, kw)
        self._triggers.setdefault(key, []).append(entry)
        return (key, entry)

    def callWhenRunning(self, func: Callable[..., Any], *args: Any,
                        **kw: Any) -> Any:
        if self.running:
            return func(*args, **kw)
        self._when_running.append((func, args, kw))

    # -- driving ----------------------------------------------------------

    def removeSystemEventTrigger(self, trigger: Any) -> None:
        key, entry = trigger
        self._triggers.get(key, []).remove(entry)

    def start(self):
        """Start 'running' in the calling thread: freeze the clock (unless
        a test clock is set) and run callWhenRunning calls.  Then drive
        with advance()/pump() or time_flies()/time_passes()."""
        if utils.getClock() is utils.systemClock:
            setUpDatetime()
            self._froze = True
        if _frozen is not None and utils.getClock() is _frozen:
            self._clock = _frozen
            self._epoch = _frozen.now - datetime.timedelta(
                seconds=self._time)
        self.running = True
        self.thread = threading.get_ident()
        _reactors.add(self)
        calls, self._when_running = self._when_running, []
        for func, args, kw in calls:
            func(*args, **kw)

    def stop(self):
        """Run the before-shutdown triggers and stop (releasing the clock
        if start() froze it)."""
        for phase in ('before', 'during', 'after'):
            for func, args, kw in list(
                    self._triggers.get((phase, 'shutdown'), [])):
                func(*args, **kw)
        self.running = False
        _reactors.discard(self)
        self._time = self.time
        self._clock = None
        if self._froze:
            self._froze = False
            tearDownDatetime()

    def pump(self) -> int:
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

    def advance(self, seconds: float = 0) -> None:
        """Move virtual time forward, running calls as they come due."""
        target = self.time + seconds
        self.pump()
        while self._calls and self._calls[0][0] <= target:
            self.time = max(self.time, self._calls[0][0])
            self.pump()
        self.time = target
        self.pump()

    def pending(self) -> list[DelayedCall]:
        """Delayed calls still to run, in time order."""
        return [c for _, _, c in sorted(self._calls) if c.active()]

    # -- zc.async's test reactor API ---------------------------------------

    def _checkStarted(self):
        if not self.running:
            raise ValueError('the reactor is not started: call start()')

    def _fromThreads(self):
        with self._lock:
            calls, self._from_threads = self._from_threads, []
        for func, args, kw in calls:
            func(*args, **kw)
        return len(calls)

    def _nextDue(self, end):
        while self._calls and not self._calls[0][2].active():
            heapq.heappop(self._calls)
        if self._calls and self._calls[0][0] <= end:
            return heapq.heappop(self._calls)[2]
        return None

    def time_flies(self, seconds):
        """Run the calls due within `seconds` from now in time order, the
        clock moving to each; end `seconds` later.  Returns how many calls
        ran (those handed over by other threads included)."""
        self._checkStarted()
        end = self.time + seconds
        count = self._fromThreads()
        while True:
            call = self._nextDue(end)
            if call is None:
                break
            self.time = max(self.time, call.time)
            call.called = True
            call.func(*call.args, **call.kw)
            count += 1 + self._fromThreads()
        self.time = end
        return count + self._fromThreads()

    def time_passes(self):
        """Run one call that is due now (a call handed over by another
        thread first); True if one ran."""
        self._checkStarted()
        with self._lock:
            handed = self._from_threads.pop(0) if self._from_threads \
                else None
        if handed is not None:
            func, args, kw = handed
            func(*args, **kw)
            return True
        call = self._nextDue(self.time)
        if call is None:
            return False
        call.called = True
        call.func(*call.args, **call.kw)
        return True

    def wait_for(self, *jobs, attempts=10, poll_interval=5, seconds=1):
        """Let `poll_interval` seconds fly up to `attempts` times until
        every job is COMPLETED, giving worker threads up to `seconds` of
        real time after each; prints 'TIME OUT' if they never are."""
        self._checkStarted()
        for attempt in range(attempts):
            self.time_flies(poll_interval)
            deadline = time.monotonic() + seconds
            while True:
                self._fromThreads()
                if all(_completed(job) for job in jobs):
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        print('TIME OUT')


def _completed(job):
    _sync(job)
    return job.status == interfaces.COMPLETED


def tear_down_dispatcher(dispatcher, seconds=10):
    """Stop `dispatcher`: its reactor's thread (as the start-up
    subscribers run it) or this test reactor, waiting for the thread, and
    put back the signal handlers its installer replaced."""
    from zcasync import subscribers
    reactor = dispatcher.reactor
    thread = getattr(dispatcher, 'thread', None)
    if thread is not None:
        if thread.is_alive():
            reactor.callFromThread(reactor.stop)
            thread.join(seconds)
    elif isinstance(reactor, Reactor):
        if reactor.running:
            reactor.stop()
    elif dispatcher.activated:
        dispatcher.deactivate()
    subscribers.restore_signal_handlers(dispatcher)


def pumpReactors() -> None:
    me = threading.get_ident()
    for reactor in list(_reactors):
        if reactor.running and reactor.thread == me:
            reactor.pump()


def wait(condition: Callable[[], Any], timeout: float = 10,
         message: str | Callable[[], str] = 'condition never held',
         interval: float = 0.01) -> Any:
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


def wait_for_result(job, timeout=10, seconds=None):
    """The job's result once it is COMPLETED (`seconds`: zc.async's name
    for `timeout`)."""
    timeout = seconds if seconds is not None else timeout
    def done():
        _sync(job)
        return job.status == interfaces.COMPLETED
    wait(done, timeout,
         lambda: 'job never completed: %r is %s' % (job, job.status))
    return job.result


def wait_for_start(job, timeout=10, seconds=None):
    """Wait until the job has started (is ACTIVE or later)."""
    timeout = seconds if seconds is not None else timeout
    def started():
        _sync(job)
        return job.status in (interfaces.ACTIVE, interfaces.CALLBACKS,
                              interfaces.COMPLETED)
    wait(started, timeout,
         lambda: 'job never started: %r is %s' % (job, job.status))


def wait_for_annotation(job, name, timeout=10, seconds=None):
    timeout = seconds if seconds is not None else timeout
    def present():
        _sync(job)
        return name in job.annotations
    wait(present, timeout, 'annotation %r never appeared on %r'
         % (name, job))
    return job.annotations[name]


def get_poll(dispatcher, count=None, timeout=10, seconds=None):
    """The newest poll once there are more than `count` polls; by default
    the next poll (one newer than the newest now, which also works once
    the bounded history is full)."""
    timeout = seconds if seconds is not None else timeout
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


def wait_for_deactivation(dispatcher, timeout=10, seconds=None):
    timeout = seconds if seconds is not None else timeout
    wait(lambda: not dispatcher.activated, timeout,
         'dispatcher %s never deactivated' % dispatcher.UUID)


def wait_for_death(dispatcher_agents, timeout=30, seconds=None):
    timeout = seconds if seconds is not None else timeout
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
    ran: list[Job] = []
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


def fixedClock(start: datetime.datetime | None = None) -> FixedClock:
    """A settable clock for ``zcasync.utils.setClock``: call ``.advance(
    seconds)`` or set ``.now``."""
    return FixedClock(start)


class FixedClock:

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self.now = start or utils.now()

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=seconds)
        return self.now
