"""Queues and quotas.

``root[zcasync.interfaces.KEY]`` holds a ``Queues`` mapping of name ->
``Queue`` (the primary queue is named ``''``).  An application calls
``queue.put(job)`` inside its own transaction; agents ``claim`` jobs.

Storage layout, chosen so that cost does not grow with the number of
pending jobs and concurrent writers rarely conflict (keys: see
``zcasync.queuekeys``):

- due jobs live in ``_jobs``, keyed by lane (put back first), priority
  (higher first), time and oid; jobs scheduled for later live in
  ``_scheduled``, keyed by begin_after, and a claim moves those that came
  due to ``_jobs`` (a bounded batch each time).  A put adds one key, a
  claim removes one near the start, and each touches one bucket.  Both
  trees are ``JobTree``s: plain BTrees refuse to merge a removal of a
  bucket's *first* key with any concurrent change to that bucket (a claim
  and a put in a small queue, whose jobs share one bucket, would always
  conflict); a ``JobTree`` merges them when that is safe
  (``zcasync.treemerge``).
- the length is a ``BTrees.Length`` (conflict-resolving counter).
- two claims of the same job both write the job (its ``parent``), which
  has no conflict resolution: exactly one commits.
- unique keys: ``_unique`` maps a key to the job holding it; two
  transactions taking the same key both write that key, which BTrees
  refuse to merge, so exactly one commits.

Quotas are plain persistent objects *without* conflict resolution: two
processes that fill the same quota at once conflict, so a quota can never
overfill.
"""
from __future__ import annotations

import datetime
import heapq
import itertools
from typing import (
    TYPE_CHECKING, Any, Callable, Iterator, TypeVar)
import threading

import BTrees.Length
import BTrees.OOBTree
import persistent
from BTrees.Interfaces import BTreesConflictError
import ZODB.interfaces
import zope.interface

from zcasync import control as controlmodule
from zcasync import instanceuuid
from zcasync import interfaces
from zcasync import job as jobmodule
from zcasync import registry
from zcasync import schedules as schedulesmodule
from zcasync import utils
from zcasync.interfaces import CALLBACKS, COMPLETED, PENDING
from zcasync.queuekeys import (  # noqa: F401 (part of this module's API)
    LEGACY_NORMAL, FRONT, DUE, SCHEDULED, PROMOTE_BATCH, checkPriority,
    checkUnique, dueKey, scheduledKey, keyTime, promotedKey, timeBound, legacyBound,
    legacyToScheduled)
from zcasync.treemerge import EMPTIED, FIRST_DELETED, mergeBuckets
from zcasync.queueextras import (
    UniqueKeys, ParkedJobs, BlockedJobs, RefusedKeys)

if TYPE_CHECKING:
    from zcasync.job import Job, RetryPolicyFactory
    from zcasync.schedules import Schedule, Schedules

_Default = TypeVar('_Default')

_UNSTORED = itertools.count()
_put_lock = threading.Lock()
_last_put = [0]


def _putMicros(now):
    """The time of a put, in microseconds: strictly increasing in this
    process (jobs put at the same instant come out in put order, whatever
    their oids), and never more than a second ahead of `now` (a clock set
    back, as tests do, starts afresh)."""
    micros = utils.toMicros(now)
    with _put_lock:
        last = _last_put[0]
        if last - 1000000 < micros <= last:
            micros = last + 1
        _last_put[0] = micros
    return micros


def getDefaultQueue(ob):
    """The default queue (named '') of the database of `ob`: a
    connection, or a persistent object (its connection is found through
    its parents if it is not stored yet).  Registered as the IQueue
    adapter of both by ``zcasync.configure.base()``."""
    conn = ob if ZODB.interfaces.IConnection.providedBy(ob) else None
    seen = ob
    while conn is None and seen is not None:
        conn = getattr(seen, '_p_jar', None)
        seen = getattr(seen, '__parent__', getattr(seen, 'parent', None))
    if conn is None:
        raise TypeError(
            'cannot find the database of %r: it is not stored, and no parent '
            'of it is; commit it (or add it to a connection) first' % (ob,))
    queues = conn.root().get(interfaces.KEY)
    if queues is None or '' not in queues:
        raise LookupError(
            'the database has no default queue (root[%r][\'\']); install '
            'one (zcasync.subscribers.queue_installer, or '
            'zcasync.configure.start)' % (interfaces.KEY,))
    return queues['']


