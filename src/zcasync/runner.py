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

Deactivation: ``close()`` drops the runs that no thread has started (their
jobs are handed to recovery by the deactivation that follows) and asks
each thread to stop after its current job; ``join(timeout)`` waits for
them, bounded.
"""
import collections
import logging
import queue as queuemodule
import threading
import time

import transaction

from zcasync import interfaces
from zcasync import threadlocal
from zcasync import utils
from zcasync.history import RESULT_LIMIT

#: A job handed to a pool: (oid, database name), the run's token, and the
#: key of the poll that claimed it.
Run = collections.namedtuple('Run', 'job_id token poll_key')

#: Seconds between attempts to open a connection for a worker thread.
OPEN_RETRY = (0.1, 0.5, 1, 2, 5)


class AgentThreadPool:
    """The worker threads of one agent; one database connection each."""

    def __init__(self, runner, queue_name, agent_name):
        self.runner = runner
        self.queue_name = queue_name
        self.agent_name = agent_name
        self.size = 0
        self.closed = False
        self._queue = queuemodule.Queue()
        self._threads = set()
        self._stops = 0  # stop requests queued and not yet taken
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queued = {}  # token -> Run: handed over, not started
        self.running = {}  # thread ident -> Run

    def setSize(self, size):
        with self._lock:
            difference = size - self.size
            if not difference or (self.closed and difference > 0):
                return
            self.runner.dispatcher._growPool(difference)
            self.size = size
            if difference > 0:
                for i in range(difference):
                    self._startThread()
            else:
                self._stops -= difference
                for i in range(-difference):
                    self._queue.put(None)

    def _startThread(self):
        thread = threading.Thread(
            target=self._run, daemon=True,
            name='zcasync %s/%s' % (self.queue_name or "''", self.agent_name))
        self._threads.add(thread)
        thread.start()

    def perform(self, run):
        """Queue `run` for a thread; False when the pool is closed."""
        with self._lock:
            if self.closed:
                return False
            self._queued[run.token] = run
        self._queue.put(run)
        return True

    def tokens(self):
        """The tokens of the runs queued or running here."""
        with self._lock:
            known = set(self._queued)
            known.update(run.token for run in self.running.values())
        return known

    def activeJobIds(self):
        return [run.job_id for run in list(self.running.values())]

    def close(self):
        """Drop the runs no thread has started and stop every thread after
        its current job; returns the dropped runs."""
        with self._lock:
            self.closed = True
            dropped = list(self._queued.values())
            self._queued.clear()
        self._closing.set()
        self.setSize(0)
        return dropped

    def threads(self):
        with self._lock:
            return list(self._threads)

    def _take(self, run):
        """Start `run` in this thread unless it was dropped meanwhile."""
        with self._lock:
            if self._queued.pop(run.token, None) is None:
                return False
            self.running[threading.get_ident()] = run
            return True

    def _open(self, tm):
        """A connection for this thread; retried (with a pause) until it
        opens or the pool closes (then None)."""
        for attempt in range(1 << 30):
            try:
                return self.runner.dispatcher.db.open(transaction_manager=tm)
            except Exception:
                if attempt == 0:
                    utils.safeLog(
                        utils.log, logging.ERROR,
                        'worker thread of agent %r cannot open a database '
                        'connection; retrying:\n%s', self.agent_name,
                        utils.formatException())
            pause = OPEN_RETRY[min(attempt, len(OPEN_RETRY) - 1)]
            if self._closing.wait(pause):
                return None

    def _run(self):
        tm = transaction.TransactionManager()
        conn = None
        threadlocal.setDispatcherContext(self.runner.dispatcher,
                                         self.agent_name)
        clean_exit = False
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    with self._lock:
                        self._stops -= 1
                    clean_exit = True
                    return
                if not self._take(item):
                    continue  # dropped by close(): handed to recovery
                try:
                    if conn is None:
                        conn = self._open(tm)
                    if conn is not None:
                        self.runner.perform(conn, tm, item, self)
                finally:
                    self.running.pop(threading.get_ident(), None)
        except BaseException:
            utils.safeLog(utils.log, logging.CRITICAL,
                          'worker thread of agent %r died; replacing it:\n%s',
                          self.agent_name, utils.formatException())
            self.runner.lost()
        finally:
            threadlocal.setDispatcherContext()
            if conn is not None:
                try:
                    tm.abort()
                    conn.close()
                except Exception:
                    pass
            with self._lock:
                self._threads.discard(threading.current_thread())
                # threads that will stay once the queued stops are taken
                staying = len(self._threads) - self._stops
                if not clean_exit and not self.closed and \
                        self.size > staying:
                    self._startThread()


class Runner:
    """The pools of one dispatcher, by (queue name, agent name)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.pools = {}
        self._waiting = {}  # token -> job id: runs waiting for a Deferred
        self._lock = threading.Lock()

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
        """The tokens of every run this process will still finish."""
        with self._lock:
            known = set(self._waiting)
        for pool in list(self.pools.values()):
            known.update(pool.tokens())
        return known

    def forget(self, held):
        """Drop waiting runs whose jobs are no longer held (`held`: the
        tokens of the jobs the agents hold)."""
        with self._lock:
            for token in [t for t in self._waiting if t not in held]:
                del self._waiting[token]

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
        pools; returns those still running."""
        deadline = time.monotonic() + timeout
        threads = getattr(self, '_closed_threads', [])
        for thread in threads:
            thread.join(max(0, deadline - time.monotonic()))
        self._closed_threads = [t for t in threads if t.is_alive()]
        return self._closed_threads

    def lost(self):
        """A run ended without finishing its job: have the dispatcher
        reconcile soon."""
        self.dispatcher._reconcileSoon()

    # -- a run, in a worker thread -------------------------------------

    def perform(self, conn, tm, run, pool):
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
        try:
            tm.begin()
            if database_name and database_name != dispatcher.db.database_name:
                job = conn.get_connection(database_name).get(oid)
            else:
                job = conn.get(oid)
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
        try:
            job._runClaimed(run.token)
        except (interfaces.BadStatusError, interfaces.ReassignedError):
            # the run lost its job: the outcome belongs to another run
            tm.abort()
            record['reassigned'] = True
            self._finish(job, call, record, utils.makeFailure(),
                         level=logging.WARNING)
            return
        except Exception:
            # the job machinery failed outside the job's own code: fail the
            # job, so that it does not stay ACTIVE holding its agent slot
            failure = utils.makeFailure()
            tm.abort()
            self._failInPlace(job, tm, failure, run.token)
            self._finish(job, call, record, failure)
            return
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
        if job._status == interfaces.ACTIVE and job._inner is None:
            with self._lock:  # it waits for a Deferred: still ours
                self._waiting[run.token] = run.job_id
        self._finish(job, call, record, job.result)
        tm.abort()

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
