"""A job's run, from its start to its completion: the life cycle behind
``zcasync.job.Job`` (a base class of it: this module holds no persistent
class of its own).

A run starts when a dispatcher's claim marks the job ACTIVE under a new
token (``_activate``, then ``_runClaimed(token)`` in a worker thread), or
when the job is called directly (``job()``, which commits the ACTIVE mark
itself).  Then::

    call --> result --commit--> CALLBACKS --each callback commits-->
        COMPLETED --commit

- If the callable raises, its work is aborted, a storable Failure is built
  and the retry policy decides: retry now, reschedule in the queue, or give
  up (the failure becomes the result).
- If committing the result fails, the policy's ``commitError`` decides;
  retrying re-runs the call, giving up stores the commit failure.
- If the callable returns another Job, the job stays ACTIVE with that
  inner job as its temporary ``result`` (``job()`` returns it) and takes
  the inner job's result when it completes.  The inner job is neither run
  nor queued by this one: whoever made it puts it in a queue or calls it
  (as in zc.async).  A returned Twisted Deferred likewise: ``job()``
  returns it, and the job takes its result when it fires.
- If the callable gives an awaitable (an ``async def`` function or
  method: a coroutine job), the run awaits it -- on its dispatcher's event
  loop, or with ``asyncio.run`` when called directly -- and goes on with
  its outcome as above (``zcasync.coroutines``).
- The job logs its own outcome: success at INFO on ``zcasync.trace``,
  failure at its ``failure_log_level`` (ERROR, CRITICAL for callbacks) on
  ``zcasync.events``.

Every commit goes through one helper (``_commitOwned``) that first checks
that the run still owns the job (see "ownership" below).
"""
import itertools
import logging
import random
import secrets
import time

import BTrees.OOBTree
import transaction
import transaction.interfaces
import twisted.internet.defer
import ZEO.Exceptions

from zcasync import control
from zcasync import coroutines
from zcasync import interfaces
from zcasync import threadlocal
from zcasync import utils
from zcasync.interfaces import NEW, ACTIVE, CALLBACKS, COMPLETED

_RETRY = 'retry'
_GIVE_UP = 'give up'
_RESCHEDULE = 'reschedule'

#: How many times a commit of the job life cycle is tried before giving up
#: (transient errors only: conflicts, disconnections).
COMMIT_ATTEMPTS = 30
_UNCHECKED = object()


def _newToken():
    """A run token: unique enough that two runs never share one."""
    return secrets.token_hex(8)


def _pause(error, attempt):
    """Wait before trying a commit again: a disconnected storage needs
    time to come back; conflicts are retried at once, then with a little
    random spread."""
    if isinstance(error, ZEO.Exceptions.ClientDisconnected):
        time.sleep(min(0.5 * attempt, 5.0))
    elif attempt > 2:
        time.sleep(random.uniform(0, 0.005 * attempt))


def _decision(value):
    """Normalise a policy answer to (action, when).  A naive datetime is
    taken as UTC (zc.async's policies answered with naive UTC times)."""
    import datetime
    if value is True:
        return _RETRY, None
    if isinstance(value, datetime.timedelta):
        return _RESCHEDULE, utils.now() + value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=utils.UTC)
        return _RESCHEDULE, utils.checkAware(value, 'reschedule time')
    return _GIVE_UP, None