class JobBucket(BTrees.OOBTree.OOBucket):
    """A bucket of a ``JobTree``."""

    def _p_resolveConflict(self, old, committed, new):
        try:
            return super()._p_resolveConflict(old, committed, new)
        except BTreesConflictError as e:
            if e.reason != FIRST_DELETED:
                raise
        return mergeBuckets(old, committed, new, inline=False)


def _inlineBucket(state):
    if state is None:
        return None
    return state[0][0]


class JobTree(BTrees.OOBTree.OOBTree):
    """An OOBTree whose conflict resolution also merges the removal of the
    first key with concurrent changes elsewhere in the same bucket: a
    claim (removes the oldest job) with a put (adds the newest), or a
    job completing in an agent with a claim by that agent."""

    _bucket_type = JobBucket

    def _p_resolveConflict(self, old, committed, new):
        try:
            return super()._p_resolveConflict(old, committed, new)
        except BTreesConflictError as e:
            # a tree of several buckets fails with another reason
            if e.reason not in (EMPTIED, FIRST_DELETED):
                raise
        bucket = mergeBuckets(*(_inlineBucket(s)
                                 for s in (old, committed, new)),
                               inline=True)
        return None if bucket is None else ((bucket,),)


@zope.interface.implementer(interfaces.IQueues)
class Queues(utils.StoredMapping, persistent.Persistent):
    """name -> Queue, stored at ``root[zcasync.interfaces.KEY]``."""

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()

    def __setitem__(self, name: str, queue: Queue) -> None:
        if not interfaces.IQueue.providedBy(queue):
            raise ValueError(
                'only queues (zcasync.queue.Queue) may be stored in Queues, '
                'not %r' % (queue,))
        if not isinstance(name, str):
            raise TypeError('queue names are strings, not %r' % (name,))
        if queue.parent is not None and queue.parent is not self:
            raise ValueError('%r already belongs to another Queues' % queue)
        self._data[name] = queue
        queue.name = name
        queue.parent = self

    def __delitem__(self, name):
        queue = self._data[name]
        if len(queue):
            raise ValueError(
                'queue %r still holds %d job(s); pull them first'
                % (name, len(queue)))
        del self._data[name]
        queue.parent = None
        queue.name = None

    def __getitem__(self, name: str) -> Queue:
        return self._data[name]

    def get(self, name: str, default: Any = None) -> Queue | Any:
        return self._data.get(name, default)

    def setdefault(self, name: str, queue: Queue) -> Queue:
        """The queue named `name`, storing `queue` under it if missing."""
        if name not in self._data:
            self[name] = queue
        return self._data[name]

@zope.interface.implementer(interfaces.IQuota)
class Quota(persistent.Persistent):
    """At most ``size`` jobs with this quota name run at once."""

    parent: Any = None
    #: due key -> job: pending jobs that found this quota full, set aside
    #: so that claims do not walk past them (see ``zcasync.queueextras``)
    _waiting = None

    def __init__(self, name, size=1):
        self.name = name
        self.size = size
        self._jobs = ()

    @property
    def size(self):
        return self._size

    @size.setter
    def size(self, value):
        if not isinstance(value, int) or isinstance(value, bool) or \
                value < 0:
            raise ValueError('a quota size is an integer >= 0, not %r'
                             % (value,))
        self._size = value

    def __len__(self):
        return len(self._jobs)

    def __iter__(self):
        return iter(self._jobs)

    def __getitem__(self, index):
        return self._jobs[index]

    def __contains__(self, job):
        return any(j is job for j in self._jobs)

    @property
    def filled(self):
        return len(self._jobs) >= self._size

    def _holding(self, job):
        """A job holds its slot from its claim (with or without an agent)
        until it reaches CALLBACKS or COMPLETED, or is rescheduled for
        later (as in zc.async)."""
        status = job.status
        if status in (CALLBACKS, COMPLETED):
            return False
        if status == PENDING and job.begin_after is not None and \
                job.begin_after > utils.now():
            return False
        return True

    def clean(self):
        """Drop jobs that reached CALLBACKS or COMPLETED, or were
        rescheduled for later."""
        kept = tuple(j for j in self._jobs if self._holding(j))
        if len(kept) != len(self._jobs):
            self._jobs = kept

    def add(self, job):
        if job in self:
            return
        if self.filled:
            raise ValueError('quota %r is full (size %d)'
                             % (self.name, self._size))
        self._jobs += (job,)

    def __repr__(self):
        return '<zcasync.queue.Quota %r %d/%d>' % (
            self.name, len(self), self._size)


