"""The job functions the benchmarks queue.

They live in an importable module (``benchmarks.jobs``) because jobs store
their callable by reference: worker processes load it with ``--import
benchmarks.jobs`` and the repository root on ``PYTHONPATH``.
"""
import threading
import time


def noop():
    """Do nothing: the drain measures the queue, not the work."""


def started():
    """Return when the job started (``time.time()``, taken first thing
    inside the job): the latency benchmark compares it with the time its
    put committed."""
    return time.time()


def tagged(tag):
    """A no-op with an argument, for agent filters (see ``onlyMine``)."""


def onlyMine(job):
    """An agent filter: only jobs whose first argument is 'mine'."""
    return bool(job.args) and job.args[0] == 'mine'


# events that ``block`` jobs wait for, by name (in-process only)
_releases = {}
_releases_lock = threading.Lock()


def _release(name):
    with _releases_lock:
        return _releases.setdefault(name, threading.Event())


def block(name, timeout=600.0):
    """Run until ``release(name)`` is called in this process (at most
    `timeout` seconds): a job that holds its quota while it runs."""
    _release(name).wait(timeout)


def release(name):
    _release(name).set()


# coroutine jobs (issue 15): how many run at once now, and at most
_awaiting = {'now': 0, 'most': 0}
_awaiting_lock = threading.Lock()


async def sleepAsync(seconds=1.0):
    """An ``async def`` job: ``asyncio.sleep(seconds)``, counted while it
    sleeps (``awaitingAtMost``)."""
    import asyncio
    with _awaiting_lock:
        _awaiting['now'] += 1
        _awaiting['most'] = max(_awaiting['most'], _awaiting['now'])
    try:
        await asyncio.sleep(seconds)
    finally:
        with _awaiting_lock:
            _awaiting['now'] -= 1


def awaitingAtMost(reset=False):
    """The most ``sleepAsync`` jobs that slept at once (in this
    process)."""
    with _awaiting_lock:
        most = _awaiting['most']
        if reset:
            _awaiting['most'] = 0
        return most


#: name -> [time.monotonic() when the job saw zcasync.local.cancelled()]
NOTICED = {}


async def awaitCancelled(name, timeout=600.0):
    """A coroutine job awaiting until its task is cancelled; records when
    (in NOTICED)."""
    import asyncio
    try:
        await asyncio.sleep(timeout)
    except asyncio.CancelledError:
        NOTICED[name] = time.monotonic()
        raise
    return name


def untilCancelled(name, timeout=600.0):
    """Work in 1 ms slices until asked to stop; record when it noticed."""
    import zcasync.local
    deadline = time.monotonic() + timeout
    while not zcasync.local.cancelled() and time.monotonic() < deadline:
        time.sleep(0.001)
    NOTICED[name] = time.monotonic()
    return name
