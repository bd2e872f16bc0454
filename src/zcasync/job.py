"""The persistent Job: a stored call with a life cycle.

Status as stored (``job.status`` also reads PENDING, PARKED or ASSIGNED
for a NEW job, depending on where it waits)::

    NEW --claim or call--> ACTIVE --result--> CALLBACKS --> COMPLETED

This module holds the Job's data: its callable and arguments (stored by
reference, see ``zcasync.callables``), scheduling (``begin_after``,
``begin_by``), quotas, retry policy, callbacks, annotations and its
informative ``repr``; and its recovery: a job whose process died while it
was ACTIVE is recovered by ``handleInterrupt`` (queued by the dispatcher
registry when the process is found dead, or by its own dispatcher when no
worker thread runs it), a job that died in CALLBACKS is finished by
``resumeCallbacks``.  The run itself -- ownership by token, commits,
retries, inner jobs, Deferreds, callbacks -- is in ``zcasync.lifecycle``.
"""
from __future__ import annotations

import logging
from typing import (
    TYPE_CHECKING, Any, Callable, MutableMapping, MutableSequence, Sequence,
    cast)

import persistent
import persistent.list
import persistent.mapping
import ZODB.utils
import zope.interface

from zcasync import control
from zcasync import interfaces
from zcasync import lazydata
from zcasync import lifecycle
from zcasync import retry
from zcasync.callables import (  # noqa: F401 (loadProblem: this API)
    splitCallable, describeCallable, loadProblem)
from zcasync import utils
from zcasync.interfaces import NEW, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED
from zcasync.lifecycle import (  # noqa: F401 (COMMIT_ATTEMPTS: this API)
    COMMIT_ATTEMPTS, _decision, _newToken, _GIVE_UP)

if TYPE_CHECKING:
    import datetime

    from zcasync.agent import Agent
    from zcasync.queue import Queue

#: What a job's ``retry_policy_factory`` may be: a factory called with the
#: job (a class such as ``zcasync.retry.NeverRetry``), the name of a
#: registered one, or None for the default.
RetryPolicyFactory = Callable[['Job'], Any] | str | None


def _findParent(job, iface):
    ob = job.parent
    while ob is not None:
        if iface.providedBy(ob):
            return ob
        ob = getattr(ob, 'parent', None)
    return None


