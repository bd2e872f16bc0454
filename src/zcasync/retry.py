"""Retry policies: what a job does when it fails, when committing its result
fails, or when its process died while it ran.

A policy is made per run by ``job.getRetryPolicy()`` from the job's
``retry_policy_factory`` (None means the default: ``RetryCommonFourTimes``
for queued jobs, ``RetryCommonForever`` for callbacks).  Each decision
answers True (retry now), False (give up) or a ``datetime``/``timedelta``
(reschedule the job in its queue; zero or past means the front).

Counts live in ``job.annotations`` so that they survive a crash; because an
abort undoes them, the job also keeps them in an in-memory ``data_cache``
and asks ``updateData`` to write them back after every abort.

The classes here are stored by reference on jobs: they are on-disk API.
"""
from __future__ import annotations

import datetime
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable, MutableMapping, Union

import transaction.interfaces
import zope.component
import zope.interface
import ZEO.Exceptions

from zcasync import interfaces
from zcasync import utils

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from zcasync.job import Job

#: What a policy's ``jobError``, ``commitError`` and ``interrupted``
#: answer: True (run again now), a timedelta or an aware datetime (run
#: again then), False (give up: the failure is the job's result).
Decision = Union[bool, datetime.timedelta, datetime.datetime]
#: The run's scratch space for a policy's counters.
DataCache = MutableMapping[str, Any]


#: Errors of a storage's database driver that mean its connection was lost
#: or the server is restarting (RelStorage on PostgreSQL), named so that
#: the drivers need not be installed.  Retried after a short pause, a
#: bounded number of times.
DATABASE_ERRORS = (
    'psycopg2.OperationalError',
    'psycopg2.InterfaceError',
    'relstorage.adapters.interfaces.ReplicaClosedException',
)


def _isDisconnect(failure):
    return failure.check(ZEO.Exceptions.ClientDisconnected) is not None


def _isDatabaseError(failure):
    return failure.check(*DATABASE_ERRORS) is not None


def _isTransactionError(failure):
    return failure.check(transaction.interfaces.TransactionError) is not None


@zope.interface.implementer(interfaces.IRetryPolicy)
class BasePolicy:
    """Shared mechanics: named counters kept in the job's annotations."""

    #: How long to sleep before retrying after a ZEO disconnect, by count.
    disconnect_sleeps = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60)
    #: ... and after a lost database connection (DATABASE_ERRORS): the
    #: storage reconnects at its next use.
    database_error_sleeps = (0.2, 0.5, 1, 2, 5, 10, 20, 30, 60)
    #: How many lost database connections a run survives.
    database_error_attempts = 10

    def __init__(self, job: Job) -> None:
        self.parent = self.__parent__ = job
        self.key = 'zcasync.%s' % type(self).__name__

    # -- counters ----------------------------------------------------------

    def _counts(self, data_cache):
        counts = data_cache.get(self.key)
        if counts is None:
            stored = self.parent.annotations.get(self.key)
            counts = dict(stored) if stored else {}
            data_cache[self.key] = counts
        return counts

    def _increment(self, name, data_cache):
        counts = self._counts(data_cache)
        counts[name] = counts.get(name, 0) + 1
        self.parent.annotations[self.key] = dict(counts)
        return counts[name]

    def updateData(self, data_cache: DataCache) -> None:
        counts = data_cache.get(self.key)
        if counts is not None:
            self.parent.annotations[self.key] = dict(counts)

    def sleep(self, seconds: float) -> None:
        """Sleep before a retry (tests replace it)."""
        time.sleep(seconds)

    def _sleepForDisconnect(self, count):
        sleeps = self.disconnect_sleeps
        self.sleep(sleeps[min(count, len(sleeps)) - 1])

    def _databaseError(self, data_cache, limit=True):
        """Retry after a lost database connection (a short, growing pause),
        up to ``database_error_attempts`` times unless not `limit`."""
        count = self._increment('database error', data_cache)
        if limit and count > self.database_error_attempts:
            return False
        sleeps = self.database_error_sleeps
        self.sleep(sleeps[min(count, len(sleeps)) - 1])
        return True

    # -- decisions (override) ------------------------------------------

    def jobError(self, failure: Failure, data_cache: DataCache) -> Decision:
        return False

    def commitError(self, failure: Failure,
                    data_cache: DataCache) -> Decision:
        return False

    def interrupted(self) -> Decision:
        return False


