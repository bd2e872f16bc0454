"""The runner's side of coroutine jobs (``zcasync.coroutines``): a base
class of ``zcasync.runner.Runner``, with its coroutine runs.

A claimed ``async def`` job goes to a commit thread of the dispatcher's
event loop (``performElsewhere``), which opens a connection of its own
and runs the job's first step there (``Runner.perform``); a job found to
give an awaitable only when a worker thread called it goes on with that
thread's connection (``Runner.perform`` calls ``_detach``; the thread
opens another).  Either way the run is then *detached*: it holds its
agent's slot (``AgentThreadPool.detached``: known to reconcile, listed as
active) without a thread, its Step is awaited on the loop, and what
follows runs in a commit thread (``resume``), with the run hook that
leaves the agent's bookkeeping to the next poll.  When the run ends, its
connection is closed and its slot freed (a job claimed ahead may start).
The run stays registered with the dispatcher's ``RunWatch`` (stop
requests, time limits) until it ends; when it is forced after its grace
period, ``release`` frees its slot at once and cancels its task again.
"""
import contextvars
import logging
import time

import transaction

from zcasync import coroutines
from zcasync import threadlocal
from zcasync import utils

#: ``Runner.perform``'s answer when the run went on to the event loop.
DETACHED = object()


def settlesLater(job):
    """The run hook of a coroutine run's commits: its agent's bookkeeping
    is left to the next poll, and no next job starts in its commit."""


def closeConnection(conn, tm):
    if conn is not None:
        try:
            tm.abort()
            conn.close()
        except Exception:
            pass


class CoroutineRuns:
    """The coroutine runs of a ``Runner`` (which provides ``dispatcher``,
    ``coroutines`` -- its EventLoop --, ``watch`` -- its RunWatch --,
    ``perform``, ``lost`` and ``_ended``)."""

    def performElsewhere(self, run, pool):
        """Start a claimed coroutine run (held by `pool` as detached) in a
        commit thread, in a connection of its own."""
        try:
            self.coroutines.inCommitThread(self._performElsewhere, run, pool)
        except Exception:
            pool.undetach(run)
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s could not start coroutine job %r; '
                          'it hands it back:\n%s', self.dispatcher.UUID,
                          run.job_id, utils.formatException())
            self.lost()

    def _performElsewhere(self, run, pool):
        tm = transaction.TransactionManager()
        conn = None
        outcome = None
        threadlocal.setDispatcherContext(self.dispatcher, pool.agent_name)
        try:
            if pool.closed:
                return  # its job is handed to recovery by deactivation
            conn = self.dispatcher.db.open(transaction_manager=tm)
            outcome = self.perform(conn, tm, run, pool, chain=False)
        except BaseException:
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s could not run coroutine job %r; '
                          'it hands it back:\n%s', self.dispatcher.UUID,
                          run.job_id, utils.formatException())
            self.lost()
        finally:
            if outcome is not DETACHED:
                pool.undetach(run)
                closeConnection(conn, tm)

    def _detach(self, conn, tm, run, pool, started, step, advance):
        """The run awaits `step`: hand it, its connection and what follows
        (`advance(outcome)`, in a commit thread) to the event loop."""
        pool.detach(run)
        current = [step]  # the Step awaited now

        def release():  # forced (zcasync.runwatch): free the slot now
            pool.undetach(run)
            current[0].cancelAgain()

        def resume(outcome):
            if outcome is coroutines.ABANDONED:  # the dispatcher stopped
                self.watch.end(control)
                pool.undetach(run)
                closeConnection(conn, tm)
                return None
            threadlocal.setRunHooks(settlesLater)
            following = None
            try:
                following = advance(outcome)  # (Step, advance) or None
            finally:
                threadlocal.setRunHooks()
                if following is None:
                    self.watch.end(control)
                    self._ended(pool, run.job_id, time.monotonic() - started)
                    pool.undetach(run)
                    closeConnection(conn, tm)
            if following is None:
                return None
            current[0] = following[0]
            return following[0]
        # this run's zcasync.local, its run control included
        context = contextvars.copy_context()
        control = self.watch.detach(release)
        try:
            self.coroutines.run(step, resume, context)
        except Exception:  # the loop is closed: the dispatcher stops
            step.close()
            self.watch.end(control)
            pool.undetach(run)
            closeConnection(conn, tm)
            utils.safeLog(utils.log, logging.WARNING,
                          'dispatcher %s could not hand coroutine job %r to '
                          'its event loop; it hands it back:\n%s',
                          self.dispatcher.UUID, run.job_id,
                          utils.formatException())
            self.lost()