class JobLifeCycle:
    """The run of a job (see the module docstring); ``Job`` inherits it."""

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

    # -- ownership -------------------------------------------------------
    #
    # A run owns its job through a token, set when the run starts (a
    # dispatcher's claim, or a direct call) and stored on the job.  Handing
    # the run to recovery (a sibling found its process dead, or its own
    # dispatcher found no thread running it) replaces the token, which also
    # writes the job, so the old run's next commit conflicts.  Every commit
    # of a run's outcome, and every retry after an abort, checks the token
    # first: a run that lost its job stops with ReassignedError and never
    # commits, whatever the job's status says.

    @property
    def run_token(self) -> str | None:
        """The token of the run that owns this job now (None when no run
        does)."""
        return self._run_token

    def _checkOwner(self, token):
        """Raise ReassignedError unless the run holding `token` still owns
        this job: the one place where ownership is read."""
        if self._run_token != token:
            raise interfaces.ReassignedError(
                '%r was handed to another run while this one held it (its '
                'process was thought dead, or it was recovered); this run\'s '
                'work is discarded' % (self,))

    def _commitOwned(self, tm, token, apply):
        """The commit helper of the job life cycle: check that the run
        holding `token` owns the job (unless `token` is _UNCHECKED), apply
        the change and commit; after a transient error abort, and check
        and apply again (up to COMMIT_ATTEMPTS times, pausing after
        disconnections)."""
        for attempt in itertools.count(1):
            if token is not _UNCHECKED:
                self._checkOwner(token)
            apply()
            try:
                self._commit(tm)
                return
            except transaction.interfaces.TransientError as error:
                self._abort(tm)
                if attempt >= COMMIT_ATTEMPTS:
                    raise
                _pause(error, attempt)
            except BaseException:
                self._abort(tm)
                raise

    # -- running ---------------------------------------------------------

    def _start(self, token=None):
        token = token or _newToken()
        self._status = ACTIVE
        self.active_start = utils.now()
        self._run_token = token
        # live annotations written while the job runs must find the tree
        # (making it then would write the running job: a conflict)
        if self._annotations is None:
            self._annotations = BTrees.OOBTree.OOBTree()
        return token

    def _markActive(self, tm, token=None, check=None):
        """Start a run: mark the job ACTIVE under a new token (or
        `token`), committed; returns the token.  `check()`, called before
        each attempt, raises BadStatusError when the job is no longer the
        caller's to start."""
        token = token or _newToken()

        def apply():
            if self._status == ACTIVE and self._run_token == token:
                return  # an earlier attempt's commit failed, yet landed
            if self._status != NEW:
                raise interfaces.BadStatusError(
                    '%r is %s: another process took it' % (self, self.status))
            if check is not None:
                check()
            self._start(token)
        self._commitOwned(tm, _UNCHECKED, apply)
        return token

    def _activate(self):
        """Mark a job ACTIVE in its claimant's transaction (a dispatcher
        records the claim and the start in one commit); returns the run's
        token, to run it with ``_runClaimed(token)`` once committed."""
        if self._status != NEW:
            raise interfaces.BadStatusError(
                'can only activate a job that has not started; %r is %s'
                % (self, self.status))
        return self._start()

    def _runClaimed(self, token):
        """Run a job that ``_activate`` marked ACTIVE under `token`."""
        return coroutines.runSteps(self._runClaimedSteps(token))

    def _runClaimedSteps(self, token):
        """``_runClaimed`` as steps (see ``_executeSteps``)."""
        if self._status != ACTIVE or self._inner is not None:
            raise interfaces.BadStatusError(
                '%r is %s, not a claimed job waiting to run; another process '
                'may have recovered it' % (self, self.status))
        self._checkOwner(token)
        return (yield from self._executeSteps((), {}, token))

    def _call(self, *args, **kwargs):
        coroutines.checkCallable(self)
        token = self._markActive(self._tm())
        return self._execute(args, kwargs, token)

    def _execute(self, args, kwargs, token):
        return coroutines.runSteps(self._executeSteps(args, kwargs, token))

    def _executeSteps(self, args, kwargs, token):
        """The run, as a generator: when the callable gives an awaitable
        (a coroutine job), it yields it (a ``zcasync.coroutines.Step``)
        and its driver sends back the outcome -- the result, or a Failure
        marked as raised.  ``coroutines.runSteps`` drives it in this
        thread; a dispatcher's runner on its event loop, committing in
        another thread.  Returns what ``job()`` returns."""
        tm = self._tm()
        policy = self._policyOrDefault()
        data_cache = {}
        while True:
            res = self._invoke(args, kwargs)
            if coroutines.isAwaitable(res):
                res = yield coroutines.Step(self, res)
            # a run asked to stop ends with the stop error (zcasync.control)
            res = control.outcome(self, res)
            if isinstance(res, control.Snooze):
                control.snoozeRun(self, res, tm, token, policy, data_cache)
                return self._result
            if utils.isFailure(res) and getattr(res, '_zcasync_raised', 0):
                del res._zcasync_raised
                self._abortRun(tm, token, policy, data_cache)
                action, when = _decision(
                    control.decide(self, policy, res, data_cache))
                if action == _RETRY:
                    continue
                if action == _RESCHEDULE:
                    self._reschedule(when, tm, token, policy, data_cache)
                    return self._result
            self._checkOwner(token)  # (the job's code may have committed)
            try:
                if data_cache:
                    policy.updateData(data_cache)
                waiting = self._setResult(res, token)
                if not waiting and not self._allCallbacks():
                    # nothing to call back: result and completion in one
                    # commit (a concurrent addCallback conflicts with it);
                    # a dispatcher may start its next job in it too
                    self._markCompleted()
                    threadlocal.beforeFinalCommit(self)
                self._commit(tm)
            except Exception:
                failure = utils.makeFailure()
                utils.safeLog(
                    utils.log, logging.WARNING,
                    '%r could not store its result (%s); its retry policy '
                    'decides what happens', self,
                    failure.getErrorMessage() or utils.exceptionClassName(
                        failure))
                self._abortRun(tm, token, policy, data_cache)
                if self._status in (CALLBACKS, COMPLETED):
                    # the commit reported an error, yet it landed (the
                    # connection was lost during its second phase): the
                    # outcome of this run is stored; never run it again
                    waiting = False
                    break
                action, when = _decision(
                    policy.commitError(failure, data_cache))
                if action == _RETRY:
                    continue
                if action == _RESCHEDULE:
                    self._reschedule(when, tm, token, policy, data_cache)
                    return self._result
                waiting = False
                self._storeCommitFailure(tm, token, failure)
            break
        if not waiting:
            self._logOutcome()
            if self._status != COMPLETED:
                self._runCallbacks(tm, token)
        elif isinstance(res, twisted.internet.defer.Deferred) and \
                self._status == ACTIVE:
            return res  # as zc.async: the caller gets the Deferred
        return self._result

    def _logOutcome(self):
        """Log the final result (after it was committed): success at INFO
        on zcasync.trace, failure at the job's failure_log_level (ERROR;
        CRITICAL for callbacks) on zcasync.events, with the traceback."""
        result = self._result
        if utils.isFailure(result):
            level = self.failure_log_level or (
                logging.CRITICAL if self.isCallback else logging.ERROR)
            utils.safeLog(utils.log, level, '%r failed with traceback:\n%s',
                          self, result.getTraceback())
        else:
            utils.safeLog(utils.tracelog, logging.INFO,
                          '%r succeeded with result: %r', self, result)

    def _abortRun(self, tm, token, policy, data_cache):
        """Abort this run's work before a retry decision; stop with
        ReassignedError when the run no longer owns the job."""
        self._abort(tm)
        self._checkOwner(token)
        policy.updateData(data_cache)

    def _storeCommitFailure(self, tm, token, failure):
        """The policy gave up on committing the result: store the commit
        failure as the result (which must be possible: it is small)."""
        try:
            self._commitOwned(tm, token,
                              lambda: self._setResult(failure, token))
        except interfaces.ReassignedError:
            raise
        except Exception:
            utils.safeLog(utils.log, logging.CRITICAL,
                          'could not store even the commit failure of %r:\n'
                          '%s\nits dispatcher hands it back to its retry '
                          'policy', self, utils.formatException())
            raise

    def _invoke(self, args, kwargs):
        call_args = list(self._args)
        call_args.extend(args)
        call_kwargs = dict(self._kwargs or ())
        call_kwargs.update(kwargs)
        threadlocal.pushJob(self)
        try:
            return self.callable(*call_args, **call_kwargs)
        except control.Snooze as snoozed:
            return snoozed
        except Exception:
            return self._raisedFailure()
        finally:
            threadlocal.popJob()

    def _raisedFailure(self):
        """The Failure of the exception the job's code raised (being
        handled), marked for the retry policy's ``jobError``."""
        failure = utils.makeFailure(captureVars=self.capture_variables)
        failure._zcasync_raised = True
        return failure

    def _setResult(self, res, token):
        """Put the outcome in place; True when the job now waits for an
        inner job or a Deferred."""
        if interfaces.IJob.providedBy(res):
            if res._status == COMPLETED:
                res = res._result
            else:
                self._waitFor(res, token)
                return True
        elif isinstance(res, twisted.internet.defer.Deferred):
            if not res.called:
                self._waitForDeferred(res, token)
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

    # -- waiting on an inner job or a Deferred ----------------------------

    def _waitFor(self, inner, token):
        # the inner job is the temporary result; it is neither queued nor
        # run here: whoever made it does that (zc.async's semantics)
        self._inner = inner
        self._result = inner
        from zcasync.job import Job
        inner.addCallback(Job(self._innerCompleted, token=token))
        # the job no longer needs an agent slot: it resumes when the inner
        # job's callback runs, wherever that happens
        agent = self.agent
        if agent is not None and self.parent is agent:
            agent._release(self)

    def _innerCompleted(self, result, token=None):
        """The inner job this one waits for completed: take its result,
        if the run that waits for it still owns this job."""
        if self._status != ACTIVE or (token is not None and
                                      self._run_token != token):
            return None
        self._complete(result, self._run_token)
        return None

    #: the public name of ``_innerCompleted``, which stored jobs name as
    #: their callable (see zcasync.stable)
    innerCompleted = _innerCompleted

    def _waitForDeferred(self, deferred, token):
        jar = self._p_jar
        db = jar.db() if jar is not None else None
        oid = self._p_oid

        def fired(result):
            if db is None:
                if self._status == ACTIVE and self._run_token == token:
                    self._complete(result, token)
                return result
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            try:
                job = conn.get(oid)
                if job._status != ACTIVE or job._run_token != token:
                    utils.safeLog(
                        utils.log, logging.WARNING,
                        'ignoring the late result of a Deferred returned by '
                        '%r: the run that returned it no longer owns the job '
                        '(it is %s)', job, job.status)
                    return None
                job._complete(result, token)
            except interfaces.ReassignedError:
                utils.safeLog(utils.log, logging.WARNING, '%s',
                              utils.formatException().strip().splitlines()[-1])
            finally:
                tm.abort()
                conn.close()
            return None
        deferred.addBoth(fired)

    # -- completion and callbacks ----------------------------------------

    def _complete(self, result, token):
        """Set the final result of a job that is not running the normal
        call path (fail, interruption, inner job, Deferred), for the run
        holding `token`."""
        tm = self._tm()
        self._commitOwned(tm, token, lambda: self._setResult(result, token))
        if self._status == ACTIVE:
            return  # it waits again (the result was a job or a Deferred)
        self._logOutcome()
        self._runCallbacks(tm, token)

    def _runCallbacks(self, tm, token):
        attempt = 0
        while True:
            ran = self._allCallbacks()
            for callback in ran:
                # each callback commits, which shows this connection what
                # others committed: a takeover stops the loop
                self._checkOwner(token)
                self._runCallback(callback)
            self._checkOwner(token)
            # re-read the list (which also loads it, so that touching it
            # below really writes it) and run late arrivals
            if len(self._allCallbacks()) != len(ran):
                continue
            self._markCompleted()
            try:
                self._commit(tm)
                return
            except transaction.interfaces.TransientError as error:
                self._abort(tm)
                if self._status == COMPLETED and self._run_token == token:
                    return  # the commit failed, yet landed
                attempt += 1
                if attempt >= COMMIT_ATTEMPTS:
                    raise
                _pause(error, attempt)

    def _markCompleted(self):
        self._status = COMPLETED
        self.active_end = utils.now()
        # a callback added concurrently writes the same list (or, for the
        # first callback, this job): touching it here turns that race into
        # a ConflictError, never a loss
        if self._callbacks is not None:
            self._callbacks._p_changed = True
        proxy = self._proxy()
        if proxy is not None and proxy._callbacks is not None:
            proxy._callbacks._p_changed = True
        agent = self.agent
        if agent is not None and self.parent is agent and \
                not threadlocal.settlesLater():
            # (under a dispatcher, its next poll does this, batched)
            agent.jobCompleted(self)

    def _proxy(self):
        """The callback proxy (``addCallbacks``) that chose this job, whose
        own callbacks then follow this job's; else None."""
        parent = self.parent
        if interfaces.ICallbackProxy.providedBy(parent) and \
                parent.job is self:
            return parent
        return None

    def _allCallbacks(self):
        """This job's callbacks, then those added to the callback proxy
        that chose it (they get this job's result)."""
        callbacks = list(self.callbacks)
        proxy = self._proxy()
        if proxy is not None:
            callbacks.extend(proxy.callbacks)
        return callbacks

    def _runCallback(self, callback):
        if interfaces.ICallbackProxy.providedBy(callback):
            callback = callback._choose(self._result)
        status = callback._status
        if status == ACTIVE and callback._inner is None:
            # it was running when the process died; callbacks belong to
            # the run that owns their parent (this one)
            callback.handleInterrupt()
            status = callback._status
            utils.tracelog.debug(
                '%s interrupted callback %r to %r',
                'retrying' if status == NEW else 'aborting', callback, self)
        if status == NEW:
            utils.tracelog.debug('starting callback %r to %r', callback, self)
            try:
                callback._call(self._result)
            except interfaces.BadStatusError:
                pass  # another process ran it meanwhile
        elif status == CALLBACKS:
            callback.resumeCallbacks()

    def _reschedule(self, when, tm, token, policy=None, data_cache=None):
        """Put the job back in its queue to start at `when` (storing the
        policy's counts with it)."""
        queue = self.queue
        if queue is None:
            self._complete(utils.makeFailure(interfaces.AbortedError(
                'the retry policy rescheduled %r but it has no queue'
                % self)), token)
            return

        def apply():
            if data_cache:
                policy.updateData(data_cache)
            parent = self.parent
            if interfaces.IAgent.providedBy(parent):
                parent.remove(self)  # its public method: a custom agent works
            self._resetForRetry()
            self._requeue(queue, when)
        self._commitOwned(tm, token, apply)