class RetryCommonFourTimes(BasePolicy):
    """The default for queued jobs.

    - ZEO ``ClientDisconnected``: retried without limit, sleeping 5, 10, ...
      up to 60 seconds between attempts;
    - a lost database connection (``DATABASE_ERRORS``, e.g. PostgreSQL
      restarting): retried up to 10 times after short pauses;
    - ZODB transaction errors (ConflictError and the like): up to 5
      attempts in all;
    - any other exception from the job: not retried (stored as the result);
    - interruptions (the process died while it ran): retried up to 9 times.
    """

    transaction_error_attempts = 5
    interruptions = 9

    def _decide(self, failure, data_cache, kind):
        if _isDisconnect(failure):
            count = self._increment('disconnect', data_cache)
            self._sleepForDisconnect(count)
            return True
        if _isDatabaseError(failure):
            return self._databaseError(data_cache)
        if _isTransactionError(failure):
            count = self._increment(kind, data_cache)
            return count < self.transaction_error_attempts
        return False

    def jobError(self, failure: Failure, data_cache: DataCache) -> Decision:
        return self._decide(failure, data_cache, 'transaction error')

    def commitError(self, failure: Failure,
                    data_cache: DataCache) -> Decision:
        return self._decide(failure, data_cache, 'transaction error')

    def interrupted(self) -> Decision:
        count = self._increment('interruption', {})
        return count <= self.interruptions


class RetryCommonForever(BasePolicy):
    """The default for callbacks and recovery jobs: conflicts, disconnects,
    lost database connections, interruptions and any error while
    committing are retried forever.

    Commit errors that are not transient are logged at CRITICAL on the
    first attempt and every fifth after it: something is wrong that a human
    should look at.  Other exceptions raised by the job are not retried.
    """

    critical_every = 5

    def jobError(self, failure: Failure, data_cache: DataCache) -> Decision:
        if _isDisconnect(failure):
            count = self._increment('disconnect', data_cache)
            self._sleepForDisconnect(count)
            return True
        if _isDatabaseError(failure):
            return self._databaseError(data_cache, limit=False)
        if _isTransactionError(failure):
            self._increment('transaction error', data_cache)
            return True
        return False

    def commitError(self, failure: Failure,
                    data_cache: DataCache) -> Decision:
        if _isDisconnect(failure):
            count = self._increment('disconnect', data_cache)
            self._sleepForDisconnect(count)
            return True
        if _isDatabaseError(failure):
            return self._databaseError(data_cache, limit=False)
        if _isTransactionError(failure):
            self._increment('transaction error', data_cache)
            return True
        count = self._increment('other commit error', data_cache)
        if count == 1 or count % self.critical_every == 0:
            utils.safeLog(
                utils.log, logging.CRITICAL,
                'commit of %r failed %d time(s) and will be retried '
                'forever; this needs attention:\n%s',
                self.parent, count, failure.getTraceback())
        self.sleep(min(count, 10) * 0.1)
        return True

    def interrupted(self) -> Decision:
        self._increment('interruption', {})
        return True


class NeverRetry(BasePolicy):
    """For non-transactional work (sending mail, charging a card): never
    retried, and never re-run after an interruption (it fails with an
    AbortedError instead)."""

    def interrupted(self) -> Decision:
        self._increment('interruption', {})
        return False


# --- backoff for the application's own exceptions --------------------------

_random = random.random


def setRandom(source: Callable[[], float] | None = None
              ) -> Callable[[], float]:
    """Use `source` (a callable returning a float in [0, 1)) for backoff
    jitter; None restores ``random.random``.  Returns the previous one."""
    global _random
    previous = _random
    _random = source if source is not None else random.random
    return previous


class BackoffPolicy(RetryCommonFourTimes):
    """The policy a ``RetryWithBackoff`` makes for one run of a job."""

    def __init__(self, job: Job, factory: RetryWithBackoff) -> None:
        super().__init__(job)
        self.factory = factory
        self.key = 'zcasync.RetryWithBackoff'

    def jobError(self, failure: Failure, data_cache: DataCache) -> Decision:
        factory = self.factory
        if not failure.check(*factory.retry_on):
            return super().jobError(failure, data_cache)
        counts = self._counts(data_cache)
        counts['attempts'] = attempts = counts.get('attempts', 0) + 1
        if attempts >= factory.max_attempts:
            counts['next run'] = None
            self.parent.annotations[self.key] = dict(counts)
            return False
        when = utils.now() + factory.delay(attempts)
        counts['next run'] = when
        self.parent.annotations[self.key] = dict(counts)
        return when


