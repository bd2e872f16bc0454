"""``zcasync.local``: what a running job can know about where it runs.

Inside a running job (in a dispatcher's worker thread, or any thread that
calls a job), ``getJob()`` is that job.  When a dispatcher runs the job,
``getDispatcher()``, ``getReactor()``, ``getQueue()`` and
``getAgentName()`` tell where, and the live annotations talk to the rest of
the world through another connection without committing the job's own
transaction::

    zcasync.local.setLiveAnnotation('progress', 0.5)
    answer = zcasync.local.getLiveAnnotation('stop?', timeout=10)
    answer = await zcasync.local.getLiveAnnotationAsync('stop?', timeout=10)

(the last in a coroutine job: ``getLiveAnnotation`` would block its event
loop while waiting; ``setLiveAnnotation`` only waits briefly for the
dispatcher's reactor thread to take the value).

Outside a running job they raise ``ValueError``.

A run can be asked to stop (``job.cancel()``, or its time limit):
``cancelled()`` tells the job, which should then return soon (after the
grace period its dispatcher completes it anyway; a coroutine job has
``asyncio.CancelledError`` raised at its next await).  ``snooze(seconds)``
ends the run and puts the job back in its queue for later.  The per-run
state behind them is a ``zcasync.control.RunControl`` (``getRunControl``).

The state lives in context variables, not in ``threading.local``: each
thread has its own context, and so has each asyncio task, so that the
many coroutine jobs one event loop thread runs at once
(``zcasync.coroutines``) each see their own job and run control.
"""
from __future__ import annotations

import contextvars
import pickle
import time
from typing import TYPE_CHECKING, Any, NoReturn

import persistent

if TYPE_CHECKING:
    import datetime

    from zcasync.control import RunControl
    from zcasync.dispatcher import Dispatcher
    from zcasync.job import Job
    from zcasync.queue import Queue

# the running jobs (innermost last): a tuple, never changed in place, so
# that a copied context (an asyncio task's) keeps the stack it was given
_jobs: contextvars.ContextVar[tuple[Job, ...]] = contextvars.ContextVar(
    'zcasync.jobs', default=())
_dispatcher: contextvars.ContextVar[Any] = contextvars.ContextVar(
    'zcasync.dispatcher', default=None)
_agent_name: contextvars.ContextVar[Any] = contextvars.ContextVar(
    'zcasync.agent_name', default=None)
_before_final_commit: contextvars.ContextVar[Any] = contextvars.ContextVar(
    'zcasync.before_final_commit', default=None)
_run_control: contextvars.ContextVar[RunControl | None] = (
    contextvars.ContextVar('zcasync.run_control', default=None))


def _stack():
    return _jobs.get()


def pushJob(job: Job) -> None:
    _jobs.set(_jobs.get() + (job,))


def popJob() -> None:
    _jobs.set(_jobs.get()[:-1])


def setDispatcherContext(dispatcher: Dispatcher | None = None,
                         agent_name: str | None = None) -> None:
    """Called by a dispatcher's worker thread (None to clear)."""
    _dispatcher.set(dispatcher)
    _agent_name.set(agent_name)


# --- the runner's hooks into a run (zcasync.runner) -----------------------
# A dispatcher's worker thread leaves the agent's bookkeeping of a
# completed job (releasing its slot, recording it as completed) to the
# dispatcher's next poll, batched with its claims; and it may start its
# next job in the commit that ends the current one.

def setRunHooks(beforeFinalCommit=None):
    """Set (or, without argument, clear) the hooks of the runs in this
    thread: while set, agent bookkeeping is left to the dispatcher, and
    ``beforeFinalCommit(job)`` is called in the transaction of the commit
    that completes a job."""
    _before_final_commit.set(beforeFinalCommit)


def settlesLater():
    """Whether a dispatcher does the agent bookkeeping of jobs completing
    in this thread."""
    return _before_final_commit.get() is not None


def beforeFinalCommit(job):
    hook = _before_final_commit.get()
    if hook is not None:
        hook(job)


# --- the control of the current run (zcasync.control) ----------------------
# Set by a dispatcher's worker thread around each run it starts (None
# outside one): it says whether the run was asked to stop, and runs
# callbacks when it is.  Kept here, with the job stack, so that all of
# this module's per-run state lives in one place.

def setRunControl(control: RunControl | None = None) -> None:
    """Set (or, without argument, clear) the control of the run of this
    thread (or asyncio task)."""
    _run_control.set(control)


def getRunControl() -> RunControl | None:
    """The control of the run in this thread, or None (no dispatcher runs
    a job here: called directly, immediate mode, or no job at all)."""
    return _run_control.get()


