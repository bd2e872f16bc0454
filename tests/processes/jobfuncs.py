"""Job functions for the process tests; workers import this module with
``--import tests.processes.jobfuncs`` (the tests put the repository root
on their PYTHONPATH).

Every function leaves two kinds of traces, so that a test can tell a job
that ran twice from one that committed twice:

- a line in a log file, written with one ``O_APPEND`` write before the
  job's transaction commits (``start N PID`` / ``run N PID``): it records
  every execution, even one whose transaction is later aborted;
- ``job.annotations['runs']``, incremented inside the job's transaction:
  it counts the executions that committed.
"""
import os
import signal
import time

import zcasync
from zcasync.retry import RetryCommonFourTimes


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + '\n').encode())
    finally:
        os.close(fd)


def _countRun():
    job = zcasync.local.getJob()
    job.annotations['runs'] = job.annotations.get('runs', 0) + 1


def record(n, path, pause=0.0):
    """Log ``run N PID``, pause, count the run; returns [n, pid]."""
    _append(path, 'run %d %d' % (n, os.getpid()))
    if pause:
        time.sleep(pause)
    _countRun()
    return [n, os.getpid()]


def hold(n, directory, timeout=60.0):
    """Log ``start N PID`` in directory/starts.log, then wait until the
    file directory/release-N exists; returns [n, pid]."""
    _append(os.path.join(directory, 'starts.log'),
            'start %d %d' % (n, os.getpid()))
    release = os.path.join(directory, 'release-%d' % n)
    deadline = time.monotonic() + timeout
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise RuntimeError('job %d was never released' % n)
        time.sleep(0.05)
    _countRun()
    return [n, os.getpid()]


async def holdAsync(n, directory, timeout=60.0):
    """``hold`` as an ``async def`` job (a coroutine on the worker's event
    loop): log ``start N PID``, then await the file directory/release-N
    (looking every 0.05 s, without blocking the loop); returns [n, pid]."""
    import asyncio
    _append(os.path.join(directory, 'starts.log'),
            'start %d %d' % (n, os.getpid()))
    release = os.path.join(directory, 'release-%d' % n)
    deadline = time.monotonic() + timeout
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise RuntimeError('job %d was never released' % n)
        await asyncio.sleep(0.05)
    _countRun()
    return [n, os.getpid()]


async def awaitCancel(n, directory, timeout=60.0):
    """An ``async def`` job that awaits until its task is cancelled: log
    ``start N PID``; at the CancelledError, log ``noticed N <unix time>``
    if ``zcasync.local.cancelled()`` says so too, and let it propagate."""
    import asyncio
    _append(os.path.join(directory, 'starts.log'),
            'start %d %d' % (n, os.getpid()))
    try:
        await asyncio.sleep(timeout)
    except asyncio.CancelledError:
        if zcasync.local.cancelled():
            _append(os.path.join(directory, 'noticed.log'),
                    'noticed %d %r' % (n, time.time()))
        raise
    raise RuntimeError('job %d was never cancelled' % n)


def killWorker(n, directory):
    """Log ``start N PID``, then kill this worker process with SIGKILL."""
    _append(os.path.join(directory, 'starts.log'),
            'start %d %d' % (n, os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


class RetryTwice(RetryCommonFourTimes):
    """The default policy with a limit of 2 interruptions instead of 9, so
    that a job that kills its worker every time gives up after 3 runs."""

    interruptions = 2


def report(steps, directory):
    """Report progress live -- ``progress`` (done, total) and ``status``
    -- once per step, each step waiting for directory/step-N; returns
    a set (no JSON value: it prints as its repr)."""
    for step in range(steps):
        zcasync.local.setLiveAnnotation('progress', (step, steps))
        zcasync.local.setLiveAnnotation('status', 'step %d' % (step + 1))
        release = os.path.join(directory, 'step-%d' % step)
        deadline = time.monotonic() + 60
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                raise RuntimeError('step %d was never released' % step)
            time.sleep(0.05)
    return {steps}


def cooperate(n, directory, timeout=60.0):
    """Log ``start N PID``, then work in slices until asked to stop
    (``zcasync.local.cancelled()``); log ``noticed N <unix time>`` and
    return [n, pid]."""
    _append(os.path.join(directory, 'starts.log'),
            'start %d %d' % (n, os.getpid()))
    deadline = time.monotonic() + timeout
    while not zcasync.local.cancelled():
        if time.monotonic() > deadline:
            raise RuntimeError('job %d was never asked to stop' % n)
        time.sleep(0.01)  # a slice of the job's work
    _append(os.path.join(directory, 'noticed.log'),
            'noticed %d %r' % (n, time.time()))
    return [n, os.getpid()]
