"""``zcasync.local``: what a running job can know about where it runs.

Inside a running job (in a dispatcher's worker thread, or any thread that
calls a job), ``getJob()`` is that job.  When a dispatcher runs the job,
``getDispatcher()``, ``getReactor()``, ``getQueue()`` and
``getAgentName()`` tell where, and the live annotations talk to the rest of
the world through another connection without committing the job's own
transaction::

    zcasync.local.setLiveAnnotation('progress', 0.5)
    answer = zcasync.local.getLiveAnnotation('stop?', timeout=10)

Outside a running job they raise ``ValueError``.

A run can be asked to stop (``job.cancel()``, or its time limit):
``cancelled()`` tells the job, which should then return soon (after the
grace period its dispatcher completes it anyway).  ``snooze(seconds)``
ends the run and puts the job back in its queue for later.  The per-run
state behind them is a ``zcasync.control.RunControl`` (``getRunControl``).
"""
from __future__ import annotations

import pickle
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

import persistent

if TYPE_CHECKING:
    import datetime

    from zcasync.control import RunControl
    from zcasync.dispatcher import Dispatcher
    from zcasync.job import Job
    from zcasync.queue import Queue

_local = threading.local()


def _stack():
    stack = getattr(_local, 'jobs', None)
    if stack is None:
        stack = _local.jobs = []
    return stack


def pushJob(job: Job) -> None:
    _stack().append(job)


def popJob() -> None:
    _stack().pop()


def setDispatcherContext(dispatcher: Dispatcher | None = None,
                         agent_name: str | None = None) -> None:
    """Called by a dispatcher's worker thread (None to clear)."""
    _local.dispatcher = dispatcher
    _local.agent_name = agent_name


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
    _local.before_final_commit = beforeFinalCommit


def settlesLater():
    """Whether a dispatcher does the agent bookkeeping of jobs completing
    in this thread."""
    return getattr(_local, 'before_final_commit', None) is not None


def beforeFinalCommit(job):
    hook = getattr(_local, 'before_final_commit', None)
    if hook is not None:
        hook(job)


# --- the control of the current run (zcasync.control) ----------------------
# Set by a dispatcher's worker thread around each run it starts (None
# outside one): it says whether the run was asked to stop, and runs
# callbacks when it is.  Kept here, with the job stack, so that all of
# this module's per-run state lives in one place.

def setRunControl(control: RunControl | None = None) -> None:
    """Set (or, without argument, clear) the control of the run of this
    thread."""
    _local.run_control = control


def getRunControl() -> RunControl | None:
    """The control of the run in this thread, or None (no dispatcher runs
    a job here: called directly, immediate mode, or no job at all)."""
    return getattr(_local, 'run_control', None)


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
    """The job running in this thread."""
    stack = _stack()
    if not stack:
        raise ValueError(
            'zcasync.local.getJob() is only available inside a running '
            'job, and no job is running in this thread; call it from the '
            'code of a job')
    return stack[-1]


def getQueue() -> Queue | None:
    return getJob().queue


def _fromDispatcher(attribute, what):
    job = getJob()
    value = getattr(_local, attribute, None)
    if value is None:
        raise ValueError(
            'zcasync.local.%s is only available inside a job that a '
            'dispatcher runs; %r runs without one (called directly or in '
            'immediate mode)' % (what, job))
    return value


def getDispatcher() -> Dispatcher:
    return _fromDispatcher('dispatcher', 'getDispatcher()')


def getReactor() -> Any:
    return getDispatcher().reactor


def getAgentName() -> str:
    return _fromDispatcher('agent_name', 'getAgentName()')


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
    re-reading every `poll` seconds; `default` if it never does."""
    dispatcher, job_id = _target(job)
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
