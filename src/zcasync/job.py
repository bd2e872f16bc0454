"""The persistent Job: a stored call with a life cycle.

Life cycle of ``job()`` (stored status in capitals)::

    NEW --commit--> ACTIVE --call--> result --commit--> CALLBACKS
        --run each callback (each commits)--> COMPLETED --commit

- If the callable raises, its work is aborted, a storable Failure is built
  and the retry policy decides: retry now, reschedule in the queue, or give
  up (the failure becomes the result).
- If committing the result fails, the policy's ``commitError`` decides;
  retrying re-runs the call, giving up stores the commit failure.
- If the callable returns another Job, this job stays ACTIVE and takes
  the inner job's result when it completes; a Twisted Deferred likewise
  sets the result when it fires.

A job whose process died while it was ACTIVE is recovered by
``handleInterrupt`` (queued by the dispatcher registry when the process is
found dead); a job that died in CALLBACKS is finished by
``resumeCallbacks``.
"""
import logging

import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping
import transaction
import transaction.interfaces
import twisted.internet.defer
import ZODB.utils
import zope.interface

from zcasync import interfaces
from zcasync import retry
from zcasync.callables import splitCallable, describeCallable
from zcasync import threadlocal
from zcasync import utils
from zcasync.interfaces import (
    NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)

_RETRY = 'retry'
_GIVE_UP = 'give up'
_RESCHEDULE = 'reschedule'


def _decision(value):
    """Normalise a policy answer to (action, when)."""
    import datetime
    if value is True:
        return _RETRY, None
    if isinstance(value, datetime.timedelta):
        return _RESCHEDULE, utils.now() + value
    if isinstance(value, datetime.datetime):
        return _RESCHEDULE, utils.checkAware(value, 'reschedule time')
    return _GIVE_UP, None


def _findParent(job, iface):
    ob = job.parent
    while ob is not None:
        if iface.providedBy(ob):
            return ob
        ob = getattr(ob, 'parent', None)
    return None


