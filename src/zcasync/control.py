"""Control of a job's run: cancellation, time limits and snooze.

*Cancel* (``job.cancel(grace=None)``).  A job that has not started --
pending, scheduled (``begin_after``), parked, blocked by a quota, or
claimed ahead by an agent -- is taken out of where it waits and completed
at once with a ``CancelledError`` failure (its callbacks run).  A running
job is *asked to stop*: the request is stored in its annotations
(``STOP_KEY``, tied to the token of the run it targets, so that a later
run is not affected), where any process can write it without conflicting
with the run's own commit.  The dispatcher running the job hears of it
through the invalidations it already listens to (``zcasync.runwatch``),
and ``zcasync.local.cancelled()`` becomes True in the job.  After `grace`
seconds the dispatcher completes the job with CancelledError under a new
run token whatever its thread does (its late result is discarded), and
replaces that thread if it is still stuck.  Cancelling a job that has
completed, or runs its callbacks, is an error (BadStatusError).

*Time limits* (``job.timeout``, ``queue.put(job, timeout=...)``): a run
longer than that is stopped the same way with a ``TimeLimitError`` (a
``zcasync.interfaces.TimeoutError``); the job's retry policy decides
whether it runs again.  The deadlines are kept by the dispatcher's reactor
(``zcasync.runwatch``), not by sleeping threads.

*Snooze* (``zcasync.local.snooze(seconds)`` inside a job): ends the run
(raising ``Snooze``, which the life cycle catches) and puts the job back in
its queue to start after `seconds`, without counting a retry or an
interruption; ``annotations['zcasync.snoozes']`` counts them.

The per-run state is a ``RunControl``, set in ``zcasync.threadlocal`` by
the worker thread around each run: whoever asks the run to stop calls
``requestStop(error)``, and the run (or anything running it, e.g. an
asyncio task) learns of it through ``stopRequested`` or ``onStop``.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

import transaction.interfaces

from zcasync import interfaces
from zcasync import threadlocal
from zcasync import utils
from zcasync.interfaces import NEW, ACTIVE, CALLBACKS, COMPLETED

if TYPE_CHECKING:
    from zcasync.job import Job

#: The annotation holding a request to stop a running job.
STOP_KEY = 'zcasync.stop'
#: The annotation counting a job's snoozes.
SNOOZES = 'zcasync.snoozes'
#: Seconds a run asked to stop (cancel) has before it is completed anyway.
DEFAULT_GRACE = 5.0
#: Attempts of the commit of a cancellation (conflicts only).
CANCEL_ATTEMPTS = 30


class RunControl:
    """The control of one run of a job: whether it was asked to stop.

    ``requestStop(error)`` asks (from any thread; only the first request
    counts); ``stopRequested`` is that error, or None; ``onStop(callback)``
    has ``callback(error)`` called once, in the thread that asks, or at
    once if the run was asked already.  `job_id` ((oid, database name))
    names the job of the run, `token` its run token.
    """

    def __init__(self, job_id: Any = None, token: str | None = None) -> None:
        self.job_id = job_id
        self.token = token
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[BaseException], Any]] = []

    @property
    def stopRequested(self) -> BaseException | None:
        """The error the run was asked to stop with, or None."""
        return self._error

    @property
    def cancelled(self) -> bool:
        """Whether the run was asked to stop by a cancel (a request that
        nothing overrides)."""
        return isinstance(self._error, interfaces.CancelledError)

    def requestStop(self, error: BaseException) -> bool:
        """Ask the run to stop with `error`; False (and nothing happens)
        when it was asked already -- except that a cancel
        (CancelledError) overrides an earlier request of another kind (a
        time limit, which a retry policy may run again): the run then
        ends with it, and its callbacks are not called again."""
        with self._lock:
            if self._error is not None:
                if self.cancelled or not isinstance(
                        error, interfaces.CancelledError):
                    return False
                self._error = error
                return True
            self._error = error
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _callSafely(callback, error)
        return True

    def onStop(self, callback: Callable[[BaseException], Any]) -> None:
        """Call ``callback(error)`` once when the run is asked to stop (at
        once, in this thread, if it was already)."""
        with self._lock:
            error = self._error
            if error is None:
                self._callbacks.append(callback)
                return
        _callSafely(callback, error)

    def controls(self, job: Job) -> bool:
        """Whether `job` is the job of this run (not, e.g., a callback
        running in the same thread)."""
        return self.job_id is None or utils.jobId(job) == self.job_id

    def __repr__(self):
        return '<RunControl of %r, token %s%s>' % (
            self.job_id, self.token, '' if self._error is None else
            ', asked to stop: %r' % (self._error,))


def _callSafely(callback, error):
    try:
        callback(error)
    except Exception:
        utils.safeLog(utils.log, logging.ERROR,
                      'a stop callback %r failed:\n%s', callback,
                      utils.formatException())


# --- checking values ---------------------------------------------------------

def seconds(value: Any, what: str, remedy: str) -> float:
    """`value` (a number or a timedelta) as seconds >= 0, or a clear
    error."""
    if isinstance(value, datetime.timedelta):
        number = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise TypeError('%s must be a number of seconds or a timedelta, '
                        'not %r' % (what, value))
    if not number >= 0 or number == float('inf'):
        raise ValueError('%s must be a finite number of seconds >= 0, not '
                         '%r; %s' % (what, value, remedy))
    return number


def checkTimeout(value: Any) -> datetime.timedelta | None:
    """A job's time limit: None, or a positive timedelta."""
    if value is None:
        return None
    if not isinstance(value, datetime.timedelta):
        raise TypeError('a time limit (timeout) must be a datetime.timedelta '
                        'or None, not %r' % (value,))
    if value <= datetime.timedelta(0):
        raise ValueError('a time limit (timeout) must be positive, not %r; '
                         'use None for no limit' % (value,))
    return value


