"""A database that uses every feature that stores something, for the
stable-names tests (``test_stable.py``): what it stores is walked for the
names its records refer to.  A feature that stores something new belongs
here too, so that the walk sees it.

The jobs' callables live in this module (named ``stable_support`` in the
records: the application's module, left out of the check).
"""
import datetime
import sys
import types

import transaction

import zcasync.local
from zcasync import control
from zcasync import interfaces
from zcasync import stable
from zcasync import testing
from zcasync import utils
from zcasync.agent import Agent, chooseFirst
from zcasync.job import Job, serial, parallel
from zcasync.queue import Queue, Queues
from zcasync.retry import (
    NeverRetry, RetryCommonFourTimes, RetryWithBackoff,
    callback_retry_policy_factory)
from zcasync.web import actions

APPLICATION = ('stable_support', 'stable_gone')
UUID = __import__('uuid').UUID('5ab1e000-0000-4000-8000-000000000001')
FAR = datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)


class Boom(Exception):
    pass


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError('not picklable')


def add(a, b=0, c=0):
    return a + b + c


def snoozeOnce():
    job = zcasync.local.getJob()
    if not job.annotations.get(control.SNOOZES):
        zcasync.local.snooze(0)
    return 'woke up'


def double(value):
    return value * 2


def handle(failure):
    return 'handled %s' % failure.type.__name__


def fails(*args):
    secret = 'not stored unless asked'  # noqa: F841
    raise Boom('boom %r' % (args,))


def failsUnpicklable():
    raise Unpicklable()


def whoami(job, extra):
    return (job is not None, extra)


def returnsJob(a):
    import zcasync.local
    inner = zcasync.local.getQueue().put(Job(add, a, a))
    return inner


def returnsLater():
    """Waits (ACTIVE) for a job scheduled far ahead."""
    import zcasync.local
    return zcasync.local.getQueue().put(Job(add, 0), begin_after=FAR)


def total(*jobs):
    return sum(job.result for job in jobs)


def onlyAdd(job):
    return job.callable is add


def _gone():
    """A module that the writing process imports and then loses: its job
    is parked."""
    module = types.ModuleType('stable_gone')

    def vanished():
        return 'never runs'
    vanished.__module__ = 'stable_gone'
    vanished.__qualname__ = 'vanished'
    module.vanished = vanished
    return module


def writeEverything(db):
    """Write a database using every stored feature; returns the
    connection's root (the connection stays open, its manager
    committed)."""
    clock = testing.fixedClock(
        datetime.datetime(2030, 1, 7, 6, 0, tzinfo=datetime.timezone.utc))
    utils.setClock(clock)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        _write(conn, tm, clock)
    finally:
        utils.setClock(None)
    return conn


