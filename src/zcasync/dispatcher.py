"""The dispatcher: the engine of one process.

Driven by a reactor (Twisted's, or anything with the five ``IReactor``
methods), a dispatcher polls the database from the reactor's thread: for
each queue it registers and activates itself, pings, and asks each of its
agents for jobs, which it hands to that agent's worker threads.  Each
worker thread holds one database connection for its life and runs jobs
(``job()``), recording the outcome in a short in-memory history that
operators query (``getJobInfo``, ``getStatistics``, ``getStatusInfo``).

Polls happen every ``poll_interval`` seconds (the heartbeat), when a ping
is due (every ``ping_interval`` of the dispatcher's record in each queue,
whatever the poll interval), when a scheduled job comes due, and as soon
as a committed transaction touches one of the dispatcher's queues or
agents (see ``zcasync.invalidations``), so a job put in a queue starts
within milliseconds.  What a poll does in each queue (activation, pings,
reconciliation, claims) is in ``zcasync.polling``.

Every failure path ends in a state some process acts on: at each
heartbeat (and at once when a worker thread reports a lost run) the
dispatcher compares the jobs its agents hold with the runs its worker
threads still have (``zcasync.runner``) and hands every other held job
back to its retry policy.  Deactivation drops the runs no thread has
started before it records the deactivation (which hands running jobs to
recovery, revoking their runs' ownership), then joins its threads,
bounded.
"""
from __future__ import annotations

import datetime
import logging
import random
import threading
import time
import uuid as uuidmodule
from typing import Any, Callable, TypeVar

import ZODB

import transaction
import transaction.interfaces

from zcasync import instanceuuid
from zcasync import interfaces
from zcasync import invalidations
from zcasync import liveness
from zcasync import stable
from zcasync import utils
from zcasync.history import (  # noqa: F401 (part of this module's API)
    JobHistory, Poll, PollInfo, PollHistory, pollKey, POLL_HISTORY,
    JOB_HISTORY, RESULT_LIMIT)
from zcasync.polling import QueuePolls
from zcasync.runner import Runner

STOPPED = 'STOPPED'
STARTING = 'STARTING'
RUNNING = 'RUNNING'
STUCK = 'STUCK'

# --- the dispatchers of this process, by UUID (as zc.async) ---------------

_dispatchers: dict = {}
_registry_lock = threading.Lock()


def _register(dispatcher):
    with _registry_lock:
        current = _dispatchers.get(dispatcher.UUID)
        if current is not None and current is not dispatcher and \
                current.activated:
            raise ValueError(
                'dispatcher %s is already registered in this process and '
                'activated; deactivate it (or zcasync.dispatcher.pop(uuid)) '
                'before making another with this UUID, or give the new one '
                'another uuid' % (dispatcher.UUID,))
        _dispatchers[dispatcher.UUID] = dispatcher


def get(uuid=None, default=None):
    """The dispatcher made in this process for `uuid` (default: this
    process's instance UUID), or `default`."""
    if uuid is None:
        uuid = instanceuuid.UUID
    return _dispatchers.get(uuid, default)


def pop(uuid=None):
    """Forget (and return) the dispatcher of `uuid` (default: the instance
    UUID); KeyError if there is none."""
    if uuid is None:
        uuid = instanceuuid.UUID
    with _registry_lock:
        return _dispatchers.pop(uuid)


def clear():
    """Forget every dispatcher of this process."""
    with _registry_lock:
        _dispatchers.clear()


_Result = TypeVar('_Result')