def timeLimitError(job: Any, timeout: datetime.timedelta) -> BaseException:
    """The error of a run of `job` (or its repr) that went on longer than
    `timeout`."""
    return interfaces.TimeLimitError(
        'time limit exceeded: %s ran longer than its time limit of %g s'
        % (job, timeout.total_seconds()))


# --- hooks of the life cycle (zcasync.lifecycle) ----------------------------

def outcome(job: Job, res: Any) -> Any:
    """What a run of `job` that returned (or raised) `res` ends with: the
    stop error as a failure when the run was asked to stop, else `res`."""
    control = threadlocal.getRunControl()
    if control is None or not control.controls(job):
        return res
    error = control.stopRequested
    if error is None:
        return res
    if isinstance(res, Snooze):
        res = None
    failure = utils.makeFailure(error)
    failure._zcasync_raised = True
    return failure


def decide(job: Job, policy: Any, failure: Any, data_cache: Any) -> Any:
    """The retry decision for a run that raised `failure`: a cancelled
    run is never retried; anything else is its policy's (retrying a run
    that was asked to stop -- a time limit -- means another run, from its
    queue)."""
    if failure.check(interfaces.CancelledError) is not None:
        return False
    control = threadlocal.getRunControl()
    if control is not None and control.controls(job) and \
            cancelRequest(job, control.token) is not None:
        return False  # cancelled too, after it was asked to stop
    decision = policy.jobError(failure, data_cache)
    if decision is True and control is not None and \
            control.controls(job) and control.stopRequested is not None:
        # "retry now" in this run would start under a stopped control
        # past its deadline (failing at once): give it a run of its own
        return datetime.timedelta(0)
    return decision


class Snooze(BaseException):
    """Raised by ``zcasync.local.snooze(seconds)``: the life cycle ends the
    run and puts the job back in its queue for later.  A BaseException, so
    that ``except Exception`` in the job does not swallow it."""

    def __init__(self, job: Job, seconds: float) -> None:
        super().__init__('%r snoozes for %g s' % (job, seconds))
        self.job = job
        self.seconds = seconds


def snoozeRequest(job: Job, value: Any) -> Snooze:
    """The Snooze to raise for `job`, or a clear error."""
    delay = seconds(value, 'snooze()', 'give how long to wait before the '
                    'job runs again')
    if job.isCallback:
        raise ValueError(
            'zcasync.local.snooze() ends a run and puts its job back in its '
            'queue, but %r is a callback: it runs with its parent job, not '
            'from a queue' % (job,))
    if job.queue is None:
        raise ValueError(
            'zcasync.local.snooze() ends a run and puts its job back in its '
            'queue, but %r belongs to no queue (it was called directly); '
            'put it in a queue (queue.put) to snooze it' % (job,))
    return Snooze(job, delay)


def snoozeRun(job: Job, snoozed: Snooze, tm: Any, token: str, policy: Any,
              data_cache: Any) -> None:
    """The run of `job` snoozed: abort its work, put it back in its queue
    to start after the delay, count the snooze (one commit, owned)."""
    from zcasync.interfaces import IAgent
    job._abortRun(tm, token, policy, data_cache)
    queue = job.queue
    when = utils.now() + datetime.timedelta(seconds=snoozed.seconds)

    def apply():
        if data_cache:
            policy.updateData(data_cache)
        annotations = job.annotations
        annotations[SNOOZES] = annotations.get(SNOOZES, 0) + 1
        parent = job.parent
        if IAgent.providedBy(parent):
            parent.remove(job)
        job._resetForRetry()
        job._requeue(queue, when)
    job._commitOwned(tm, token, apply)
    utils.safeLog(utils.tracelog, logging.INFO,
                  '%r snoozed: back in its queue, to start at %s', job,
                  job.begin_after)


# --- stop requests, stored ---------------------------------------------------

def stopRequest(job: Job, token: str | None) -> dict[str, Any] | None:
    """The request (a dict) to stop the run of `job` holding `token`, or
    None.  Reads without writing."""
    request = job.peekAnnotations().get(STOP_KEY)
    if isinstance(request, dict) and request.get('token') == token:
        return request
    return None