def cancelled() -> bool:
    """True once this run was asked to stop (``job.cancel()``, or its time
    limit passed); the job should then return soon.  False outside a run
    that a dispatcher controls, and in callbacks of the run's job."""
    control = getRunControl()
    if control is None or control.stopRequested is None:
        return False
    stack = _stack()
    return not stack or control.controls(stack[-1])


def snooze(seconds: float | datetime.timedelta) -> NoReturn:
    """End this run now and put the job back in its queue, to start again
    after `seconds` (a number >= 0 or a timedelta); neither a retry nor an
    interruption is counted, and ``annotations['zcasync.snoozes']`` counts
    the snoozes.  Raises (never returns): do not catch ``BaseException``
    around it."""
    from zcasync import control
    raise control.snoozeRequest(getJob(), seconds)


def getJob() -> Job:
    """The job running in this thread (or asyncio task)."""
    stack = _stack()
    if not stack:
        raise ValueError(
            'zcasync.local.getJob() is only available inside a running '
            'job, and no job is running in this thread; call it from the '
            'code of a job')
    return stack[-1]


def getQueue() -> Queue | None:
    return getJob().queue


def _fromDispatcher(var, what):
    job = getJob()
    value = var.get()
    if value is None:
        raise ValueError(
            'zcasync.local.%s is only available inside a job that a '
            'dispatcher runs; %r runs without one (called directly or in '
            'immediate mode)' % (what, job))
    return value


def getDispatcher() -> Dispatcher:
    return _fromDispatcher(_dispatcher, 'getDispatcher()')


def getReactor() -> Any:
    return getDispatcher().reactor


def getAgentName() -> str:
    return _fromDispatcher(_agent_name, 'getAgentName()')


class _NoPersistent(pickle.Pickler):

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent):
            raise ValueError(
                'a live annotation must not be or contain a persistent '
                'object (found %r); store plain values (numbers, strings, '
                'lists, dicts), or an oid to look the object up' % (obj,))
        return None


def checkPlainValue(value: Any) -> None:
    import io
    try:
        _NoPersistent(io.BytesIO()).dump(value)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError('a live annotation must be picklable: %r (%s)'
                         % (value, e)) from None


def _target(job):
    if job is None:
        job = getJob()
    oid = job._p_oid
    if oid is None or job._p_jar is None:
        raise ValueError('live annotations need a stored job; %r is not '
                         'stored' % (job,))
    return getDispatcher(), (oid, job._p_jar.db().database_name)


def setLiveAnnotation(name: str, value: Any, job: Job | None = None) -> None:
    """Write ``job.annotations[name] = value`` at once, in another
    connection (the dispatcher's), so that other processes see it without
    this job committing."""
    checkPlainValue(value)
    dispatcher, job_id = _target(job)
    dispatcher.callInReactor(
        dispatcher._setLiveAnnotation, job_id, name, value)


_MISSING = object()


def getLiveAnnotation(name: str, default: Any = None, timeout: float = 0,
                      poll: float = 1, job: Job | None = None) -> Any:
    """Read ``job.annotations[name]`` as committed now (not as of this
    job's transaction), waiting up to `timeout` seconds for it to appear,
    re-reading every `poll` seconds; `default` if it never does.  In a
    coroutine job, waiting would block the event loop: await
    ``getLiveAnnotationAsync`` instead."""
    dispatcher, job_id = _target(job)
    if timeout > 0 and _inEventLoop():
        raise ValueError(
            'zcasync.local.getLiveAnnotation(%r, timeout=%r) would block the '
            'event loop of this coroutine job while it waits; use '
            '"await zcasync.local.getLiveAnnotationAsync(...)" instead'
            % (name, timeout))
    deadline = time.monotonic() + timeout
    while True:
        value = dispatcher.callInReactor(
            dispatcher._getLiveAnnotation, job_id, name, _MISSING)
        if value is not _MISSING:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return default
        time.sleep(min(poll, remaining))


def _inEventLoop():
    import asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def getLiveAnnotationAsync(name: str, default: Any = None,
                                 timeout: float = 0, poll: float = 1,
                                 job: Job | None = None) -> Any:
    """``getLiveAnnotation`` for coroutine jobs: reads in another thread
    and waits with ``asyncio.sleep``, so that the event loop goes on
    running the other coroutines meanwhile."""
    import asyncio
    dispatcher, job_id = _target(job)
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(
            dispatcher.callInReactor, dispatcher._getLiveAnnotation, job_id,
            name, _MISSING)
        if value is not _MISSING:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return default
        await asyncio.sleep(min(poll, remaining))