class RetryWithBackoff:
    """A retry-policy factory for the application's own exceptions:
    ``RetryWithBackoff(retry_on=(IOError,), max_attempts=5,
    base=timedelta(seconds=1), cap=timedelta(minutes=10), jitter=True)``.

    A job that raises one of `retry_on` is put back in its queue to run
    again after an exponential delay -- ``min(cap, base * 2 ** (n - 1))``
    after its n-th failure, or, with `jitter` ("full jitter"), a random
    delay between 0 and that -- until it has run `max_attempts` times;
    then the failure is its result.  Other failures are treated as by
    ``RetryCommonFourTimes``.  ``job.annotations['zcasync.RetryWithBackoff']``
    records ``attempts`` (failed runs so far) and ``next run`` (None once
    it gave up).

    Give an instance as a job's ``retry_policy_factory`` (it is stored
    with the job, its class by reference), or register one as a named
    ``IRetryPolicyFactory`` utility and give the name; the built-in name
    ``'RetryWithBackoff'`` retries any Exception with the defaults.
    """

    def __init__(self, retry_on: type[BaseException] | tuple[
                     type[BaseException], ...] = (Exception,),
                 max_attempts: int = 5,
                 base: datetime.timedelta = datetime.timedelta(seconds=1),
                 cap: datetime.timedelta = datetime.timedelta(minutes=10),
                 jitter: bool = True) -> None:
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        retry_on = tuple(retry_on)
        if not retry_on or not all(isinstance(e, type) and
                                   issubclass(e, BaseException)
                                   for e in retry_on):
            raise TypeError('retry_on must be exception classes, not %r'
                            % (retry_on,))
        if not isinstance(max_attempts, int) or isinstance(
                max_attempts, bool) or max_attempts < 1:
            raise ValueError('max_attempts must be an int >= 1 (runs in '
                             'all), not %r' % (max_attempts,))
        for name, value in (('base', base), ('cap', cap)):
            if not isinstance(value, datetime.timedelta) or \
                    value < datetime.timedelta(0):
                raise TypeError('%s must be a timedelta >= 0, not %r'
                                % (name, value))
        self.retry_on = retry_on
        self.max_attempts = max_attempts
        self.base = base
        self.cap = cap
        self.jitter = bool(jitter)

    def delay(self, failures: int) -> datetime.timedelta:
        """The delay after the `failures`-th failure."""
        ceiling = self.cap.total_seconds()
        exponent = min(failures - 1, 64)
        ceiling = min(ceiling, self.base.total_seconds() * 2 ** exponent)
        if self.jitter:
            ceiling *= _random()
        return datetime.timedelta(seconds=ceiling)

    def __call__(self, job: Job) -> BackoffPolicy:
        return BackoffPolicy(job, self)

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self):
        return hash((self.retry_on, self.max_attempts))

    def __repr__(self):
        return ('RetryWithBackoff(retry_on=(%s,), max_attempts=%d, base=%s, '
                'cap=%s, jitter=%s)' % (
                    ', '.join(e.__name__ for e in self.retry_on),
                    self.max_attempts, self.base, self.cap, self.jitter))


#: Built-in names accepted as a job's ``retry_policy_factory``.
POLICIES = {
    'RetryWithBackoff': RetryWithBackoff(),
    'RetryCommonFourTimes': RetryCommonFourTimes,
    'RetryCommonForever': RetryCommonForever,
    'NeverRetry': NeverRetry,
}

DEFAULT = 'default'
CALLBACK = 'callback'
_DEFAULTS = {DEFAULT: RetryCommonFourTimes, CALLBACK: RetryCommonForever}


def _adapterFactory(name):
    """The factory of the IRetryPolicy adapter for jobs named `name`
    (zc.async's way of naming policies), or None."""
    return zope.component.getSiteManager().adapters.lookup(
        (interfaces.IJob,), interfaces.IRetryPolicy, name)


def lookup(name):
    """The policy factory registered as `name`: a zope.component utility
    providing IRetryPolicyFactory, an IRetryPolicy adapter of that name
    (as zc.async registered them), or a built-in name."""
    factory = zope.component.queryUtility(
        interfaces.IRetryPolicyFactory, name)
    if factory is None and name:
        factory = _adapterFactory(name)
    if factory is None:
        factory = POLICIES.get(name) or _DEFAULTS.get(name)
    if factory is None:
        raise LookupError(
            'no retry policy factory is registered as %r; use one of %s, '
            'register a zcasync.interfaces.IRetryPolicyFactory utility (or '
            'an IRetryPolicy adapter) with that name, or pass the factory '
            'itself' % (name, ', '.join(sorted(POLICIES))))
    return factory


def builtinPolicy(job, isCallback):
    """The built-in default policy for `job`."""
    return (RetryCommonForever if isCallback else RetryCommonFourTimes)(job)


def policyFor(job, factory, isCallback):
    """A new retry policy for `job` from its `factory` (see
    ``Job.getRetryPolicy``)."""
    if factory is None:
        name = CALLBACK if isCallback else DEFAULT
        utility = zope.component.queryUtility(
            interfaces.IRetryPolicyFactory, name)
        if utility is not None:
            return utility(job)
        policy = zope.component.queryAdapter(
            job, interfaces.IRetryPolicy, CALLBACK if isCallback else '')
        if policy is not None:
            return policy
        return builtinPolicy(job, isCallback)
    if isinstance(factory, str):
        factory = lookup(factory)
    return factory(job)


def callback_retry_policy_factory(job):
    """zc.async's factory for callbacks: the IRetryPolicy adapter named
    'callback', else RetryCommonForever."""
    policy = zope.component.queryAdapter(job, interfaces.IRetryPolicy,
                                         CALLBACK)
    return policy if policy is not None else RetryCommonForever(job)


def checkFactory(factory):
    """Validate a retry_policy_factory value before it is stored."""
    if factory is None or callable(factory):
        return factory
    if isinstance(factory, str):
        lookup(factory)
        return factory
    raise TypeError(
        'retry_policy_factory must be None, a callable taking the job, or '
        'the name of a registered policy, not %r' % (factory,))