def cancelRequest(job: Job, token: str | None) -> BaseException | None:
    """The CancelledError of a cancel stored for the run of `job` holding
    `token`, or None."""
    request = stopRequest(job, token)
    if request is None or request.get('reason') != 'cancel':
        return None
    return stopError(job, request)


def cancelledRun(job: Job) -> BaseException | None:
    """The CancelledError of a job whose current run (ACTIVE since
    ``active_start``) was cancelled, whatever its token is now (recovery
    replaces it), or None: a run cancelled before its process died is not
    run again."""
    request = job.peekAnnotations().get(STOP_KEY)
    start = job.active_start
    if not isinstance(request, dict) or start is None or \
            request.get('reason') != 'cancel':
        return None
    try:
        requested = datetime.datetime.fromisoformat(request['requested'])
    except (KeyError, TypeError, ValueError):
        return None
    return stopError(job, request) if requested >= start else None


def stopError(job: Job, request: dict[str, Any]) -> BaseException:
    return interfaces.CancelledError(
        '%r was cancelled while it ran (asked to stop at %s, grace %g s)'
        % (job, request.get('requested'), request.get('grace', 0)))


# --- cancel -----------------------------------------------------------------

CANCELLED = 'cancelled'  # completed with CancelledError
STOPPING = 'stopping'  # a running job was asked to stop
REMOVED = 'removed'  # a parked job this process cannot store: only removed


def cancelJob(job: Job, grace: Any = None) -> str:
    """``job.cancel(grace)`` (see the module docstring); commits, like
    ``job.fail()``.  Returns CANCELLED (the job completed with
    CancelledError), STOPPING (it runs and was asked to stop) or REMOVED (a
    parked job whose module this process cannot import: taken out of its
    queue, unchanged)."""
    grace = DEFAULT_GRACE if grace is None else seconds(
        grace, 'the grace period of a cancel', 'give how long a running job '
        'may take to stop (0: at once)')
    tm = job._tm()
    for attempt in range(1, CANCEL_ATTEMPTS + 1):
        try:
            done, token = _applyCancel(job, grace)
            if done == REMOVED:
                # nothing of the job may be written: it reads NEW
                job._commit(tm)
                return REMOVED
            job._commit(tm)
            break
        except transaction.interfaces.TransientError:
            job._abort(tm)
            if attempt == CANCEL_ATTEMPTS:
                raise
        except BaseException:
            job._abort(tm)
            raise
    if done == CANCELLED:
        job._logOutcome()
        job._runCallbacks(tm, token)
    else:
        utils.safeLog(utils.log, logging.INFO,
                      '%r was asked to stop (cancelled while running; grace '
                      '%g s)', job, grace)
    return done


def _applyCancel(job, grace):
    status = job._status
    if status in (CALLBACKS, COMPLETED):
        raise interfaces.BadStatusError(
            'cannot cancel %r: it is %s; it has already run, so there is '
            'nothing to cancel' % (job, job.status))
    if status == ACTIVE and job._inner is None:
        token = job._run_token
        job.annotations[STOP_KEY] = {
            'token': token, 'requested': utils.now().isoformat(),
            'grace': grace, 'reason': 'cancel'}
        tree = job._annotations
        if tree is not None:  # the tree's own record changes, bucket or not
            tree._p_changed = True
        return STOPPING, token
    if status == NEW and not _takeOut(job):
        return REMOVED, None
    # not started (or waiting for an inner job): complete it now, under a
    # token of its own (an inner job completing later is then ignored)
    token = job._run_token = _newToken()
    job._setResult(utils.makeFailure(interfaces.CancelledError(
        '%r was cancelled before it %s' % (
            job, 'started' if status == NEW else 'finished waiting for %r'
            % (job._inner,)))), token)
    return CANCELLED, token


def _newToken():
    from zcasync.lifecycle import _newToken
    return _newToken()


def _takeOut(job):
    """Take a job that has not started out of its queue or agent; False
    when it cannot be stored again here (a parked job)."""
    parent = job.parent
    if interfaces.IQueue.providedBy(parent):
        storable = job.loadProblem() is None
        queue = parent
        queue.remove(job)
        if not storable:
            return False
        _recordCancelled(queue, job)
    elif interfaces.IAgent.providedBy(parent):
        queue = parent.queue
        parent.remove(job)
        if queue is not None:
            _recordCancelled(queue, job)
    return True


def _recordCancelled(queue, job):
    """Keep a job cancelled before it started in its queue's collection
    of such jobs (made on first use; newest first, pruned as the agents'
    completed jobs are).  The job keeps the collection as its parent, so
    that ``job.queue`` still finds the queue."""
    jobs = queue._cancelled
    if jobs is None:
        from zcasync.agent import CompletedJobs
        jobs = queue._cancelled = CompletedJobs()
        jobs.parent = queue
    job.parent = jobs
    job.active_end = utils.now()
    jobs.add(job, keep=queue.completed_keep)


def cancelledJobs(queue: Any) -> Any:
    """The jobs of `queue` cancelled before they started (a completed
    collection, newest first), or None."""
    return getattr(queue, '_cancelled', None)
