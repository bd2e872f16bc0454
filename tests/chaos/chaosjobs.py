"""Job functions for the chaos suite; workers import this module with
``--import tests.chaos.chaosjobs`` (the repository root is on their
PYTHONPATH).

``work(n, path, pause)`` leaves two kinds of traces:

- external, outside any transaction: one ``O_APPEND`` write of
  ``begin N PID RUNID NS`` before it works and ``end N PID RUNID NS ok``
  after (``raised`` instead of ``ok`` when it raised: a disconnection or
  a conflict while loading; RUNID is random per call, NS is
  ``time.monotonic_ns()``, which on
  Linux is one clock for every process of the machine), so that every
  execution, even one whose transaction is later aborted or whose process
  is killed, is on record with its interval;
- transactional, one effect: ``root['chaos'][n]`` (an OOBTree whose keys
  exist before the run, so that no bucket splits) gets ``(PID, RUNID)``
  appended, in the job's own transaction.  The tuple's length is how many
  runs of job N committed; distinct keys merge under BTree conflict
  resolution, two runs of one job conflict.

``awork`` is the same as a coroutine job (``async def``, awaiting
``asyncio.sleep``).  ``slow(n, path, seconds, cooperative)`` and its
coroutine twin ``aslow`` are the jobs the harness cancels or puts with a
time limit: they run for `seconds`, log the same lines and record the
same effect at the end; a cooperative one returns (sync: it polls
``zcasync.local.cancelled()``) or lets ``asyncio.CancelledError`` through
(coroutine) as soon as it is asked to stop, logging ``end ... stopped``
without an effect; one that ignores the request goes on to the end and
records its effect, which the life cycle must then discard.

``noteOutcome(n, result)`` is the callback of a controlled job: in its
own transaction it appends the name of the result's type (the failure's
exception type) to ``root['chaos-outcomes'][n]``, so that the tuple's
length is how many times the job was completed.
"""
import asyncio
import os
import random
import time

import zcasync

#: root keys used by the suite
EFFECTS = 'chaos'
OUTCOMES = 'chaos-outcomes'


def appendLine(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + '\n').encode())
    finally:
        os.close(fd)


class _Run:
    """One logged execution of job `n`: ``begin`` on entry, ``end`` with
    its ``outcome`` on exit (``raised`` unless the job set it)."""

    def __init__(self, n, path):
        self.n, self.path = n, path
        self.pid = os.getpid()
        self.run = '%012x' % random.getrandbits(48)
        self.outcome = 'raised'

    def __enter__(self):
        appendLine(self.path, 'begin %d %d %s %d' % (
            self.n, self.pid, self.run, time.monotonic_ns()))
        return self

    def __exit__(self, *exc_info):
        appendLine(self.path, 'end %d %d %s %d %s' % (
            self.n, self.pid, self.run, time.monotonic_ns(), self.outcome))
        return False

    def recordEffect(self):
        """Append this run to job n's effects, in the job's transaction."""
        job = zcasync.local.getJob()
        effects = job._p_jar.root()[EFFECTS]
        effects[self.n] = effects[self.n] + ((self.pid, self.run),)
        self.outcome = 'ok'


def work(n, path, pause):
    """Log begin, sleep up to `pause` seconds, record the effect, log end
    (also when it raises, e.g. a disconnection while loading); returns
    n."""
    with _Run(n, path) as run:
        time.sleep(random.uniform(0, pause))
        run.recordEffect()
    return n


async def awork(n, path, pause):
    """``work`` as a coroutine job."""
    with _Run(n, path) as run:
        await asyncio.sleep(random.uniform(0, pause))
        run.recordEffect()
    return n


def slow(n, path, seconds, cooperative):
    """Run for `seconds` (in 0.05 s steps); a cooperative run returns
    early, without an effect, once ``zcasync.local.cancelled()``."""
    with _Run(n, path) as run:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cooperative and zcasync.local.cancelled():
                run.outcome = 'stopped'
                return n
            time.sleep(0.05)
        run.recordEffect()
    return n


async def aslow(n, path, seconds, cooperative):
    """``slow`` as a coroutine job: a cooperative one lets the task's
    CancelledError through; one that ignores it swallows every
    cancellation and goes on to the end."""
    with _Run(n, path) as run:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(min(0.05, max(
                    0, deadline - time.monotonic())))
            except asyncio.CancelledError:
                if cooperative:
                    run.outcome = 'stopped'
                    raise
        run.recordEffect()
    return n


def noteOutcome(n, result):
    """Callback: record how controlled job `n` ended; returns the name."""
    from zcasync.utils import isFailure
    name = result.type.__name__ if isFailure(result) else type(
        result).__name__
    outcomes = zcasync.local.getJob()._p_jar.root()[OUTCOMES]
    outcomes[n] = outcomes[n] + (name,)
    return name