@zope.interface.implementer(interfaces.IJob)
class Job(lifecycle.JobLifeCycle, persistent.Persistent):
    """``Job(callable, *args, **kwargs)``: see the module docstring."""

    _status = NEW
    _result = None
    _callable_root: Any = None
    _callable_name: str | None = None
    _begin_after = None
    _begin_by = None
    _quota_names: tuple[str, ...] = ()
    #: the job this one waits for (it returned a Job), or None
    _inner = None
    _queue_key = None
    #: set by Queue.put: due jobs are claimed highest priority first
    priority = 0
    #: set by Queue.put(unique_key=..., unique_for=...)
    unique_key = None
    unique_until = None
    # Stored in the job's own record until something asks for the mutable
    # API (``args``, ``kwargs``, ``annotations``): every persistent
    # sub-object costs a write at the put and a load (a round trip over ZEO
    # or PostgreSQL) when the job runs.  The annotations are created when
    # the job starts at the latest, so that live annotations written while
    # it runs never write the job itself.
    _args = ()  # a tuple, or the PersistentList ``args`` made of it
    _kwargs = None  # None, a dict, or the PersistentMapping ``kwargs`` made
    _annotations = None
    _callbacks = None
    #: the queue, agent or job that holds this one
    parent: Any = None
    active_start = None
    active_end = None
    failure_log_level = None
    _retry_policy_factory = None
    assignerUUID = None
    #: the token of the run that owns the job (see zcasync.lifecycle)
    _run_token = None
    #: keep frame variables in this job's failures (None: the process
    #: setting, see zcasync.utils.setCaptureVariables)
    capture_variables = None
    #: the time limit of a run (see ``zcasync.control``), or None
    _timeout: datetime.timedelta | None = None

    def __init__(self, callable: Callable[..., Any], /, *args: Any,
                 **kwargs: Any) -> None:
        self.callable = callable
        self._args = args
        if kwargs:
            self._kwargs = kwargs

    def __setstate__(self, state):
        # jobs stored with ``args`` and ``annotations`` as sub-objects
        # (zcasync before 0.1, and zc.async)
        if isinstance(state, dict) and ('args' in state or
                                        'annotations' in state):
            state = dict(state)
            if 'args' in state:
                state['_args'] = state.pop('args')
            if 'annotations' in state:
                state['_annotations'] = state.pop('annotations')
        super().__setstate__(state)

    # -- attributes ------------------------------------------------------

    def _checkNew(self, what):
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only set %s of a job that has not started; %r is %s'
                % (what, self, self.status))

    @property
    def callable(self) -> Callable[..., Any]:
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    @callable.setter
    def callable(self, value: Callable[..., Any]) -> None:
        self._checkNew('the callable')
        self._callable_root, self._callable_name = splitCallable(value)

    @property
    def args(self) -> MutableSequence[Any]:
        """The positional arguments, a PersistentList (stored in the job's
        own record until changed: see ``zcasync.lazydata``)."""
        if isinstance(self._args, persistent.list.PersistentList):
            return self._args
        return lazydata.view(self, '_args', lazydata.ArgsList, self._args)

    @args.setter
    def args(self, value):
        self._args = persistent.list.PersistentList(value)

    @property
    def kwargs(self) -> MutableMapping[str, Any]:
        """The keyword arguments, a PersistentMapping (stored in the job's
        own record until changed)."""
        if isinstance(self._kwargs, persistent.mapping.PersistentMapping):
            return self._kwargs
        return lazydata.view(self, '_kwargs', lazydata.KwargsMapping,
                             self._kwargs or {})

    @kwargs.setter
    def kwargs(self, value: MutableMapping[str, Any]) -> None:
        self._kwargs = persistent.mapping.PersistentMapping(value)

    @property
    def annotations(self):
        """A BTree for metadata (made on its first change, or when the job
        starts; reading it before writes nothing)."""
        if self._annotations is not None:
            return self._annotations
        lazy = self.__dict__.get('_v_annotations')
        if lazy is None:
            lazy = self.__dict__['_v_annotations'] = \
                lazydata.LazyAnnotations(self)
        return lazy

    @annotations.setter
    def annotations(self, value):
        self._annotations = value

    def callArguments(self):
        """(args tuple, kwargs dict) as stored, without making the mutable
        ``args``/``kwargs`` (reading them writes nothing)."""
        return tuple(self._args), dict(self._kwargs or {})

    def loadProblem(self):
        """Why this process cannot run or store this job (see
        ``zcasync.callables.loadProblem``), or None."""
        return loadProblem(self)

    def peekAnnotations(self):
        """The annotations if any were made, else an empty mapping
        (reading them writes nothing)."""
        return self._annotations if self._annotations is not None else {}

    @property
    def callbacks(self) -> Sequence[Job]:
        """The callback jobs (add them with ``addCallback``)."""
        return self._callbacks if self._callbacks is not None else ()

    @property
    def status(self) -> str:
        status = self._status
        if status == NEW:
            ob = self.parent
            while interfaces.IJob.providedBy(ob):
                ob = ob.parent
            if interfaces.IAgent.providedBy(ob):
                return ASSIGNED
            if interfaces.IQueue.providedBy(ob):
                return ob._statusOf(self)
        return status

    @property
    def result(self) -> Any:
        return self._result

    @property
    def queue(self) -> Queue | None:
        return _findParent(self, interfaces.IQueue)

    @property
    def agent(self) -> Agent | None:
        return _findParent(self, interfaces.IAgent)

    @property
    def begin_after(self) -> datetime.datetime | None:
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value: datetime.datetime | None) -> None:
        self._checkNew('begin_after')
        if value is not None:
            value = utils.checkAware(value, 'begin_after')
        self._begin_after = value

    @property
    def begin_by(self) -> datetime.timedelta | None:
        return self._begin_by

    @begin_by.setter
    def begin_by(self, value: datetime.timedelta | None) -> None:
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
    def timeout(self) -> datetime.timedelta | None:
        """The time limit of each run (a timedelta), or None: a longer
        run is stopped and fails with TimeLimitError (``zcasync.control``).
        """
        return self._timeout

    @timeout.setter
    def timeout(self, value: datetime.timedelta | None) -> None:
        self._checkNew('timeout')
        self._timeout = control.checkTimeout(value)

    @property
    def quota_names(self) -> Sequence[str]:
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value: Sequence[str]) -> None:
        status = self.status
        if status not in (NEW, interfaces.PENDING, interfaces.PARKED):
            raise interfaces.BadStatusError(
                'can only set quota_names of a job that is NEW or PENDING; '
                '%r is %s' % (self, status))
        if isinstance(value, str):
            raise TypeError(
                'quota_names must be a tuple of names, not the string %r; '
                'write (%r,)' % (value, value))
        value = tuple(value)
        for name in value:
            if not isinstance(name, str):
                raise TypeError('quota names must be strings, not %r'
                                % (name,))
        queue = self.queue if status != NEW else None
        if queue is not None:
            for name in value:
                if name not in queue.quotas:
                    raise interfaces.UnknownQuotaError(name)
        self._quota_names = value

    @property
    def retry_policy_factory(self) -> RetryPolicyFactory:
        return self._retry_policy_factory

    @retry_policy_factory.setter
    def retry_policy_factory(self, value: RetryPolicyFactory) -> None:
        self._retry_policy_factory = retry.checkFactory(value)
        self.__dict__.pop('_v_retry_policy', None)

    @property
    def isCallback(self) -> bool:
        parent = self.parent
        return interfaces.IJob.providedBy(parent) or \
            interfaces.ICallbackProxy.providedBy(parent)

    def getRetryPolicy(self) -> Any:
        """The job's retry policy, made once and then kept (in memory) so
        that every call returns the same object.  The factory: the job's
        ``retry_policy_factory`` (a callable, or a name: an
        IRetryPolicyFactory utility or a named IRetryPolicy adapter);
        without one, the 'default' (or 'callback') IRetryPolicyFactory
        utility if registered, else the unnamed (or 'callback')
        IRetryPolicy adapter, else RetryCommonFourTimes (callbacks:
        RetryCommonForever)."""
        policy = getattr(self, '_v_retry_policy', None)
        if policy is None:
            policy = self._v_retry_policy = retry.policyFor(
                self, self._retry_policy_factory, self.isCallback)
        return policy

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
            return retry.builtinPolicy(self, self.isCallback)

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
            args = ['<this job>' if a is self else utils.shortRepr(a, 60)
                    for a in self._args]
            args.extend('%s=%s' % (k, utils.shortRepr(v, 60))
                        for k, v in (self._kwargs or {}).items())
            return '<%s.%s %s ``%s(%s)``>' % (
                type(self).__module__, type(self).__name__, ident, call,
                ', '.join(args))
        except Exception:
            return '<%s.%s (unreadable)>' % (
                type(self).__module__, type(self).__name__)

    @classmethod
    def bind(cls, callable, /, *args, **kwargs):
        """A job that passes itself as the first argument of `callable`
        (``Job.bind(f, 1)()`` calls ``f(job, 1)``)."""
        job = cls(callable, *args, **kwargs)
        job.args.insert(0, job)
        return job

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        status = self.status
        if status not in (NEW, ASSIGNED):
            raise interfaces.BadStatusError(
                'can only call a job that is NEW or ASSIGNED; %r is %s'
                % (self, status))
        return self._call(*args, **kwargs)

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Add a callback (a job, a callable, or a callback proxy) that is
        called with this job's final result; returns it.  On a COMPLETED
        job it runs at once."""
        callback = _placeCallback(self, callback, failure_log_level,
                                  retry_policy_factory)
        if self._callbacks is None:
            self._callbacks = persistent.list.PersistentList()
        self._callbacks.append(callback)
        if self._status == COMPLETED:
            _runLate(self, callback, self._result)
        return callback

    def addCallbacks(self, success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        """Add a callback proxy that calls `success` with a result or
        `failure` with a Failure (a missing one passes the outcome on);
        returns the proxy, on which further callbacks chain (they get the
        outcome of whichever ran)."""
        return self.addCallback(SuccessFailureCallbackProxy(
            success, failure, failure_log_level, retry_policy_factory))

    # -- recovery --------------------------------------------------------

    def _resetForRetry(self):
        agent = self.agent
        if agent is not None and self.parent is agent:
            agent._release(self)
        self._status = NEW
        self._result = None
        self.active_start = None
        self._run_token = None
        self.parent = None

    def _requeue(self, queue, when=None):
        """Put a reset job back in `queue`: at `when` if that is later
        (``queue.put(job, begin_after=when)``), else at the front, to start
        now -- a start deadline (``begin_by``) counts from this new start,
        not from the first one."""
        now = utils.now()
        if when is not None and when > now:
            assigner = self.assignerUUID
            queue.put(self, begin_after=when)
            self.assignerUUID = assigner
        else:
            self.begin_after = now
            queue.putBack(self)

    def _handBack(self):
        """Revoke the current run's ownership (it was found dead, or no
        thread runs it) and return the token of the recovery that now owns
        the job; the caller queues that recovery (``handleInterrupt`` or
        ``resumeCallbacks`` with this token)."""
        token = self._run_token = _newToken()
        return token

    def handleInterrupt(self, token: object = None) -> None:
        """Recover a job that was ACTIVE when its run was lost (its process
        died, or no thread ran it): its retry policy decides whether it
        runs again, later, or fails with AbortedError.  With `token` (as
        queued by a recovery), nothing happens unless the job is still
        owned by that recovery."""
        if self._status != ACTIVE or self._inner is not None:
            return None  # nothing to recover (already done, or waiting)
        if token is not None and self._run_token != token:
            return None  # recovered already, or another run owns it now
        cancelled = control.cancelledRun(self)
        if cancelled is not None:  # asked to stop: never run again
            self._complete(utils.makeFailure(cancelled), self._run_token)
            return None
        policy = self._policyOrDefault()
        action, when = _decision(policy.interrupted())
        if action != _GIVE_UP and self.isCallback:
            # callbacks re-run inline, from their parent's callback loop
            self._status = NEW
            self.active_start = None
            self._run_token = None
            return None
        queue = self.queue
        if action != _GIVE_UP and queue is not None:
            self._resetForRetry()
            self._requeue(queue, when)
            return None
        self._complete(utils.makeFailure(interfaces.AbortedError(
            '%r was interrupted (its process died) and its retry policy '
            'gave up' % self)), self._run_token)
        return None

    def cancel(self, grace: float | datetime.timedelta | None = None) -> str:
        """Cancel this job (see ``zcasync.control``): one that has not
        started completes with CancelledError; a running one is asked to
        stop, and completed with CancelledError after `grace` seconds
        (default ``control.DEFAULT_GRACE``) whatever it does.  Commits.
        Returns 'cancelled', 'stopping', or 'removed' (a parked job whose
        module cannot be imported here: only taken out of its queue)."""
        return control.cancelJob(self, grace)

    def fail(self, e: BaseException | None = None) -> None:
        if e is None:
            e = interfaces.TimeoutError()
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only fail a job that has not started; %r is %s'
                % (self, self.status))
        if interfaces.IQueue.providedBy(self.parent):
            self.parent.remove(self)
        self._complete(utils.makeFailure(e), self._run_token)

    def resumeCallbacks(self, token: object = None) -> None:
        """Finish the callbacks of a job in CALLBACKS.  With `token` (as
        queued by a recovery), nothing happens unless that recovery still
        owns the job."""
        if token is not None and (self._status != CALLBACKS or
                                  self._run_token != token):
            return None  # finished meanwhile, or recovered already
        if self._status != CALLBACKS:
            raise interfaces.BadStatusError(
                'can only resume the callbacks of a job in CALLBACKS; %r is '
                '%s' % (self, self.status))
        self._runCallbacks(self._tm(), self._run_token)


def _placeCallback(parent, callback, failure_log_level,
                   retry_policy_factory):
    """`callback` (a job, a callable or a callback proxy) made a callback
    of `parent` (a job or a callback proxy)."""
    if interfaces.ICallbackProxy.providedBy(callback):
        if callback.parent is not None:
            raise ValueError('a callback proxy belongs to one job only: %r'
                             % (callback,))
        callback.parent = parent
        return callback
    if not interfaces.IJob.providedBy(callback):
        callback = Job(callback)
    if callback._status != NEW or callback.parent is not None:
        raise ValueError(
            'a callback must be a new job that belongs nowhere else: '
            '%r' % (callback,))
    callback.parent = parent
    if failure_log_level is not None:
        callback.failure_log_level = failure_log_level
    if retry_policy_factory is not None:
        callback.retry_policy_factory = retry_policy_factory
    return callback


def _runLate(parent, callback, result):
    """Run a callback added after its parent completed."""
    if interfaces.ICallbackProxy.providedBy(callback):
        callback = callback._choose(result)
    jar = parent._p_jar
    if jar is not None and callback._p_jar is None:
        jar.add(callback)
    callback._call(result)


@zope.interface.implementer(interfaces.ICallbackProxy)
class SuccessFailureCallbackProxy(persistent.Persistent):
    """What ``job.addCallbacks(success, failure)`` returns: a callback of
    the job that runs ``success`` with its result, or ``failure`` with its
    Failure.  Both are jobs (a missing one is made a job that passes the
    outcome on).  Callbacks added to the proxy run after whichever job
    ran, with that job's result; callbacks added to ``proxy.success`` or
    ``proxy.failure`` chain on that job only."""

    parent = None
    _callbacks = None

    def __init__(self, success=None, failure=None, failure_log_level=None,
                 retry_policy_factory=None):
        from zcasync.composite import passThrough
        jobs = []
        for value in (success, failure):
            if value is None:
                value = Job(passThrough)
            jobs.append(_placeCallback(self, value, failure_log_level,
                                       retry_policy_factory))
        self.success, self.failure = jobs

    def _choose(self, result):
        return self.failure if utils.isFailure(result) else self.success

    @property
    def job(self):
        """The job that runs (or ran): chosen by the result of the job
        this proxy is a callback of; None until that result is known."""
        parent = self.parent
        if parent is None or parent._status not in (CALLBACKS, COMPLETED):
            return None
        return self._choose(parent._result)

    @property
    def status(self):
        job = self.job
        return NEW if job is None else job.status

    @property
    def result(self):
        job = self.job
        return None if job is None else job.result

    @property
    def callbacks(self):
        return self._callbacks if self._callbacks is not None else ()

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Chain a callback: it gets the result of whichever job ran."""
        callback = _placeCallback(self, callback, failure_log_level,
                                  retry_policy_factory)
        if self._callbacks is None:
            self._callbacks = persistent.list.PersistentList()
        self._callbacks.append(callback)
        job = self.job
        if job is not None and job._status == COMPLETED:
            _runLate(self, callback, job._result)
        return callback

    def addCallbacks(self, success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        return self.addCallback(SuccessFailureCallbackProxy(
            success, failure, failure_log_level, retry_policy_factory))

    def __repr__(self):
        return '<%s.%s for %r>' % (type(self).__module__,
                                   type(self).__name__, self.parent)


# serial and parallel live in zcasync.composite; they are part of this
# module's API (imported last: composite builds on Job)
from zcasync.composite import serial, parallel  # noqa: E402,F401
# zc.async's names for the retry policies
from zcasync.retry import (  # noqa: E402,F401
    RetryCommonFourTimes, RetryCommonForever, NeverRetry,
    callback_retry_policy_factory)