class Quotas(utils.StoredMapping, persistent.Persistent):
    """The quotas of one queue: name -> Quota."""

    parent: Any = None

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()

    def create(self, name: str, size: int = 1) -> None:
        """Create the quota `name` (then ``quotas[name]``); returns None."""
        if not isinstance(name, str):
            raise TypeError('quota names are strings, not %r' % (name,))
        if name in self._data:
            raise ValueError('quota %r already exists' % (name,))
        quota = Quota(name, size)
        quota.parent = self
        self._data[name] = quota

    def remove(self, name: str) -> None:
        """Remove the quota `name`; returns None."""
        quota = self._data.pop(name)
        quota.parent = None
        queue = self.parent
        if quota._waiting and queue is not None:
            queue._unblockAll(quota)  # no limit any more

    def _reserve(self, job):
        """Take room for `job` in each of its quotas: None; or the first
        full quota (nothing is taken then)."""
        quotas = []
        for name in job.quota_names:
            quota = self._data.get(name)
            if quota is None:
                continue  # removed since the put: no limit any more
            if job in quota:
                continue  # it kept its slot (put back after a claim)
            if quota.filled:
                quota.clean()
                if quota.filled:
                    return quota
            quotas.append(quota)
        for quota in quotas:
            quota.add(job)
        return None

    def _blocker(self, job):
        """The first of `job`'s quotas that is full now, or None."""
        for name in job.quota_names:
            quota = self._data.get(name)
            if quota is None or job in quota:
                continue  # no limit, or it kept its slot
            if quota.filled:
                quota.clean()
                if quota.filled:
                    return quota
        return None