def _write(conn, tm, clock):
    root = conn.root()
    queues = root[interfaces.KEY] = Queues()
    stable.markFormat(root)
    queue = queues[''] = Queue()
    other = queues['other'] = Queue()
    queue.quotas.create('one', 1)
    tm.commit()

    # pending jobs of every kind
    queue.put(Job(add, 1, 2))
    queue.put(Job(add, 1, b=2), priority=5)
    changed = queue.put(Job(add, 1))
    changed.args.append(2)
    changed.kwargs['c'] = 3
    queue.put(Job(add, 2, 3)).annotations['app.note'] = 'kept'
    queue.put(Job(add, 0), begin_after=FAR)
    queue.put(Job(add, 7), unique_key='u-1')
    queue.put(Job(add, 8), unique_key='u-2',
              unique_for=datetime.timedelta(hours=1))
    for i in range(2):
        job = Job(add, i)
        job.quota_names = ('one',)
        queue.put(job)
    queue.put(Job(fails, 'backoff'), retry_policy_factory=RetryWithBackoff(
        retry_on=(Boom,), max_attempts=2, jitter=False))
    queue.put(Job(add, 4), retry_policy_factory=NeverRetry)
    queue.put(Job(add, 5), retry_policy_factory='RetryCommonForever')
    queue.put(Job(add, 6), retry_policy_factory=RetryCommonFourTimes)
    # trees big enough to have buckets of their own
    many = queue.put(Job(add, 40), begin_after=FAR)
    for i in range(40):
        many.annotations['app.%02d' % i] = i
        queue.put(Job(add, i), begin_after=FAR)
    called = queue.put(Job(add, 1, 1))
    called.addCallback(double)
    proxy = called.addCallbacks(double, handle)
    proxy.addCallback(double)
    broken = queue.put(Job(fails, 'callbacks'))
    broken.addCallbacks(failure=handle)
    queue.put(Job.bind(whoami, 'bound'))
    queue.put(Job(returnsJob, 21))
    queue.put(Job(returnsLater))
    queue.put(serial(Job(add, 1, 1), Job(add, 2, 2)))
    queue.put(parallel(Job(add, 1, 1), Job(add, 2, 2),
                       postprocess=Job(total)))
    queue.put(Job(fails, 'plain'))
    queue.put(Job(failsUnpicklable))
    captured = queue.put(Job(fails, 'captured'))
    captured.capture_variables = True
    queue.put(Job(add, 9), begin_by=datetime.timedelta(seconds=1))
    other.put(Job(add, 10))
    other.pause()
    queue.schedule('every', add, 1, 2, every=datetime.timedelta(minutes=5))
    queue.schedule('cron', add, 3, c=4, cron='0 7 * * MON',
                   timezone='Europe/Berlin', catch_up=True)

    # a dispatcher's registration with agents of every kind
    queue.dispatchers.register(UUID)
    agents = queue.dispatchers[UUID]
    agents['main'] = Agent(size=3)
    agents['picky'] = Agent(filter=onlyAdd, size=1)
    agents['chooser'] = Agent(chooser=chooseFirst, size=1)
    tm.commit()

    # a job whose module disappears is parked by the claim
    sys.modules['stable_gone'] = _gone()
    try:
        queue.put(Job(sys.modules['stable_gone'].vanished))
        tm.commit()
    finally:
        sys.modules['stable_gone'] = None  # importing it fails
    try:
        conn.cacheMinimize()
        clock.advance(310)  # a tick; the begin_by job times out
        schedules = queue.schedules
        schedules.fire(queue)
        tm.commit()
        ran = testing.runQueuedJobs(conn)
        assert ran, 'nothing ran'
        assert queue.parked(), 'nothing was parked'
    finally:
        del sys.modules['stable_gone']

    # jobs held by a dispatcher that dies: ACTIVE and CALLBACKS ones are
    # handed to recovery jobs
    queue.put(Job(add, 13), retry_policy_factory=NeverRetry)
    queue.put(Job(add, 14)).addCallback(
        double, retry_policy_factory=callback_retry_policy_factory)
    testing.activeRegistration(queue, UUID)
    queue.dispatchers.ping(UUID)
    queue.put(Job(add, 15))
    held = [agents['main'].claimJob() for i in range(3)]
    tm.commit()
    held[0]._activate()
    held[2]._activate()
    token2 = held[1]._activate()
    held[1]._setResult(5, token2)
    tm.commit()
    agents.deactivate()
    tm.commit()

    # the dashboard's actions, live annotations
    failed = [j for j in agents['main'].completed
              if utils.isFailure(j.result)] + [
        j for r in queue.dispatchers.values() for a in r.values()
        for j in a.completed if utils.isFailure(j.result)]
    actions.retry(conn, '%d' % int.from_bytes(failed[0]._p_oid, 'big'), {})
    pending = queue.put(Job(add, 11))
    tm.commit()
    actions.cancel(conn, '%d' % int.from_bytes(pending._p_oid, 'big'), {})
    queue.put(Job(add, 12)).annotations['progress'] = (1, 2)
    tm.commit()

    # control of runs: a snooze, a run past its time limit, a running job
    # asked to stop (zcasync.control)
    queue.put(Job(snoozeOnce))
    limited = queue.put(Job(add, 16), timeout=datetime.timedelta(seconds=1))
    tm.commit()
    testing.runQueuedJobs(conn)
    _pastItsTimeLimit(conn, queue, tm)
    stopping = queue.put(Job(add, 17))
    tm.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    tm.commit()
    claimed._markActive(tm)
    claimed.cancel(grace=1)
    assert limited.status == interfaces.COMPLETED
    assert stopping.status == interfaces.ACTIVE
    clock.advance(3600)
    testing.runQueuedJobs(conn)
    tm.commit()


def _pastItsTimeLimit(conn, queue, tm):
    """Run a job as a dispatcher whose time limit passed would."""
    job = queue.put(Job(add, 18), timeout=datetime.timedelta(seconds=1),
                    retry_policy_factory=NeverRetry)
    tm.commit()
    claimed = testing._immediateClaim(testing._immediateAgent(queue))
    tm.commit()
    run = control.RunControl(job_id=utils.jobId(claimed))
    run.requestStop(control.timeLimitError(claimed, claimed.timeout))
    zcasync.local.setRunControl(run)
    try:
        claimed()
    finally:
        zcasync.local.setRunControl()
    assert job.result.check(interfaces.TimeLimitError)
