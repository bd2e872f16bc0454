"""A dispatcher's watch over the runs of its worker threads: stop
requests, time limits, and completing runs that do not stop (see
``zcasync.control`` for what they mean to users).

Each run a worker thread starts is registered here (``begin``, in the
worker thread, before the job is called) with a ``RunControl`` that the
thread puts in ``zcasync.threadlocal``, and unregistered when it ends
(``end``).  Before its transaction begins, the thread starts hearing
(``opening``): a stop request committed before that is in the run's own
view of the job, one committed later is heard, so that ``begin`` misses
none.

- *Stop requests* are stored in the job's annotations tree, whose oid the
  run registers: when the dispatcher's invalidation listener hears that
  oid change (``invalidated``, any thread), the reactor reads the request
  (``_check``) and, when it targets this run, asks the run to stop and
  arms the end of its grace period.  Each heartbeat looks at every
  registered run as well (``sweep``).
- *Time limits*: a run whose job has a ``timeout`` arms a reactor call at
  its deadline (``active_start + timeout``), which asks the run to stop
  with TimeLimitError, with ``dispatcher.time_limit_grace`` seconds of
  grace.
- *Forcing*: when the grace period ends and the run is still registered,
  a helper thread (``_force``) takes the job from the run under a new
  token (one commit; the run's own late commit then fails its ownership
  check and its result is discarded), tells the thread's pool to abandon
  that thread and start another one (the agent's size is honoured), and
  completes the job with the stop error -- for a time limit, the job's
  retry policy decides whether it runs again instead.  While it does,
  the new token is known to the runner, so that reconciliation leaves
  the job alone.
- *Coroutine runs* (``zcasync.coroutines``) are registered the same way by
  the thread that calls their job, then go on on the event loop
  (``detach``; ``end`` when they end, from a commit thread).  Their
  control is copied into their task's context: a stop request cancels the
  task (``coroutines.Step``).  Forcing one abandons no thread: its
  ``release`` frees its slot (``AgentThreadPool.undetach``) and cancels
  its task again; its late outcome is discarded by the token, as a
  thread's.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import transaction
import transaction.interfaces

from zcasync import control
from zcasync import interfaces
from zcasync import threadlocal
from zcasync import utils

#: Seconds of grace a run past its time limit gets before it is forced.
TIME_LIMIT_GRACE = 5.0
#: Seconds before a forced completion that failed before it took the job
#: from its run is tried again (``dispatcher.force_retry_delay``).
FORCE_RETRY = 1.0


class Entry:
    """A registered run."""

    def __init__(self, run, pool, job, watched, call):
        self.run = run
        self.pool = pool
        self.ident = threading.get_ident()
        self.control = control.RunControl(run.job_id, run.token)
        self.timeout = job.timeout
        self.repr = call
        self.watched = watched  # the oid of the job's annotations tree
        self.calls: list[Any] = []  # the reactor's delayed calls
        self.forcing = False
        self.tokens: list[str] = []  # the tokens it was forced under
        #: a coroutine run (on the event loop, ``detach``): what frees its
        #: slot and cancels its task again when it is forced
        self.release: Any = None
        self.taken = False  # forced: the job was taken from the run


class _Heard:
    """The oids a worker thread heard of while it started a run."""

    def __init__(self):
        self.oids = set()
        self.everything = False


class RunWatch:
    """The runs of one dispatcher's worker threads (module docstring)."""

    def __init__(self, runner):
        self.runner = runner
        self.dispatcher = runner.dispatcher
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}  # token -> Entry
        self._watched: dict[bytes, Entry] = {}  # annotations oid -> Entry
        self._forcing: set[str] = set()  # the tokens of forced completions
        self._hearing: list[_Heard] = []  # runs starting
        self._local = threading.local()

    # -- worker threads ---------------------------------------------------

    def opening(self):
        """(worker thread) Hear every change from now on, until the run
        this thread starts is registered."""
        self._stopHearing()
        heard = self._local.heard = _Heard()
        with self._lock:
            self._hearing.append(heard)

    def _stopHearing(self):
        heard = getattr(self._local, 'heard', None)
        if heard is not None:
            self._local.heard = None
            with self._lock:
                self._hearing = [h for h in self._hearing if h is not heard]
        return heard

    def begin(self, job, run, pool, call=None):
        """Register the run `run` of `job` (worker thread; `call`: its
        repr) and set its control in this thread; returns the entry."""
        tree = job._annotations
        watched = tree._p_oid if tree is not None else None
        entry = Entry(run, pool, job, watched,
                      repr(job) if call is None else call)
        with self._lock:
            self._entries[run.token] = entry
            if watched is not None:
                self._watched[watched] = entry
        threadlocal.setRunControl(entry.control)
        heard = self._stopHearing()
        if control.stopRequest(job, run.token) is not None or \
                heard is None or heard.everything or watched in heard.oids:
            # asked before this run's view of the job began, or since
            self._inReactor(self._check, [entry])
        if entry.timeout is not None and job.active_start is not None:
            deadline = job.active_start + entry.timeout
            delay = max(0.0, (deadline - utils.now()).total_seconds())
            self._inReactor(self._arm, entry, delay, self._timedOut)
        return entry

    def detach(self, release):
        """(the thread that started a run) The run of this thread goes on
        without it, on the event loop (a coroutine run): it stays
        registered until ``end(control)``, and when it is forced,
        ``release()`` frees its slot and cancels its task again (there is
        no thread to abandon).  Clears this thread's control; returns it."""
        self._stopHearing()
        control_ = threadlocal.getRunControl()
        threadlocal.setRunControl()
        if control_ is None:
            return None
        with self._lock:
            entry = self._entries.get(control_.token)
            if entry is None or entry.control is not control_:
                return control_
            entry.release = release
            taken = entry.taken
        if taken:  # forced already, before it was detached
            release()
        return control_

    def end(self, control_=None):
        """The run of this thread ended (or the detached run of
        `control_`): unregister it."""
        if control_ is None:
            self._stopHearing()
            control_ = threadlocal.getRunControl()
            threadlocal.setRunControl()
        if control_ is None:
            return
        with self._lock:
            entry = self._entries.pop(control_.token, None)
            if entry is None:
                return
            if self._watched.get(entry.watched) is entry:
                del self._watched[entry.watched]
        if entry.calls:
            self._inReactor(self._disarm, entry)

    def keep(self):
        """(worker thread) The run of this thread returned without its
        job's outcome: the job waits, ACTIVE, for a Deferred that the run
        returned.  It stays registered -- a stop request or its time
        limit still completes it -- until ``endToken``; this thread's
        control is cleared."""
        self._stopHearing()
        threadlocal.setRunControl()

    def endToken(self, token):
        """Unregister the run holding `token` (one ``keep`` left)."""
        with self._lock:
            entry = self._entries.get(token)
        if entry is not None:
            self.end(entry.control)

    def running(self):
        """Whether any run is registered."""
        return bool(self._entries)

    def tokens(self):
        """The tokens of the jobs being forced (the runner knows them)."""
        with self._lock:
            return set(self._forcing)

    # -- hearing of requests (any thread) ----------------------------------

    def invalidated(self, oids):
        """Invalidation listener: `oids` changed (None: anything may
        have)."""
        if self._hearing:
            with self._lock:
                for heard in self._hearing:
                    if oids is None:
                        heard.everything = True
                    else:
                        heard.oids.update(oids)
        watched = self._watched
        if not watched:
            return
        with self._lock:
            if oids is None:
                hits = list(self._entries.values())
            elif len(watched) < len(oids):
                hits = [e for oid, e in watched.items() if oid in oids]
            else:
                hits = [watched[oid] for oid in oids if oid in watched]
        hits = [e for e in hits if not e.control.cancelled]
        if hits:
            self._inReactor(self._check, hits)

    def sweep(self):
        """(reactor, each heartbeat) Look at every registered run."""
        with self._lock:
            entries = [e for e in self._entries.values()
                       if not e.control.cancelled]
        if entries:
            self._check(entries)

    def _inReactor(self, func, *args):
        try:
            self.dispatcher.reactor.callFromThread(func, *args)
        except Exception:
            pass  # the reactor is gone: its dispatcher is stopping

    # -- the reactor's side -------------------------------------------------

    def _registered(self, entry):
        return self._entries.get(entry.run.token) is entry

    def _check(self, entries):
        """(reactor) Read the stop requests of `entries`' jobs; ask the
        runs they target to stop."""
        dispatcher = self.dispatcher
        conn = dispatcher.conn
        if conn is None:
            return
        tm = conn.transaction_manager
        try:
            tm.begin()
            for entry in entries:
                if not self._registered(entry) or entry.control.cancelled:
                    continue  # (a cancel overrides a time limit)
                oid, database_name = entry.run.job_id
                job = dispatcher._getConnection(database_name).get(oid)
                request = control.stopRequest(job, entry.run.token)
                if request is not None:
                    self._stop(entry, control.stopError(job, request),
                               request.get('grace', control.DEFAULT_GRACE),
                               request.get('requested'))
        except Exception:
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s could not read stop requests:\n%s',
                          dispatcher.UUID, utils.formatException())
        finally:
            tm.abort()

    def _stop(self, entry, error, grace, requested=None):
        """(reactor) Ask the run to stop; force it after `grace` seconds
        (counted from `requested`, an ISO time, when given)."""
        if not entry.control.requestStop(error):
            return
        utils.safeLog(utils.log, logging.INFO,
                      '%s was asked to stop (%s); it is completed anyway in '
                      '%g s', entry.repr, utils.shortRepr(error), grace)
        delay = float(grace)
        if requested:
            try:
                asked = datetime.datetime.fromisoformat(requested)
                delay -= (utils.now() - asked).total_seconds()
            except (TypeError, ValueError):
                pass
        self._arm(entry, max(0.0, delay), self._force)

    def _arm(self, entry, delay, func):
        if self._registered(entry):
            call = self.dispatcher.reactor.callLater(delay, func, entry)
            entry.calls.append(call)
            if not self._registered(entry) and call.active():
                # the run ended meanwhile, before its end could see this
                # call to cancel it
                call.cancel()

    def _disarm(self, entry):
        for call in entry.calls:
            if call.active():
                call.cancel()
        entry.calls = []

    def _timedOut(self, entry):
        if self._registered(entry):
            grace = getattr(self.dispatcher, 'time_limit_grace',
                            TIME_LIMIT_GRACE)
            self._stop(entry, control.timeLimitError(entry.repr, entry.timeout),
                       grace)

    def _force(self, entry):
        """(reactor) The grace period ended: complete the job in a helper
        thread unless the run ended meanwhile."""
        if not self._registered(entry) or entry.forcing or \
                not self.dispatcher.activated:
            return
        entry.forcing = True
        threading.Thread(target=self._forceInThread, args=(entry,),
                         name='zcasync stop %s' % (entry.run.token,),
                         daemon=True).start()

    # -- forcing (a helper thread) -----------------------------------------

    def _forceInThread(self, entry):
        db = self.dispatcher.db
        tm = transaction.TransactionManager()
        conn = None
        try:
            conn = db.open(transaction_manager=tm)
            oid, database_name = entry.run.job_id
            jobs = conn
            if database_name and database_name != db.database_name:
                jobs = conn.get_connection(database_name)
            job = jobs.get(oid)
            token = self._takeOver(job, tm, entry)
            if token is None:
                return  # the run ended meanwhile: nothing to force
            with self._lock:
                entry.taken = True
                release = entry.release
            if release is not None:  # a coroutine run: no thread
                release()
            else:
                entry.pool.abandon(entry.ident, entry.run.token)
            utils.safeLog(
                utils.log, logging.WARNING,
                '%s did not stop within its grace period: its dispatcher '
                'completes it, its thread is replaced, and what the run '
                'returns later is discarded', entry.repr)
            # a cancel stored meanwhile wins over a time limit
            error = control.cancelRequest(job, entry.run.token) or \
                entry.control.stopRequested
            self._complete(job, tm, token, error)
        except interfaces.ReassignedError:
            pass  # recovered by another process meanwhile
        except Exception:
            tm.abort()
            with self._lock:
                taken = entry.taken
            if not taken:
                # the job is still its run's, which may never return: try
                # again (reconciliation leaves a running job alone)
                utils.safeLog(utils.log, logging.ERROR,
                              'dispatcher %s could not take %s from its run '
                              'after its grace period; trying again:\n%s',
                              self.dispatcher.UUID, entry.repr,
                              utils.formatException())
                entry.forcing = False
                self._inReactor(
                    self._arm, entry, getattr(self.dispatcher,
                                              'force_retry_delay',
                                              FORCE_RETRY), self._force)
                return
            utils.safeLog(utils.log, logging.CRITICAL,
                          'dispatcher %s could not complete %s after its '
                          'grace period; it hands it back to its retry '
                          'policy:\n%s', self.dispatcher.UUID, entry.repr,
                          utils.formatException())
            self.runner.lost()
        finally:
            with self._lock:
                self._forcing.difference_update(entry.tokens)
            if conn is not None:
                try:
                    tm.abort()
                    conn.close()
                except Exception:
                    pass

    def _takeOver(self, job, tm, entry):
        """Give the job a new run token (committed), unless the run
        finished meanwhile; returns the token or None."""
        from zcasync.lifecycle import COMMIT_ATTEMPTS, _newToken
        for attempt in range(COMMIT_ATTEMPTS):
            tm.begin()
            if job._status != interfaces.ACTIVE or job._inner is not None \
                    or job._run_token != entry.run.token:
                tm.abort()
                return None
            token = _newToken()
            with self._lock:  # known to reconciliation from now on
                self._forcing.add(token)
                entry.tokens.append(token)
            job._run_token = token
            try:
                tm.commit()
                return token
            except transaction.interfaces.TransientError:
                tm.abort()
        raise RuntimeError('could not take %s from its run: the commit kept '
                           'conflicting' % entry.repr)

    def _complete(self, job, tm, token, error):
        """Complete the job with `error` (a time limit: as its retry
        policy decides)."""
        from zcasync.lifecycle import _GIVE_UP, _decision
        failure = utils.makeFailure(error)
        if isinstance(error, interfaces.CancelledError):
            job._complete(failure, token)
            return
        policy = job._policyOrDefault()
        data_cache: dict[str, Any] = {}
        action, when = _decision(policy.jobError(failure, data_cache))
        if action == _GIVE_UP or job.queue is None:
            job._complete(failure, token)
        else:
            job._reschedule(when, tm, token, policy, data_cache)
