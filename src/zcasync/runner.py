"""The runner: a dispatcher's worker threads and what they do with a job.

Each agent of a dispatcher has a pool of ``size`` threads, each with its
own database connection.  The dispatcher hands a pool a *run*: the job's
id and the token under which its claim marked it ACTIVE (see
``zcasync.job``, "ownership").  A thread loads the job and runs it under
that token; a run whose job was handed to another run meanwhile stops
without committing anything.

The runner always knows the tokens of its runs: queued for a thread,
running, or waiting for a Deferred (``tokens()``).  The dispatcher compares
them with what its agents hold in the database and hands back to the retry
policies every held job that no run of this process will finish (a thread
that died, a job that could not be loaded, a commit that kept failing).

Coroutine jobs (``zcasync.coroutines``) are awaited on the dispatcher's
event loop, not in a worker thread: a claimed ``async def`` job goes
straight to a commit thread that calls it in a connection of its own and
hands the awaitable to the loop (a job found to return an awaitable only
when a worker thread called it goes there too, with the thread's
connection: the thread opens another).  Such a run occupies one of its
agent's slots without a thread (``AgentThreadPool.detached``): threads
are started on demand, so an agent of size 200 running 200 coroutines
has a few.  A job claimed ahead starts only while the agent's runs --
in threads and on the loop -- fill fewer than ``size`` slots.  The
pools, their threads and slot accounting are in ``zcasync.workerpool``.

Deactivation: ``close()`` drops the runs that no thread has started (their
jobs are handed to recovery by the deactivation that follows) and asks
each thread to stop after its current job; ``join(timeout)`` waits for
them, bounded.
"""
import logging
import threading
import time

import ZODB.utils

from zcasync import coroutineruns
from zcasync import coroutines
from zcasync import interfaces
from zcasync import lifecycle
from zcasync import threadlocal
from zcasync import utils
from zcasync.history import RESULT_LIMIT
from zcasync.runwatch import RunWatch
# (the pools live in zcasync.workerpool; their names stay importable here)
from zcasync.workerpool import (  # noqa: F401
    AgentThreadPool, OPEN_RETRY, Run)

_FIRST = object()  # a run's first step
DETACHED = coroutineruns.DETACHED
_settlesLater = coroutineruns.settlesLater
_close = coroutineruns.closeConnection


def _changedSince(job):
    """Whether `job` was committed by someone else after this
    transaction's view of it began (e.g. a job claimed ahead, cancelled
    meanwhile): writing it here would make the commit conflict -- and the
    commit that completes a job would then run that job again."""
    return ZODB.utils.load_current(job._p_jar.db().storage,
                                   job._p_oid)[1] != job._p_serial