@zope.interface.implementer(interfaces.IJob)
class Job(persistent.Persistent):
    """``Job(callable, *args, **kwargs)``: see the module docstring."""

    _status = NEW
    _result = None
    _callable_root = None
    _callable_name = None
    _begin_after = None
    _begin_by = None
    _quota_names = ()
    #: the job this one waits for (it returned a Job), or None
    _inner = None
    _queue_key = None
    #: set by Queue.put: due jobs are claimed highest priority first
    priority = 0
    #: set by Queue.put(unique_key=..., unique_for=...)
    unique_key = None
    unique_until = None
    # created on first use: most jobs have no keyword arguments and no
    # callbacks, and every persistent sub-object costs a write and a load
    _kwargs = None
    _callbacks = None
    parent = None
    active_start = None
    active_end = None
    failure_log_level = None
    _retry_policy_factory = None
    assignerUUID = None

    def __init__(self, callable, /, *args, **kwargs):
        self.callable = callable
        self.args = persistent.list.PersistentList(args)
        if kwargs:
            self._kwargs = persistent.mapping.PersistentMapping(kwargs)
        self.annotations = BTrees.OOBTree.OOBTree()

    # -- attributes ------------------------------------------------------

    def _checkNew(self, what):
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only set %s of a job that has not started; %r is %s'
                % (what, self, self.status))

    @property
    def callable(self):
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    @callable.setter
    def callable(self, value):
        self._checkNew('the callable')
        self._callable_root, self._callable_name = splitCallable(value)

    @property
    def kwargs(self):
        if self._kwargs is None:
            self._kwargs = persistent.mapping.PersistentMapping()
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value):
        self._kwargs = persistent.mapping.PersistentMapping(value)

    @property
    def callbacks(self):
        """The callback jobs (add them with ``addCallback``)."""
        return self._callbacks if self._callbacks is not None else ()

    @property
    def status(self):
        status = self._status
        if status == NEW:
            ob = self.parent
            while interfaces.IJob.providedBy(ob):
                ob = ob.parent
            if interfaces.IAgent.providedBy(ob):
                return ASSIGNED
            if interfaces.IQueue.providedBy(ob):
                return PENDING
        return status

    @property
    def result(self):
        return self._result

    @property
    def queue(self):
        return _findParent(self, interfaces.IQueue)

    @property
    def agent(self):
        return _findParent(self, interfaces.IAgent)

    @property
    def begin_after(self):
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value):
        self._checkNew('begin_after')
        if value is not None:
            value = utils.checkAware(value, 'begin_after')
        self._begin_after = value

    @property
    def begin_by(self):
        return self._begin_by

    @begin_by.setter
    def begin_by(self, value):
        import datetime
        self._checkNew('begin_by')
        if value is not None:
            if not isinstance(value, datetime.timedelta):
                raise TypeError(
                    'begin_by must be a datetime.timedelta (a duration after '
                    'begin_after) or None, not %r' % (value,))
            if value < datetime.timedelta(0):
                raise ValueError(
                    'begin_by must not be negative: %r' % (value,))
        self._begin_by = value

    @property
    def quota_names(self):
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value):
        self._checkNew('quota_names')
        if isinstance(value, str):
            raise TypeError(
                'quota_names must be a tuple of names, not the string %r; '
                'write (%r,)' % (value, value))
        value = tuple(value)
        for name in value:
            if not isinstance(name, str):
                raise TypeError('quota names must be strings, not %r'
                                % (name,))
        self._quota_names = value

    @property
    def retry_policy_factory(self):
        return self._retry_policy_factory

    @retry_policy_factory.setter
    def retry_policy_factory(self, value):
        self._retry_policy_factory = retry.checkFactory(value)

    @property
    def isCallback(self):
        return interfaces.IJob.providedBy(self.parent)

    def getRetryPolicy(self):
        factory = self._retry_policy_factory
        if factory is None:
            factory = retry.CALLBACK if self.isCallback else retry.DEFAULT
        if isinstance(factory, str):
            factory = retry.lookup(factory)
        return factory(self)

    def _policyOrDefault(self):
        """The job's retry policy; the default one (with an ERROR log) when
        it cannot be made, e.g. a policy name registered only in the
        process that queued the job."""
        try:
            return self.getRetryPolicy()
        except Exception:
            utils.safeLog(utils.log, logging.ERROR,
                          'cannot make the retry policy of %r; using the '
                          'default one:\n%s', self, utils.formatException())
            name = retry.CALLBACK if self.isCallback else retry.DEFAULT
            return retry.lookup(name)(self)

    def __repr__(self):
        try:
            oid = self._p_oid
            if oid is None:
                ident = '(oid ?, db ?)'
            else:
                ident = '(oid %d, db %r)' % (
                    ZODB.utils.u64(oid), utils.databaseName(self))
            call = describeCallable(self._callable_root,
                                     self._callable_name)
            args = [utils.shortRepr(a, 60) for a in self.args]
            args.extend('%s=%s' % (k, utils.shortRepr(v, 60))
                        for k, v in (self._kwargs or {}).items())
            return '<%s.%s %s ``%s(%s)``>' % (
                type(self).__module__, type(self).__name__, ident, call,
                ', '.join(args))
        except Exception:
            return '<%s.%s (unreadable)>' % (
                type(self).__module__, type(self).__name__)

    # -- transactions ----------------------------------------------------

    def _jar(self):
        jar = self._p_jar
        if jar is None:
            ob = self.parent
            while ob is not None and getattr(ob, '_p_jar', None) is None:
                ob = getattr(ob, 'parent', None)
            if ob is not None:
                jar = ob._p_jar
                jar.add(self)
        return jar

    def _tm(self):
        jar = self._jar()
        return None if jar is None else jar.transaction_manager

    @staticmethod
    def _commit(tm):
        if tm is not None:
            tm.commit()

    @staticmethod
    def _abort(tm):
        if tm is not None:
            tm.abort()

    # -- running ---------------------------------------------------------

    def __call__(self, *args, **kwargs):
        status = self.status
        if status not in (NEW, ASSIGNED):
            raise interfaces.BadStatusError(
                'can only call a job that is NEW or ASSIGNED; %r is %s'
                % (self, status))
        return self._call(*args, **kwargs)

    def _markActive(self, tm):
        for attempt in range(10):
            if self._status != NEW:
                raise interfaces.BadStatusError(
                    '%r is %s: another process took it' % (self, self.status))
            self._status = ACTIVE
            self.active_start = utils.now()
            try:
                self._commit(tm)
                return
            except transaction.interfaces.TransientError:
                self._abort(tm)
        raise interfaces.BadStatusError(
            'could not mark %r ACTIVE: the commit conflicted 10 times' % self)

    def _activate(self):
        """Mark a job ACTIVE in its claimant's transaction (a dispatcher
        records the claim and the start in one commit); then run it with
        ``_runClaimed()``."""
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only activate a job that has not started; %r is %s'
                % (self, self.status))
        self._status = ACTIVE
        self.active_start = utils.now()

    def _runClaimed(self):
        """Run a job that ``_activate`` marked ACTIVE (and was committed)."""
        if self._status != ACTIVE or self._inner is not None:
            raise interfaces.BadStatusError(
                '%r is %s, not a claimed job waiting to run; another process '
                'may have recovered it' % (self, self.status))
        return self._execute((), {}, mark=False)

    def _call(self, *args, **kwargs):
        return self._execute(args, kwargs, mark=True)

    def _execute(self, args, kwargs, mark):
        tm = self._tm()
        policy = self._policyOrDefault()
        data_cache = {}
        if mark:
            self._markActive(tm)
        while True:
            res = self._invoke(args, kwargs)
            if utils.isFailure(res) and getattr(res, '_zcasync_raised', 0):
                del res._zcasync_raised
                self._abortRun(tm, policy, data_cache)
                action, when = _decision(policy.jobError(res, data_cache))
                if action == _RETRY:
                    continue
                if action == _RESCHEDULE:
                    self._reschedule(when, tm)
                    return self._result
            try:
                waiting = self._setResult(res)
                if not waiting and not self._callbacks:
                    # nothing to call back: result and completion in one
                    # commit (a concurrent addCallback conflicts with it)
                    self._markCompleted()
                self._commit(tm)
            except Exception:
                failure = utils.makeFailure()
                self._abortRun(tm, policy, data_cache)
                action, when = _decision(
                    policy.commitError(failure, data_cache))
                if action == _RETRY:
                    continue
                if action == _RESCHEDULE:
                    self._reschedule(when, tm)
                    return self._result
                waiting = False
                self._storeCommitFailure(tm, failure)
            break
        if not waiting and self._status != COMPLETED:
            self._runCallbacks(tm)
        return self._result

    def _abortRun(self, tm, policy, data_cache):
        """Abort this run's work before a retry decision; refuse to go on
        when another process took the job over meanwhile (a sibling that
        thought this process dead recovered it)."""
        self._abort(tm)
        if tm is not None and self._status != ACTIVE:
            raise interfaces.ReassignedError(
                '%r is %s: another process took it over while it ran; this '
                'run\'s work was discarded' % (self, self.status))
        policy.updateData(data_cache)

    def _storeCommitFailure(self, tm, failure):
        """The policy gave up on committing the result: store the commit
        failure as the result (which must be possible: it is small)."""
        try:
            self._commitUntilDone(tm, lambda: self._setResult(failure))
        except Exception:
            utils.safeLog(utils.log, logging.CRITICAL,
                          'could not store even the commit failure of %r:\n'
                          '%s\nit stays ACTIVE until its dispatcher is '
                          'recovered', self, utils.formatException())
            raise

    def _invoke(self, args, kwargs):
        call_args = list(self.args)
        call_args.extend(args)
        call_kwargs = dict(self._kwargs or ())
        call_kwargs.update(kwargs)
        threadlocal.pushJob(self)
        try:
            return self.callable(*call_args, **call_kwargs)
        except Exception:
            failure = utils.makeFailure()
            failure._zcasync_raised = True
            return failure
        finally:
            threadlocal.popJob()

    def _setResult(self, res):
        """Put the outcome in place; True when the job now waits for an
        inner job or a Deferred."""
        if interfaces.IJob.providedBy(res):
            if res._status != COMPLETED and res.parent is None and \
                    self.queue is None:
                res._call()  # nowhere to queue it: run it here
            if res._status == COMPLETED:
                res = res._result
            else:
                self._waitFor(res)
                return True
        elif isinstance(res, twisted.internet.defer.Deferred):
            if not res.called:
                self._waitForDeferred(res)
                return True
            fired = []
            res.addBoth(fired.append)
            res = fired[0]
        if utils.isFailure(res):
            res = utils.makeFailure(res)
        self._result = res
        self._status = CALLBACKS
        self._inner = None
        return False

    def _commitUntilDone(self, tm, apply):
        """Apply a change that must be stored (a final result, a
        reschedule) and commit it, re-applying after transient errors."""
        for attempt in range(100):
            apply()
            try:
                self._commit(tm)
                return
            except transaction.interfaces.TransientError:
                self._abort(tm)
        raise RuntimeError('could not store the outcome of %r' % self)

    # -- waiting on an inner job or a Deferred ----------------------------

    def _waitFor(self, inner):
        if inner.parent is None:
            queue = self.queue
            if queue is not None:
                queue.put(inner)
            else:
                inner.parent = self
        self._inner = inner
        inner.addCallback(self._innerCompleted)
        # the job no longer needs an agent slot: it resumes when the inner
        # job's callback runs, wherever that happens
        agent = self.agent
        if agent is not None and self.parent is agent:
            agent._release(self)

    def _innerCompleted(self, result):
        if self._status != ACTIVE:
            return None
        self._complete(result)
        return None

    def _waitForDeferred(self, deferred):
        jar = self._p_jar
        db = jar.db() if jar is not None else None
        oid = self._p_oid

        def fired(result):
            if db is None:
                self._complete(result)
                return result
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            try:
                conn.get(oid)._complete(result)
            finally:
                tm.abort()
                conn.close()
            return None
        deferred.addBoth(fired)

    # -- completion and callbacks ----------------------------------------

    def _complete(self, result):
        """Set the final result of a job that is not running the normal
        call path (fail, interruption, inner job, Deferred)."""
        tm = self._tm()
        self._commitUntilDone(tm, lambda: self._setResult(result))
        self._runCallbacks(tm)

    def _runCallbacks(self, tm):
        while True:
            ran = list(self.callbacks)
            for callback in ran:
                self._runCallback(callback)
            # each callback's commit shows this connection what others
            # committed meanwhile: re-read the list (which also loads it, so
            # that touching it below really writes it) and run late arrivals
            if len(self.callbacks) != len(ran):
                continue
            self._markCompleted()
            try:
                self._commit(tm)
                return
            except transaction.interfaces.TransientError:
                self._abort(tm)
                if self._status == COMPLETED:
                    return

    def _markCompleted(self):
        self._status = COMPLETED
        self.active_end = utils.now()
        # a callback added concurrently writes the same list (or, for the
        # first callback, this job): touching it here turns that race into
        # a ConflictError, never a loss
        if self._callbacks is not None:
            self._callbacks._p_changed = True
        agent = self.agent
        if agent is not None and self.parent is agent:
            agent.jobCompleted(self)

    def _runCallback(self, callback):
        status = callback._status
        if status == ACTIVE and callback._inner is None:
            # it was running when the process died
            callback.handleInterrupt()
            status = callback._status
        if status == NEW:
            try:
                callback._call(self._result)
            except interfaces.BadStatusError:
                pass  # another process ran it meanwhile
        elif status == CALLBACKS:
            callback.resumeCallbacks()

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        if not interfaces.IJob.providedBy(callback):
            callback = Job(callback)
        if callback._status != NEW or callback.parent is not None:
            raise ValueError(
                'a callback must be a new job that belongs nowhere else: '
                '%r' % (callback,))
        callback.parent = self
        if failure_log_level is not None:
            callback.failure_log_level = failure_log_level
        if retry_policy_factory is not None:
            callback.retry_policy_factory = retry_policy_factory
        if self._callbacks is None:
            self._callbacks = persistent.list.PersistentList()
        self._callbacks.append(callback)
        if self._status == COMPLETED:
            jar = self._p_jar
            if jar is not None and callback._p_jar is None:
                jar.add(callback)
            callback._call(self._result)
        return callback

    def addCallbacks(self, success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        for value in (success, failure):
            if value is not None:
                splitCallable(value)
        from zcasync.composite import route
        return self.addCallback(
            Job(route, success, failure), failure_log_level,
            retry_policy_factory)

    # -- recovery --------------------------------------------------------

    def _resetForRetry(self):
        agent = self.agent
        if agent is not None and self.parent is agent:
            agent._release(self)
        self._status = NEW
        self._result = None
        self.active_start = None
        self.parent = None

    def _reschedule(self, when, tm):
        """Put the job back in its queue to start at `when`."""
        queue = self.queue
        if queue is None:
            self._complete(utils.makeFailure(interfaces.AbortedError(
                'the retry policy rescheduled %r but it has no queue'
                % self)))
            return

        def apply():
            self._resetForRetry()
            self.begin_after = when
            if when <= utils.now():
                queue.putBack(self)
            else:
                queue._insert(self)
        self._commitUntilDone(tm, apply)

    def handleInterrupt(self):
        if self._status != ACTIVE or self._inner is not None:
            return None  # nothing to recover (already done, or waiting)
        decision = self.getRetryPolicy().interrupted()
        action, when = _decision(decision)
        if action != _GIVE_UP and self.isCallback:
            # callbacks re-run inline, from their parent's callback loop
            self._status = NEW
            self.active_start = None
            return None
        if action != _GIVE_UP and self.queue is not None:
            queue = self.queue
            self._resetForRetry()
            if action == _RESCHEDULE and when > utils.now():
                self.begin_after = when
                queue._insert(self)
            else:
                queue.putBack(self)
            return None
        self._complete(utils.makeFailure(interfaces.AbortedError(
            '%r was interrupted (its process died) and its retry policy '
            'gave up' % self)))
        return None

    def fail(self, e=None):
        if e is None:
            e = interfaces.TimeoutError()
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only fail a job that has not started; %r is %s'
                % (self, self.status))
        if interfaces.IQueue.providedBy(self.parent):
            self.parent.remove(self)
        self._complete(utils.makeFailure(e))

    def resumeCallbacks(self):
        if self._status != CALLBACKS:
            raise interfaces.BadStatusError(
                'can only resume the callbacks of a job in CALLBACKS; %r is '
                '%s' % (self, self.status))
        self._runCallbacks(self._tm())


# serial and parallel live in zcasync.composite; they are part of this
# module's API (imported last: composite builds on Job)
from zcasync.composite import serial, parallel  # noqa: E402,F401