class Dispatcher(QueuePolls):
    """``Dispatcher(db, reactor=None, poll_interval=5, uuid=None,
    jobs_size=200, polls_size=400)``: without a reactor, Twisted's global
    reactor.  A new dispatcher registers itself by UUID (see ``get``)."""

    #: Seconds ``deactivate()`` waits for worker threads to finish.
    join_timeout = 5.0
    #: Jobs claimed ahead per agent (see ``zcasync.polling``): at most
    #: ``prefetch_factor`` times its size, and no more than its threads run
    #: in ``prefetch_window`` seconds (from the runs' recent durations), so
    #: that the claims of one poll serve many short jobs (each then costs
    #: one commit) while long jobs are left for other processes to take.
    #: 0 claims only for idle threads.
    prefetch_factor = 20
    prefetch_window = 0.5
    #: Seconds a run past its job's time limit has to stop before it is
    #: completed anyway (``zcasync.runwatch``).
    time_limit_grace = 5.0
    #: Seconds before a completion after a grace period that could not
    #: take the job from its run (e.g. a lost storage) is tried again.
    force_retry_delay = 1.0

    def __init__(self, db: ZODB.DB, reactor: Any = None,
                 poll_interval: float = 5,
                 uuid: uuidmodule.UUID | None = None,
                 jobs_size: int = JOB_HISTORY,
                 polls_size: int = POLL_HISTORY,
                 prefetch: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.db = db
        self.reactor = reactor
        self.poll_interval = poll_interval
        #: jobs claimed ahead per agent (None: prefetch_factor x its size)
        self.prefetch = prefetch
        self.UUID = uuid if uuid is not None else instanceuuid.UUID
        self.polls = PollHistory(polls_size)
        self.activated = None
        self.claiming = True
        self.conn = None
        self.runner = Runner(self)
        self._pool_added = 0
        self._pool_lock = threading.Lock()
        self._activated_in: set[str] = set()
        self._pinged: set[str] = set()
        self.history = JobHistory(self.polls, jobs_size)
        #: (oid, database name) -> the record of a run (bounded, ``size``)
        self.jobs = self.history.jobs
        self._next_call = None
        self._polling = False
        self._last_poll = None
        self._last_logged = None
        self._sequence = (0, 0)
        self._reactor_thread = None
        self._trigger = None
        self._watch = None
        # oids whose change calls for a poll; ... at once (new jobs)
        self._watched: frozenset[bytes] = frozenset()
        self._urgent: frozenset[bytes] = frozenset()
        self._poll_instance = None
        self._soon = None  # the delay of the poll already asked for
        self._missed: list[bytes] = []  # oids heard of while a poll ran
        self._conflicted = False  # a claim lost a race in this poll
        self._invalidation_lock = threading.Lock()
        self._last_heartbeat = None
        self._next_ping = None  # the soonest ping due, over all queues
        self._reconcile = False  # a run was lost: reconcile at next poll
        self._failures = 0  # polls failed in a row
        self._settle_asked = False
        self.deaths = liveness.DeathWatch(poll_interval)
        _register(self)

    @property
    def queues(self):
        """queue name -> agent name -> the agent's worker-thread pool (a
        snapshot)."""
        result = {}
        for (queue_name, agent_name), pool in list(
                self.runner.pools.items()):
            result.setdefault(queue_name, {})[agent_name] = pool
        return result

    # -- life cycle ------------------------------------------------------

    def activate(self) -> None:
        if self.activated:
            raise ValueError('dispatcher %s is already activated' % self.UUID)
        self._checkFormat()
        _register(self)  # it may have been popped or replaced meanwhile
        utils.log.info('attempting to activate dispatcher %s', self.UUID)
        self.activated = utils.now()
        self.claiming = True
        self._last_poll = None
        self.runner = Runner(self)
        self.deaths = liveness.DeathWatch(self.poll_interval)
        self._growPool(1)
        self._trigger = self.reactor.addSystemEventTrigger(
            'before', 'shutdown', self._shutdown)
        self.reactor.callWhenRunning(self._start)

    def _checkFormat(self):
        """Raise DatabaseFormatError (logged at CRITICAL) when this code
        cannot run on the database (``zcasync.stable.checkFormat``); a
        storage that is not connected yet is checked by the polls."""
        if not self._storageConnected():
            return
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            stable.checkFormat(conn.root())
        except interfaces.DatabaseFormatError as e:
            utils.log.critical('dispatcher %s cannot run on this database: '
                               '%s', self.UUID, e)
            raise
        finally:
            tm.abort()
            conn.close()

    def _growPool(self, difference):
        with self._pool_lock:
            self.db.setPoolSize(self.db.getPoolSize() + difference)
            self._pool_added += difference

    def _start(self):
        if not self.activated or self.conn is not None:
            return  # deactivated, or started by an earlier activate()
        self._reactor_thread = threading.get_ident()
        self.conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        self._poll_instance = self.conn._storage
        self._watch = invalidations.watch(self.db, self._invalidated)
        self.poll()

    def _shutdown(self):
        self._trigger = None  # firing now: nothing to remove
        if self.activated:
            self.deactivate()

    def deactivate(self, timeout: float | None = None) -> None:
        """Stop handing jobs to worker threads, deactivate in every queue
        (handing this dispatcher's unfinished jobs to recovery), wait up to
        `timeout` seconds (default ``join_timeout``) for the worker threads
        and give back the connections this dispatcher added to the
        database pool."""
        if not self.activated:
            raise ValueError('dispatcher %s is not activated' % self.UUID)
        self.activated = None
        # no run that was not started yet starts from now on: the
        # deactivation below hands its job to recovery
        dropped = self.runner.close()
        # a later activate() registers its own shutdown trigger
        remove = getattr(self.reactor, 'removeSystemEventTrigger', None)
        if self._trigger is not None and remove is not None:
            try:
                remove(self._trigger)
            except ValueError:
                pass  # already fired
        self._trigger = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = None
        if self.conn is not None:
            try:
                self._deactivateInQueues()
            except Exception:
                utils.safeLog(
                    utils.log, logging.ERROR,
                    'dispatcher %s could not record its deactivation; its '
                    'siblings will find it dead after its '
                    'ping_death_interval and recover its jobs:\n%s',
                    self.UUID, utils.formatException())
            try:
                self.conn.transaction_manager.abort()
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        self._activated_in.clear()
        self._pinged.clear()
        still = self.runner.join(
            self.join_timeout if timeout is None else timeout)
        if still:
            utils.safeLog(
                utils.log, logging.WARNING,
                'dispatcher %s: %d worker thread(s) still run job(s) after '
                'deactivation; those jobs were handed to recovery and these '
                'runs will not commit', self.UUID, len(still))
        self._growPool(-self._pool_added)
        utils.log.info('deactivated dispatcher %s%s', self.UUID,
                       ' (%d queued run(s) dropped)' % len(dropped)
                       if dropped else '')

    def _deactivateInQueues(self):
        is_connected = getattr(self.db.storage, 'is_connected', None)
        if is_connected is not None and not is_connected():
            # a ZEO client without its server would wait for it here
            raise RuntimeError('the storage server is not connected')
        tm = self.conn.transaction_manager
        for attempt in tm.attempts(5):
            with attempt:
                queues = self.conn.root().get(interfaces.KEY)
                for name in self._activated_in:
                    queue = queues.get(name) if queues else None
                    agents = queue.dispatchers.get(self.UUID) \
                        if queue is not None else None
                    if agents is not None and agents.activated:
                        agents.deactivate()

    # -- reactor helpers -------------------------------------------------

    def inReactorThread(self) -> bool:
        return threading.get_ident() == self._reactor_thread

    def callInReactor(self, func: Callable[..., _Result], *args: Any,
                      timeout: float = 60) -> _Result:
        """Run func in the reactor's thread and return its result (from
        another thread: wait for it)."""
        if self.inReactorThread():
            return func(*args)
        done = threading.Event()
        outcome = {}

        def call():
            try:
                outcome['value'] = func(*args)
            except BaseException as e:
                outcome['error'] = e
            finally:
                done.set()
        self.reactor.callFromThread(call)
        if not done.wait(timeout):
            raise RuntimeError('the reactor did not answer within %s s'
                               % timeout)
        if 'error' in outcome:
            raise outcome['error']
        return outcome['value']

    def _getConnection(self, database_name):
        if self.conn is None:
            raise ValueError('dispatcher %s is not running' % self.UUID)
        if database_name is None or \
                database_name == self.db.database_name:
            return self.conn
        return self.conn.get_connection(database_name)

    def _setLiveAnnotation(self, job_id, name, value):
        oid, database_name = job_id
        conn = self._getConnection(database_name)
        tm = self.conn.transaction_manager
        for attempt in tm.attempts(10):
            with attempt:
                conn.get(oid).annotations[name] = value

    def _getLiveAnnotation(self, job_id, name, default):
        oid, database_name = job_id
        conn = self._getConnection(database_name)
        self.conn.transaction_manager.begin()
        try:
            return conn.get(oid).annotations.get(name, default)
        finally:
            self.conn.transaction_manager.abort()

    # -- polling ---------------------------------------------------------

    #: Seconds a poll waits when only room was freed (a job completed), so
    #: that completions arriving together are claimed for in one commit.
    room_delay = 0.002

    def _invalidated(self, oids, committing_instance):
        """Invalidation listener (any thread): a commit touched what this
        dispatcher watches -> poll soon; at once when jobs were added.
        The poll's own commits are ignored."""
        self.runner.watch.invalidated(oids)  # stop requests
        if committing_instance is not None and \
                committing_instance is self._poll_instance:
            return
        with self._invalidation_lock:
            if self._polling:
                # the running poll may have read the database before this
                # commit, with a watch list about to change: decide when it
                # ends
                self._missed.append(oids)
                return
            delay = self._delayFor(oids)
            if delay is None or (self._soon is not None and
                                 self._soon <= delay):
                return
            self._soon = delay
        self.reactor.callFromThread(self._pollSoon, delay)

    def _delayFor(self, oids):
        """0 when `oids` include new jobs, room_delay when they free room,
        None when they do not concern this dispatcher; `oids` None means
        anything may have changed (a reconnection): 0."""
        if oids is None:
            return 0
        if self._watched.isdisjoint(oids):
            return None
        return 0 if not self._urgent.isdisjoint(oids) else self.room_delay

    def _pollSoon(self, delay):
        if not self.activated or self.conn is None:
            return
        call = self._next_call
        if call is not None and call.active() and \
                call.getTime() <= self._reactorTime() + delay:
            return  # a poll comes as soon already
        self._schedule(delay)

    def _reactorTime(self):
        seconds = getattr(self.reactor, 'seconds', None)
        return seconds() if seconds is not None else time.time()

    def prefetchFor(self, size, duration=None):
        """How many jobs to claim ahead for an agent of `size` whose runs
        took `duration` seconds lately (None: not known yet)."""
        if self.prefetch is not None:
            return self.prefetch
        most = self.prefetch_factor * size
        if duration is None:
            return size  # until the runs tell how long jobs take
        return min(most, int(size * self.prefetch_window /
                             max(duration, 1e-4)))

    @property
    def claiming(self):
        """Whether polls claim jobs; False (a graceful stop) also gives
        back the jobs claimed ahead and not started."""
        return self._claiming

    @claiming.setter
    def claiming(self, value):
        self._claiming = bool(value)
        if not value and getattr(self, 'runner', None) is not None:
            for pool in list(self.runner.pools.values()):
                pool.dropBuffer()
            if self.activated and self.conn is not None:
                self._reconcileSoon()

    def _settleSoon(self):
        """(any thread) Runs ended: settle them (and claim) soon, once."""
        with self._invalidation_lock:
            if self._settle_asked:
                return
            self._settle_asked = True
        try:
            self.reactor.callFromThread(self._pollSoon, self.room_delay)
        except Exception:
            pass  # the reactor is gone; the heartbeat settles anyway

    def _reconcileSoon(self):
        """(any thread) A run ended without finishing its job: compare
        held jobs and runs at the next poll, soon."""
        self._reconcile = True
        try:
            self.reactor.callFromThread(self._pollSoon, self.room_delay)
        except Exception:
            pass  # the reactor is gone; the heartbeat reconciles anyway

    def _schedule(self, delay):
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = self.reactor.callLater(delay, self.poll)

    def poll(self) -> Any:
        """Poll now (in the reactor's thread)."""
        if not self.activated or self.conn is None:
            return
        self._next_call = None
        with self._invalidation_lock:
            self._polling = True
            self._soon = None
            self._settle_asked = False
        self._next_due = None
        self._next_ping = None
        now = utils.now()
        heartbeat = self._last_heartbeat is None or (
            now - self._last_heartbeat).total_seconds() >= \
            self.poll_interval * 0.9
        if heartbeat:
            self._last_heartbeat = now
            if self.runner.watch.running():
                # stop requests missed (after this poll: it uses the
                # connection)
                self.reactor.callLater(0, self.runner.watch.sweep)
        self._heartbeat = heartbeat
        # what the worker threads run, taken before the poll's transaction
        # begins: a run that ends later committed after that snapshot
        if heartbeat or self._reconcile:
            self._reconcile = False
            self._known = self.runner.tokens()
        else:
            self._known = None
        watched, urgent = set(), set()
        poll = self._newPoll()
        complete = False
        self.deaths.begin(now)
        try:
            if not self._storageConnected():
                # a ZEO client without its server: this process cannot see
                # the database, so it must not judge its siblings
                self.deaths.blind()
                raise RuntimeError('the storage server is not connected')
            self._pollQueues(poll, watched, urgent)
            complete = True
            self.deaths.saw(now)
            if self._failures:
                utils.log.info('dispatcher %s: polling again after %d '
                               'failed poll(s)', self.UUID, self._failures)
                self._failures = 0
        except interfaces.DatabaseFormatError as e:
            # changed under a running dispatcher: it stops pinging and
            # claiming (its siblings recover its jobs)
            self.conn.transaction_manager.abort()
            self._failures += 1
            if self._failures == 1:
                utils.log.critical('dispatcher %s: %s; polling no more until '
                                   'that changes', self.UUID, e)
        except transaction.interfaces.TransientError:
            # e.g. the ping or the activation commit conflicted
            self.conn.transaction_manager.abort()
            self._conflicted = True
            if self._known is not None:
                self._reconcile = True
        except Exception:
            self.deaths.blind()
            self._failures += 1
            if self._failures == 1:
                utils.safeLog(utils.log, logging.ERROR,
                              'dispatcher %s: poll failed (retrying soon; '
                              'logged once until a poll succeeds):\n%s',
                              self.UUID, utils.formatException())
            self.conn.transaction_manager.abort()
            if self._known is not None:
                self._reconcile = True
        finally:
            self._last_poll = poll.utc_timestamp
            self.polls.add(poll)
            if poll != self._last_logged:
                self._last_logged = poll
                utils.tracelog.debug('poll %s: %r', poll.key, dict(poll))
            with self._invalidation_lock:
                if watched and complete:
                    # a partial list would miss what the poll did not reach
                    self._watched = frozenset(watched)
                    self._urgent = frozenset(urgent)
                missed, self._missed = self._missed, []
                self._polling = False
                delay = self._delay()
                if self._failures:
                    # e.g. a storage server coming back: try again soon,
                    # then less and less often
                    delay = min(delay, 0.25 * 2 ** min(self._failures, 6))
                if self._conflicted:
                    self._conflicted = False
                    delay = min(delay, random.uniform(0, 4 * self.room_delay))
                for oids in missed:
                    soon = self._delayFor(oids)
                    if soon is not None and soon < delay:
                        delay = soon
            if self.activated:
                self._schedule(delay)

    def _storageConnected(self):
        is_connected = getattr(self.db.storage, 'is_connected', None)
        return is_connected is None or is_connected()

    def _delay(self):
        """Seconds to the next heartbeat poll, or to the next ping or
        scheduled job coming due if that is sooner."""
        delay = self.poll_interval
        now = utils.now()
        if self._next_due is not None:
            delay = max(0, min(delay, (self._next_due - now).total_seconds()))
        if self._next_ping is not None:
            # not sooner than a tenth of a ping interval: a poll slower
            # than the ping interval must not make polls back to back
            due, floor = self._next_ping
            delay = min(delay, max(floor, (due - now).total_seconds()))
        return delay

    def _newPoll(self):
        poll = Poll()
        started = utils.now()
        micros = utils.toMicros(started)
        last_micros, sequence = self._sequence
        sequence = min(sequence + 1, 15) if micros == last_micros else 0
        self._sequence = (micros, sequence)
        poll.key = pollKey(micros, sequence)
        poll.utc_timestamp = started
        return poll

    # -- queries ---------------------------------------------------------

    def getJobInfo(self, oid: bytes,
                   database_name: str | None = None) -> dict[str, Any]:
        if database_name is None:
            database_name = self.db.database_name
        return self.history.getJobInfo(oid, database_name)

    def getPollInfo(self, at: datetime.datetime | None = None,
                    before: datetime.datetime | None = None) -> Any:
        return self.polls.find(at, before)

    def getStatistics(self, at: datetime.datetime | None = None,
                      before: datetime.datetime | None = None,
                      since: datetime.datetime | None = None,
                      queue: str | None = None,
                      agent: str | None = None) -> dict[str, Any]:
        return self.history.getStatistics(
            self.getActiveJobIds(), at, before, since, queue, agent)

    def getActiveJobIds(self, queue: str | None = None,
                        agent: str | None = None) -> list[Any]:
        return self.runner.activeJobIds(queue, agent)

    def getStatusInfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {'poll interval': datetime.timedelta(
            seconds=self.poll_interval)}
        if not self.activated:
            info.update({'status': STOPPED, 'time since last poll': None,
                         'uptime': None, 'uuid': self.UUID})
            return info
        now = utils.now()
        last = self._last_poll
        if last is None:
            status = STARTING
        elif self._polling:
            status = RUNNING
        else:
            slack = max(self.poll_interval, 1) * 2 + 5
            overdue = (now - last).total_seconds() > \
                self.poll_interval + slack
            status = STUCK if overdue else RUNNING
        info.update({
            'status': status,
            'time since last poll': (now - last) if last else None,
            'uptime': now - self.activated,
        })
        return info
