"""Coroutine jobs: a job whose callable is an ``async def`` function or
method (or returns an awaitable) is awaited on an asyncio event loop.

The life cycle (``zcasync.lifecycle``) runs as steps: when the callable
gives an awaitable, the run yields it (a ``Step``) and its driver sends
back the outcome -- the result, or a Failure marked as raised, that the
retry policy then judges as any job's.  Two drivers:

- ``runSteps``, in the calling thread: ``job()`` and immediate mode
  (``zcasync.testing.runQueuedJobs``) run the coroutine to completion with
  ``asyncio.run``.  From inside a running event loop that would block the
  loop: ``job()`` of an ``async def`` callable raises a RuntimeError there
  (nothing stored changes), and a sync callable that returns an awaitable
  there fails its job with that error.
- ``EventLoop``, a dispatcher's (``zcasync.runner``): one event loop
  thread shared by all its agents, and a few *commit threads*.  A
  coroutine run's job is loaded and called in a connection of its own
  (its own TransactionManager: the loop is shared), the coroutine is
  awaited on the loop without holding any worker thread, and what follows
  it -- storing the result, the commit, the retry policy's decisions,
  callbacks -- runs in a commit thread, so that commits never block the
  loop.  An agent's slots count coroutine runs as they count threads.

Why one shared loop thread rather than a loop per worker thread
(``benchmarks/coroutine_loops.py``, 4 submitting threads, 2 cores): 200
coroutines sleeping 1 s take 1.010-1.015 s on one shared loop and
1.011-1.014 s spread over 4 loops; 20000 tiny coroutines are handed over
at 22,000/s to one loop and 20,700-23,400/s to 4 loops -- the same
within noise (the GIL serialises them anyway).  A shared loop is then
the simpler choice: its runs do not depend on worker threads that a
pool shrinks or replaces, there is one place to cancel a task from, and
a coroutine job never waits for a busy worker thread to come back to
its loop.  With it, ``benchmarks/coroutine_bench.py`` (200 jobs each
awaiting ``asyncio.sleep(1)``, an agent of size 200, FileStorage, a real
dispatcher) measured 1.55-1.79 s from release to the last completion, all
200 asleep at once, 1 worker thread and 6 threads in all: about 0.1 s
until the first start (the claim), 0.27 s until all had started, and the
rest is the 200 commits (one per job, serialised by the storage).

Stopping a run (cancellation, time limits: ``zcasync.control``) maps
onto task cancellation through the run's ``control.RunControl``
(``_runControlFor``): when the run is asked to stop, the coroutine gets
``asyncio.CancelledError`` at its next await and, unless it swallows it,
the job fails with the stop's error (``interfaces.CancelledError`` or
``TimeLimitError``, not with CancelledError from asyncio).  A coroutine
that swallows it is completed without it after the grace period
(``zcasync.runwatch``), its task cancelled again (``Step.cancelAgain``).
``zcasync.local.snooze()`` raises ``control.Snooze``, a BaseException: the
Step catches it, and the life cycle snoozes the job as any other.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
from typing import Any, Callable

import twisted.internet.defer

from zcasync import control
from zcasync import threadlocal
from zcasync import utils
from zcasync.control import RunControl

#: Threads that start coroutine runs and commit what they did (per
#: dispatcher).
COMMIT_THREADS = 4

#: What ``EventLoop.run``'s `resume` gets when the loop was closed while
#: its run went on: end the run without committing anything (its job was
#: handed to recovery by the deactivation).
ABANDONED = object()


def isAwaitable(value: Any) -> bool:
    """Whether a callable's return value is to be awaited (a Deferred,
    though awaitable, keeps its own handling)."""
    return inspect.isawaitable(value) and \
        not isinstance(value, twisted.internet.defer.Deferred)


def _coroutineFunction(target):
    try:
        return inspect.iscoroutinefunction(target)
    except Exception:
        return False


def isCoroutineCallable(root: Any, name: str | None = None) -> bool:
    """Whether the callable stored as (`root`, `name`) (see
    ``zcasync.callables.splitCallable``) is an ``async def``; looked up on
    the class, so that a ghost root is not loaded."""
    try:
        if name is not None:
            return _coroutineFunction(
                inspect.getattr_static(type(root), name, None))
        if inspect.isfunction(root) or inspect.ismethod(root) or \
                isinstance(root, functools.partial):
            return _coroutineFunction(root)
        return _coroutineFunction(
            inspect.getattr_static(type(root), '__call__', None))
    except Exception:
        return False


def isCoroutineJob(job: Any) -> bool:
    """Whether `job` is an ``async def`` job (known before calling it; a
    sync callable that returns an awaitable is found out when called)."""
    return isCoroutineCallable(getattr(job, '_callable_root', None),
                               getattr(job, '_callable_name', None))


def _loopRunningHere():
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_IN_LOOP = (
    '%r is a coroutine job, and this thread runs an asyncio event loop: '
    'running it here to completion would block that loop.  Put the job in '
    'a queue (a dispatcher awaits it on its own loop), or call it from a '
    'thread without a running event loop')


def checkCallable(job: Any) -> None:
    """Before ``job()`` marks the job active: refuse to run an ``async
    def`` job from inside a running event loop (nothing stored
    changes)."""
    if _loopRunningHere() and isCoroutineCallable(job._callable_root,
                                                  job._callable_name):
        raise RuntimeError(_IN_LOOP % (job,))


# --- stopping a run: its run control -------------------------------------

def _runControlFor(job: Any) -> RunControl | None:
    """The run control (``zcasync.control.RunControl``) of the run of
    `job` going on here, or None (no dispatcher watches it: called
    directly, immediate mode).  It is in ``zcasync.threadlocal``'s context
    variables: set by the worker thread (``zcasync.runwatch``) around the
    run, and copied with the context into the run's task and into the
    commit threads that go on with it, so that a retry in the same run
    finds it too."""
    control_ = threadlocal.getRunControl()
    if control_ is None or not control_.controls(job):
        return None
    return control_


class Step:
    """What a coroutine run waits for: the awaitable the callable of `job`
    gave, with the run control of its run (looked up where the callable
    was called)."""

    def __init__(self, job: Any, awaitable: Any) -> None:
        self.job = job
        self.awaitable = awaitable
        self.control = _runControlFor(job)
        self._again: Callable[[], Any] | None = None

    def close(self) -> None:
        """It will not be awaited."""
        close = getattr(self.awaitable, 'close', None)
        if close is not None:
            close()

    def cancelAgain(self) -> None:
        """(any thread) Cancel the task awaiting this step once more, if it
        still does: its run was asked to stop and went on (the coroutine
        swallowed the CancelledError), and its dispatcher completed its job
        without it (``zcasync.runwatch``)."""
        again = self._again
        if again is not None:
            again()

    async def outcome(self) -> Any:
        """Await it in the current task, with ``zcasync.local`` knowing the
        job: its result, or a Failure marked as raised (an exception, or
        a requested stop: the stop's error)."""
        job = self.job
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        stopped: list[BaseException] = []
        awaiting = [True]

        def cancel():
            if awaiting[0] and task is not None:
                task.cancel()

        def wake():
            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:
                pass  # the loop is closed: this run is over

        def onStop(error):
            stopped.append(error)
            wake()

        self._again = wake
        if self.control is not None:
            self.control.onStop(onStop)
        threadlocal.pushJob(job)
        try:
            try:
                return await self.awaitable
            finally:
                awaiting[0] = False
                self._again = None
        except asyncio.CancelledError:
            if not stopped:
                return job._raisedFailure()
            uncancel = getattr(task, 'uncancel', None)  # Python >= 3.11
            if uncancel is not None:
                uncancel()
            try:
                raise stopped[0]
            except BaseException:
                return job._raisedFailure()
        except control.Snooze as snoozed:
            # zcasync.local.snooze(): the life cycle puts the job back (a
            # BaseException, which must not end the task on a shared loop)
            return snoozed
        except Exception:
            return job._raisedFailure()
        except BaseException:
            # e.g. SystemExit: it would end the run's task without its
            # outcome (or stop a shared loop): the job fails with it
            return job._raisedFailure()
        finally:
            threadlocal.popJob()


def _runHere(step):
    if _loopRunningHere():
        step.close()
        try:
            raise RuntimeError(_IN_LOOP % (step.job,))
        except RuntimeError:
            return step.job._raisedFailure()
    return asyncio.run(step.outcome())


def runSteps(steps: Any) -> Any:
    """Drive the steps of a run (``JobLifeCycle._executeSteps``) in this
    thread, awaiting each Step with ``asyncio.run``; returns what they
    return."""
    try:
        step = next(steps)
    except StopIteration as done:
        return done.value
    while True:
        try:
            step = steps.send(_runHere(step))
        except StopIteration as done:
            return done.value


# --- a dispatcher's event loop --------------------------------------------

class EventLoop:
    """A dispatcher's event loop thread for coroutine runs, and its commit
    threads; started at the first run."""

    def __init__(self, name: str = 'zcasync') -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.runs = 0  # runs handed over and not ended
        self._tasks: set[asyncio.Task[Any]] = set()
        self._awaiting: set[asyncio.Task[Any]] = set()  # in a Step
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self.closed = False
        self.abandoned = False

    def _ensure(self):
        with self._lock:
            if self.closed:
                raise RuntimeError('the event loop of %s is closed'
                                   % self.name)
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                self.executor = concurrent.futures.ThreadPoolExecutor(
                    COMMIT_THREADS,
                    thread_name_prefix='%s coroutine commits' % self.name)
                self.thread = threading.Thread(
                    target=self._runLoop, daemon=True,
                    name='%s event loop' % self.name)
                self.thread.start()
            return self.loop

    def _runLoop(self):
        """(the loop's thread) Run the loop until it is stopped: asyncio
        lets SystemExit and KeyboardInterrupt raised in a callback or task
        (a job's own, e.g. one it created) out of ``run_forever``; the
        loop goes on with the runs it holds."""
        loop = self.loop
        assert loop is not None
        while True:
            try:
                loop.run_forever()
                return  # stopped (close)
            except BaseException:
                if loop.is_closed():
                    return
                utils.safeLog(utils.log, logging.CRITICAL,
                              'an exception escaped to the event loop of %s '
                              '(raised by a callback or task of a coroutine '
                              'job?); the loop goes on:\n%s', self.name,
                              utils.formatException())

    def threads(self) -> list[threading.Thread]:
        """The threads of this event loop (the loop's and the commit
        threads)."""
        threads = [self.thread] if self.thread is not None else []
        if self.executor is not None:
            threads.extend(getattr(self.executor, '_threads', ()))
        return threads

    def inCommitThread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Call `func(*args)` in a commit thread (a Future)."""
        self._ensure()
        assert self.executor is not None
        return self.executor.submit(contextvars.copy_context().run,
                                    func, *args)

    def run(self, step: Step, resume: Callable[[Any], Any],
            context: contextvars.Context) -> None:
        """(any thread) Await `step` on the loop, in a task with
        `context`; then, in a commit thread, `resume(outcome)` returns the
        next Step, or None when the run ended."""
        loop = self._ensure()
        with self._lock:
            if self.closed:  # closed since: its loop may stop before it
                raise RuntimeError('the event loop of %s is closed'
                                   % self.name)
            self.runs += 1
        loop.call_soon_threadsafe(self._begin, step, resume, context)

    def _begin(self, step, resume, context):
        assert self.loop is not None
        # (the task copies the current context: `context`, here; Python
        # 3.10 has no create_task(context=...))
        task = context.run(self.loop.create_task, self._drive(step, resume))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, step, resume):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        try:
            while step is not None:
                if self.abandoned:
                    step.close()
                    outcome = ABANDONED
                else:
                    self._awaiting.add(task)
                    try:
                        outcome = await step.outcome()
                    finally:
                        self._awaiting.discard(task)
                    if self.abandoned:
                        outcome = ABANDONED
                step = await loop.run_in_executor(
                    self.executor, contextvars.copy_context().run, resume,
                    outcome)
        except BaseException:
            utils.safeLog(utils.log, logging.CRITICAL,
                          'the coroutine run of %r ended abnormally:\n%s',
                          getattr(step, 'job', None), utils.formatException())
        finally:
            with self._lock:
                self.runs -= 1
                self._ended.notify_all()
                last = self.closed and self.runs <= 0
            if last:
                self._stop()

    def join(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the runs to end; returns how
        many still go on."""
        with self._lock:
            self._ended.wait_for(lambda: self.runs <= 0, timeout)
            return self.runs

    def close(self) -> None:
        """Stop the loop and its commit threads: at once when no run goes
        on; else cancel the runs awaiting (their jobs were handed to
        recovery: they end without committing) and stop after the last."""
        with self._lock:
            self.closed = True
            if self.loop is None:
                return
            runs = self.runs
        if runs:
            self.loop.call_soon_threadsafe(self._abandon)
        else:
            self._stop()

    def _abandon(self):
        self.abandoned = True
        for task in list(self._awaiting):
            task.cancel()

    def _stop(self):
        loop, executor = self.loop, self.executor
        assert loop is not None and executor is not None
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass  # already closed
        executor.shutdown(wait=False)