@zope.interface.implementer(interfaces.IQueue)
class Queue(UniqueKeys, ParkedJobs, BlockedJobs, persistent.Persistent):
    """See the module docstring."""

    name: str | None = None
    parent: Any = None
    # added after queues were first stored: the class defaults serve
    # queues stored before (their trees are created on first use)
    _scheduled = None
    #: a count of keys put before the due tree's end (see _putInDue)
    _reorders = None
    _unique = None
    _schedules = None
    #: queue key -> (job, reason, when): jobs set aside (see ``_park``)
    _parked: Any = None
    #: jobs cancelled before they started (see zcasync.control)
    _cancelled: Any = None
    #: a paused queue accepts puts and hands out no jobs
    paused = False
    #: how long agents keep completed jobs (None: until ``zcasync prune``)
    completed_keep = datetime.timedelta(days=7)

    def __init__(self):
        self._jobs = JobTree()
        self._reorders = BTrees.Length.Length(0)
        self._scheduled = JobTree()
        self._unique = JobTree()
        self._length = BTrees.Length.Length(0)
        # changed by every put and never by a claim: what dispatchers
        # watch to hear of new jobs (a conflict-resolving counter)
        self.puts = BTrees.Length.Length(0)
        self.quotas = Quotas()
        self.quotas.parent = self
        self.dispatchers = registry.Dispatchers()
        self.dispatchers.parent = self
        self._schedules = schedulesmodule.Schedules()
        self._schedules.parent = self

    # -- adding ----------------------------------------------------------

    def put(self, item: Job | Callable[..., Any],
            begin_after: datetime.datetime | None = None,
            begin_by: datetime.timedelta | None = None,
            failure_log_level: int | None = None,
            retry_policy_factory: RetryPolicyFactory = None,
            priority: int | None = None, unique_key: Any = None,
            unique_for: datetime.timedelta | None = None,
            timeout: datetime.timedelta | None = None) -> Job:
        """Queue `item` (a job, or a callable made a job) and return it.

        ``priority`` (int, default 0): due jobs are claimed highest first,
        then by time.  ``unique_key``: while a job put with that key is
        pending or running in this queue, return it instead and store
        nothing; ``unique_for`` (a timedelta) holds the key for that long
        after the put instead, whatever the job's status.  ``timeout`` (a
        timedelta): the time limit of each run (``job.timeout``, see
        ``zcasync.control``).
        """
        if timeout is not None:
            controlmodule.checkTimeout(timeout)
        if priority is not None:
            checkPriority(priority)
        checkUnique(unique_key, unique_for)
        job = interfaces.IJob(item, None)
        if job is None:
            job = jobmodule.Job(item)
        if job._status != interfaces.NEW or job.parent is not None:
            raise ValueError(
                'only a new job that belongs nowhere yet can be put in a '
                'queue; %r is %s' % (job, job.status))
        for name in job.quota_names:
            if name not in self.quotas:
                raise ValueError(
                    'unknown quota name %r for %r; create it first with '
                    'queue.quotas.create(%r, size)' % (name, job, name))
        if begin_after is not None:
            utils.checkAware(begin_after, 'begin_after')
        if retry_policy_factory is not None:
            jobmodule.retry.checkFactory(retry_policy_factory)
        if unique_key is not None:
            holder = self.uniqueHolder(unique_key)
            if holder is not None:
                return holder
        if begin_after is not None:
            job.begin_after = begin_after
        elif job.begin_after is None:
            job.begin_after = utils.now()
        if begin_by is not None:
            job.begin_by = begin_by
        if failure_log_level is not None:
            job.failure_log_level = failure_log_level
        if retry_policy_factory is not None:
            job.retry_policy_factory = retry_policy_factory
        if priority is not None:
            job.priority = priority
        if timeout is not None:
            job.timeout = timeout
        job.assignerUUID = instanceuuid.currentUUID()
        jar = self._p_jar
        if jar is not None and job._p_jar is None:
            jar.add(job)
        if unique_key is not None:
            self._holdUnique(job, unique_key, unique_for)
        self._insert(job)
        return job

    def putBack(self, job: Job) -> None:
        """Put a (new) job at the front of the queue."""
        if job._status != interfaces.NEW or job.parent is not None:
            raise ValueError(
                'only a new job that belongs nowhere can be put back; %r '
                'is %s' % (job, job.status))
        jar = self._p_jar
        if jar is not None and job._p_jar is None:
            jar.add(job)
        self._insert(job, front=True)

    def _insert(self, job, front=False):
        now = utils.now()
        if job.begin_after is None:
            job.begin_after = now
        # a job not stored yet (the queue is not stored either) has no oid:
        # a process-wide counter keeps such puts first-in first-out
        token = job._p_oid or b'~%016x' % next(_UNSTORED)
        priority = job.priority
        if not front and job.begin_after > now:
            key = scheduledKey(utils.toMicros(job.begin_after), priority,
                               token)
            self._scheduledTree()[key] = job
        else:
            key = dueKey(FRONT if front else DUE, priority,
                         _putMicros(now), token)
            blocker = self.quotas._blocker(job) if job.quota_names else None
            if blocker is None:
                self._putInDue(key, job)
            else:
                self._block(key, job, blocker, move=False)
        job._queue_key = key
        job.parent = self
        self._length.change(1)
        self.puts.change(1)

    @staticmethod
    def _newTree():
        return JobTree()

    def _reorderCount(self):
        """How many times a key went into the due tree before its last key
        (see ``RefusedKeys``)."""
        return self._reorders() if self._reorders is not None else 0

    def _putInDue(self, key, job):
        """Put `job` under `key` in the due tree, counting a key that does
        not go at its end."""
        tree = self._jobs
        if tree and key < tree.maxKey():
            if self._reorders is None:
                self._reorders = BTrees.Length.Length(0)
            self._reorders.change(1)
        tree[key] = job

    def _scheduledTree(self):
        if self._scheduled is None:
            self._scheduled = JobTree()
        return self._scheduled

    # -- pausing and schedules ---------------------------------------------

    def pause(self) -> None:
        """Hand out no jobs until ``resume()`` (puts are still accepted;
        running jobs finish)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.puts.change(1)  # wakes the dispatchers, as a put does

    @property
    def schedules(self) -> Schedules:
        """name -> Schedule (``zcasync.schedules``)."""
        if self._schedules is None:
            self._schedules = schedulesmodule.Schedules()
            self._schedules.parent = self
        return self._schedules

    def existingSchedules(self) -> Schedules | None:
        """The schedules, or None for a queue that never had any (reading
        creates nothing)."""
        return self._schedules

    def schedule(self, name: str, callable: Callable[..., Any], *args: Any,
                 cron: str | None = None,
                 every: datetime.timedelta | None = None,
                 timezone: str = 'UTC', catch_up: bool = False,
                 grace: datetime.timedelta | None = None,
                 **kwargs: Any) -> Schedule:
        """Add or update the schedule `name`: a job calling
        ``callable(*args, **kwargs)`` for each tick of `cron` (a cron
        expression in `timezone`) or `every` (a timedelta).  See
        ``zcasync.schedules``."""
        return self.schedules.set(name, callable, args, kwargs, cron=cron,
                                  every=every, timezone=timezone,
                                  catch_up=catch_up, grace=grace)

    # -- reading ---------------------------------------------------------

    def __len__(self) -> int:
        return self._length()

    def __bool__(self) -> bool:
        return self._length() > 0

    def __iter__(self) -> Iterator[Job]:
        """Due jobs in claim order, then scheduled ones by begin_after."""
        return (job for key, job in self.pendingItems())

    def pendingItems(self, after: bytes | None = None
                     ) -> Iterator[tuple[bytes, Job]]:
        """(key, job) of the pending jobs in claim order -- due jobs
        (those waiting for quota room among them), then jobs scheduled for
        later -- starting after the key `after` (keys are bytes that sort
        across the trees: a cursor for paging)."""
        kw = {} if after is None else {'min': after, 'excludemin': True}
        trees = [self._jobs] + [q._waiting for q in self.quotas.values()
                                if q._waiting]
        if len(trees) == 1:
            yield from self._jobs.items(**kw)
        else:
            yield from heapq.merge(*(t.items(**kw) for t in trees),
                                   key=lambda item: item[0])
        if self._scheduled is not None:
            yield from self._scheduled.items(**kw)

    def __getitem__(self, index: int) -> Job:
        if index < 0:
            index += len(self)
        if index < 0:
            raise IndexError(index)
        for i, job in enumerate(self):
            if i == index:
                return job
        raise IndexError(index)

    def nextDue(self) -> datetime.datetime | None:
        """When the earliest job scheduled for later comes due (None when
        no job waits for a later time)."""
        after = utils.toMicros(utils.now()) + 1
        found = []
        if self._scheduled is not None:
            for key in self._scheduled.keys(min=timeBound(after)):
                found.append(keyTime(key))
                break
        for key in self._legacyScheduled(after):
            found.append(keyTime(key))
            break
        return utils.fromMicros(min(found)) if found else None

    def _legacyScheduled(self, after_micros):
        """Keys of jobs stored before priorities existed and scheduled for
        `after_micros` or later."""
        low, high = legacyBound(after_micros)
        return self._jobs.keys(min=low, max=high, excludemax=True)

    # -- removing --------------------------------------------------------

    def _candidates(self, job):
        """[(tree, key)] where `job` may be: moving a job between trees
        does not write it (a job that cannot be stored must not block its
        queue), so its ``_queue_key`` may name where it was, and the key
        it has now follows from that one."""
        key = getattr(job, '_queue_key', None)
        candidates = []
        if key:
            if key[0] == LEGACY_NORMAL:
                candidates.append((self._jobs, key))
                key = legacyToScheduled(key, 0)
            if key[0] == SCHEDULED:
                candidates.append((self._scheduled, key))
                key = promotedKey(key)
            candidates.append((self._jobs, key))
            candidates.extend((tree, key) for tree in self._waitingTrees(job))
        return candidates

    def _locate(self, job):
        """(tree, key) of `job` in this queue, or None."""
        for tree, candidate in self._candidates(job):
            if tree is not None and tree.get(candidate) is job:
                return tree, candidate
        return None

    def _take(self, job):
        tree, key = self._locate(job)
        del tree[key]
        self._length.change(-1)
        job._queue_key = None
        job.parent = None
        return job

    def remove(self, job: Job) -> None:
        """Remove a pending or parked job.  A job this process cannot
        store again (see ``zcasync.job.loadProblem``) is removed without
        being written: it then belongs nowhere (reads NEW)."""
        parked = self._parkedKey(job)
        located: Any = self._locate(job) if parked is None else None
        if parked is None and located is None:
            raise LookupError('%r is not in queue %r' % (job, self.name))
        storable = jobmodule.loadProblem(job) is None
        if parked is not None:
            del self._parked[parked]
        elif storable:
            self._take(job)
        else:
            tree, key = located
            del tree[key]
            self._length.change(-1)
        if parked is not None and storable:
            job._queue_key = None
            job.parent = None
        self._freeUnique(job)

    def pull(self, index: int = 0) -> Job:
        """Remove and return the job at `index` (the way to cancel a job
        nobody claimed yet)."""
        job = self._take(self[index])
        self._freeUnique(job)
        return job

    def _promote(self, now_micros):
        """Move scheduled jobs that came due to the due tree, where they
        take their place by priority (and their due time).  The jobs are
        neither loaded nor written (see ``_locate``)."""
        moves = []
        if self._scheduled:
            bound = timeBound(now_micros + 1)
            for key, job in self._scheduled.items(max=bound,
                                                  excludemax=True):
                moves.append((self._scheduled, key, job))
                if len(moves) >= PROMOTE_BATCH:
                    break
        if len(moves) < PROMOTE_BATCH:
            # stored before priorities: still in the due tree
            for key in self._legacyScheduled(now_micros + 1):
                moves.append((self._jobs, key, None))
                if len(moves) >= PROMOTE_BATCH:
                    break
        for tree, key, job in moves:
            job = tree.pop(key)
            if tree is self._jobs:  # legacy (priority 0): wait for its time
                self._scheduledTree()[legacyToScheduled(key, 0)] = job
            else:
                self._putInDue(promotedKey(key), job)

    def claim(self, filter: Callable[[Job], bool] | None = None,
              default: Any = None, front: bool = False,
              refused: RefusedKeys | None = None) -> Job | Any:
        """The first due job that `filter` accepts and whose quotas have
        room, removed from the queue; `default` when there is none (or
        the queue is paused).  Due jobs come by priority, then time.

        A job past its ``begin_by`` deadline is not handed out: a job that
        fails it with TimeoutError is returned in its place.  A job this
        process cannot run is parked on the way (see parked jobs).  With
        `front`, only the first due job is considered: `default` if it does
        not fit (no walk past it).  `refused`: what the caller's `filter`
        refused before (``RefusedKeys``: jumped over without loading their
        jobs), to which this claim adds what it refuses.
        """
        if self.paused:
            return default
        now = utils.now()
        self._promote(utils.toMicros(now))
        self._unblock()
        if refused is not None:
            refused.check(self._reorderCount())
        after = None  # resume the walk after a job set aside
        previous = None  # the last key visited, if refused
        while True:
            kw: dict[str, Any] = {} if after is None else {
                'min': after, 'excludemin': True}
            for key, job in self._jobs.items(**kw):
                if refused is not None:
                    end = refused.jump(key)
                    if end is not None:
                        after = previous = end
                        break  # go on after the run
                problem = jobmodule.loadProblem(job)
                if problem is not None:
                    self._park(key, job, problem)
                    after = key
                    break  # the tree changed under the walk
                if filter is not None and not filter(job):
                    if front:
                        return default
                    if refused is not None:
                        refused.add(key, previous)
                        previous = key
                    continue
                previous = None
                if job.begin_by is not None and \
                        job.begin_after + job.begin_by < now:
                    return self._timedOut(job, now)
                blocker = self.quotas._reserve(job) \
                    if job.quota_names else None
                if blocker is not None:
                    if front:
                        return default
                    self._block(key, job, blocker)
                    after = key
                    break  # the tree changed under the walk
                return self._take(job)
            else:
                return default

    def _timedOut(self, job, now):
        self._take(job)
        failer = jobmodule.Job(job.fail)
        failer.begin_after = now
        failer.assignerUUID = job.assignerUUID
        failer.failure_log_level = job.failure_log_level
        jar = self._p_jar
        if jar is not None:
            jar.add(failer)
        job.parent = failer  # so the job still reaches its agent and queue
        return failer

    def __repr__(self):
        return '<zcasync.queue.Queue %r (%d jobs)>' % (self.name, len(self))