class Runner(coroutineruns.CoroutineRuns):
    """The pools of one dispatcher, by (queue name, agent name)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.pools = {}
        #: token -> (job id, (queue name, agent name)): runs waiting for
        #: a Deferred
        self._waiting = {}
        self._lock = threading.Lock()
        #: the event loop of the coroutine runs (started when needed)
        self.coroutines = coroutines.EventLoop(
            'zcasync %s' % (getattr(dispatcher, 'UUID', ''),))
        #: stop requests, time limits (zcasync.runwatch)
        self.watch = RunWatch(self)

    def pool(self, queue_name, agent_name):
        key = (queue_name, agent_name)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = AgentThreadPool(
                self, queue_name, agent_name)
        return pool

    def closePools(self, keep):
        """Close the pools whose (queue, agent) `keep(key)` refuses."""
        for key in [k for k in self.pools if not keep(k)]:
            self.pools.pop(key).close()

    def tokens(self):
        """The tokens of every run this process will still finish, and the
        ids of the jobs it was given but has not started yet."""
        with self._lock:
            known = set(self._waiting)
        known.update(self.watch.tokens())
        for pool in list(self.pools.values()):
            known.update(pool.known())
        return known

    def forget(self, held, key=None):
        """Drop the waiting runs of the agent `key` ((queue name, agent
        name); None: of every agent) whose jobs it no longer holds
        (`held`: the tokens of the jobs it holds)."""
        with self._lock:
            dropped = [t for t, (job_id, pool_key) in self._waiting.items()
                       if t not in held and key in (None, pool_key)]
            for token in dropped:
                del self._waiting[token]
        for token in dropped:
            self.watch.endToken(token)

    def activeJobIds(self, queue=None, agent=None):
        ids = []
        for (queue_name, agent_name), pool in list(self.pools.items()):
            if queue is not None and queue != queue_name:
                continue
            if agent is not None and agent != agent_name:
                continue
            ids.extend(pool.activeJobIds())
        return ids

    def close(self):
        """Close every pool; returns the runs dropped before they
        started."""
        dropped = []
        for pool in list(self.pools.values()):
            dropped.extend(pool.close())
        threads = [t for pool in self.pools.values() for t in pool.threads()]
        self.pools.clear()
        self._closed_threads = threads
        return dropped

    def join(self, timeout):
        """Wait up to `timeout` seconds for the threads of the closed
        pools and the coroutine runs; returns the threads still running
        (the event loop's, while coroutine runs go on)."""
        deadline = time.monotonic() + timeout
        threads = getattr(self, '_closed_threads', [])
        for thread in threads:
            thread.join(max(0, deadline - time.monotonic()))
        self._closed_threads = [t for t in threads if t.is_alive()]
        still = list(self._closed_threads)
        if self.coroutines.join(max(0, deadline - time.monotonic())):
            still.extend(self.coroutines.threads()[:1])
        self.coroutines.close()
        return still

    def lost(self):
        """A run ended without finishing its job: have the dispatcher
        reconcile soon."""
        self.dispatcher._reconcileSoon()

    def _ended(self, pool, job_id, seconds=None):
        """A run ended: its agent's bookkeeping waits for the next poll;
        poll soon when the pool runs short of work, or when completions
        pile up."""
        count = pool.finished(job_id, seconds)
        prefetch = self.dispatcher.prefetchFor(pool.size, pool.duration)
        if pool.buffered() <= prefetch // 2 or count >= max(prefetch, 1):
            self.dispatcher._settleSoon()

    # -- a run, in a worker thread -------------------------------------

    def _load(self, conn, job_id):
        oid, database_name = job_id
        if database_name and database_name != self.dispatcher.db.database_name:
            return conn.get_connection(database_name).get(oid)
        return conn.get(oid)

    def _isHeldBy(self, job, pool):
        """Whether `job` waits, not started, in this dispatcher's agent of
        `pool` (claimed ahead, and not handed back since)."""
        agent = job.parent
        return job._status == interfaces.NEW and \
            interfaces.IAgent.providedBy(agent) and \
            agent.name == pool.agent_name and agent.parent is not None and \
            agent.parent.UUID == self.dispatcher.UUID

    def _startBuffered(self, conn, tm, run, pool):
        """Start a job claimed ahead, in its own commit; its Run (with a
        token), or None when it is not ours to start any more."""
        started = None
        try:
            started = self._startHeld(conn, tm, run, pool)
        finally:
            if started is None:
                # not started: no longer "being started" either (else
                # reconciliation would count the job as ours for ever)
                pool.started(run.job_id)
        return started

    def _startHeld(self, conn, tm, run, pool):
        try:
            tm.begin()
            job = self._load(conn, run.job_id)
            if not self._isHeldBy(job, pool):
                tm.abort()
                return None  # handed back meanwhile: not ours
            token = lifecycle._newToken()

            def check():
                if not self._isHeldBy(job, pool):
                    raise interfaces.BadStatusError('handed back')
            pool.starting(token)
            try:
                job._markActive(tm, token, check)
                pool.running[threading.get_ident()] = Run(
                    run.job_id, token, run.poll_key)
            finally:
                pool.started(run.job_id, token)
        except interfaces.BadStatusError:
            return None  # handed back meanwhile: not ours
        except Exception:
            tm.abort()
            utils.safeLog(utils.log, logging.WARNING,
                          'dispatcher %s could not start job %r claimed '
                          'ahead; it hands it back:\n%s', self.dispatcher.UUID,
                          run.job_id, utils.formatException())
            self.lost()
            return None
        return Run(run.job_id, token, run.poll_key)

    def _startNext(self, job, conn, tm, pool, following):
        """In the commit that completes `job`, start the next job claimed
        ahead (one commit for both); `following` gets its Run once that
        commit landed, and the job goes back to the buffer if it did not.
        """
        if following or not self.dispatcher.claiming:
            return
        waiting = pool.popBuffered(replacing=True)
        if waiting is None:
            return
        job_id = waiting.job_id
        try:
            nxt = self._load(conn, job_id)
            if not self._isHeldBy(nxt, pool) or \
                    nxt.parent is not job.parent or _changedSince(nxt):
                # this transaction may be older than the claim of the
                # next job (writing it here would conflict): the thread
                # starts it on its own, in a fresh transaction
                pool.started(job_id, back=waiting)
                return
            token = nxt._activate()
        except Exception:
            pool.started(job_id, back=waiting)
            return
        pool.starting(token)
        run = Run(job_id, token, waiting.poll_key)

        def landed(success):
            if success:
                following.append(run)  # still "starting" until it runs
            else:
                pool.started(job_id, token, back=waiting)
        tm.get().addAfterCommitHook(landed)

    def perform(self, conn, tm, run, pool, chain=True):
        """Run `run` (a Run; without a token: a job claimed ahead, to
        start first); returns the Run its final commit started (when
        `chain`), None, or DETACHED when the run went on to the event
        loop with `conn` (a coroutine job)."""
        if run.token is None:
            run = self._startBuffered(conn, tm, run, pool)
            if run is None:
                return None
        following = []
        threadlocal.setRunHooks(
            (lambda job: self._startNext(job, conn, tm, pool, following))
            if chain else _settlesLater)
        started = time.monotonic()
        awaiting = None
        try:
            awaiting = self._perform(conn, tm, run, pool)
        finally:
            threadlocal.setRunHooks()
            if awaiting is None:
                with self._lock:
                    waits = run.token in self._waiting
                if waits:  # for a Deferred: still stoppable
                    self.watch.keep()
                else:
                    self.watch.end()
                self._ended(pool, run.job_id, time.monotonic() - started)
        if awaiting is not None:
            self._detach(conn, tm, run, pool, started, *awaiting)
            return DETACHED
        return following[0] if following else None

    def _perform(self, conn, tm, run, pool):
        """Load and run the job; returns None when the run ended, or
        (Step, advance) when it awaits the Step (a coroutine job):
        ``advance(outcome)`` goes on with the awaited outcome, returning
        the same."""
        dispatcher = self.dispatcher
        oid, database_name = run.job_id
        record = {
            'call': 'job %r' % (run.job_id,), 'started': utils.now(),
            'completed': None, 'failed': False, 'result': None,
            'thread': threading.get_ident(), 'poll id': run.poll_key,
            'quota names': (),
        }
        dispatcher.history.start(run.job_id, record, pool.queue_name,
                                  pool.agent_name)
        self.watch.opening()  # hear stop requests from here on
        try:
            tm.begin()
            job = self._load(conn, run.job_id)
            record['call'] = call = repr(job)
            record['quota names'] = tuple(job.quota_names)
        except Exception:
            # e.g. the storage server went away since the claim: the
            # dispatcher hands the job back to its retry policy
            tm.abort()
            failure = utils.makeFailure()
            record.update(completed=utils.now(), failed=True,
                          result=failure.getTraceback()[:RESULT_LIMIT])
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s could not load claimed %s; it hands '
                          'the job back to its retry policy:\n%s',
                          dispatcher.UUID, record['call'], record['result'])
            self.lost()
            return
        self.watch.begin(job, run, pool, call)
        steps = []  # the run's life cycle (a generator), once started

        def proceed(outcome):
            if outcome is _FIRST:
                steps.append(job._runClaimedSteps(run.token))
                return next(steps[0])
            return steps[0].send(outcome)

        def advance(outcome=_FIRST):
            step = self._advance(job, call, record, run, tm,
                                 lambda: proceed(outcome),
                                 (pool.queue_name, pool.agent_name))
            return None if step is None else (step, advance)
        return advance()

    def _advance(self, job, call, record, run, tm, proceed, pool=None):
        """Run the job's life cycle up to its end (None) or to the next
        Step it awaits (returned)."""
        try:
            step = proceed()
        except StopIteration:
            step = None
        except (interfaces.BadStatusError, interfaces.ReassignedError):
            # the run lost its job: the outcome belongs to another run
            tm.abort()
            record['reassigned'] = True
            self._finish(job, call, record, utils.makeFailure(),
                         level=logging.WARNING)
            return None
        except Exception:
            # the job machinery failed outside the job's own code: fail the
            # job, so that it does not stay ACTIVE holding its agent slot
            failure = utils.makeFailure()
            tm.abort()
            self._failInPlace(job, tm, failure, run.token)
            self._finish(job, call, record, failure)
            return None
        except BaseException:
            utils.safeLog(
                utils.log, logging.CRITICAL,
                '%s was interrupted in thread %s; its dispatcher hands it '
                'back to its retry policy:\n%s',
                call, threading.get_ident(), utils.formatException())
            interruption = utils.makeFailure()
            tm.abort()
            self._finish(job, call, record, interruption)
            self.lost()
            raise
        if step is not None:
            return step
        if job._status == interfaces.ACTIVE and job._inner is None:
            with self._lock:  # it waits for a Deferred: still ours
                self._waiting[run.token] = (run.job_id, pool)
        self._finish(job, call, record, job.result)
        tm.abort()
        return None

    def _failInPlace(self, job, tm, failure, token):
        try:
            if job._status == interfaces.ACTIVE and job._inner is None and \
                    job._run_token == token:
                job._complete(failure, token)
        except interfaces.ReassignedError:
            pass
        except Exception:
            tm.abort()
            utils.safeLog(
                utils.log, logging.CRITICAL,
                'could not store the failure of %r; its dispatcher hands it '
                'back to its retry policy:\n%s', job, utils.formatException())
            self.lost()

    def _finish(self, job, call, record, result, level=None):
        failed = utils.isFailure(result)
        if failed:
            text = result.getTraceback(detail='verbose')
        elif isinstance(result, str):
            text = repr(result)
        else:
            text = utils.shortRepr(result, RESULT_LIMIT)
        text = text[:RESULT_LIMIT]
        record.update(completed=utils.now(), failed=failed, result=text)
        if failed:
            if level is None:
                level = job.failure_log_level or logging.ERROR
            utils.tracelog.log(
                level, '%s failed in thread %s with result:\n%s',
                call, record['thread'], text)
        else:
            utils.tracelog.info(
                '%s succeeded in thread %s with result:\n%s',
                call, record['thread'], text)
