"""Queues and quotas.

``root[zcasync.interfaces.KEY]`` holds a ``Queues`` mapping of name ->
``Queue`` (the primary queue is named ``''``).  An application calls
``queue.put(job)`` inside its own transaction; agents ``claim`` jobs.

Storage layout, chosen so that cost does not grow with the number of
pending jobs and concurrent writers rarely conflict:

- jobs live in one OOBTree keyed ``(lane, micros, oid)``: lane 0 for jobs
  put back (they come first), lane 1 for the rest, ordered by
  ``max(put time, begin_after)`` -- so due jobs come out first-in
  first-out and scheduled jobs come out when due, in ``begin_after``
  order.  A put adds one key near the end of the tree, a claim removes one
  near the start, and each touches one bucket.  The tree is a ``JobTree``:
  plain BTrees refuse to merge a removal of a bucket's *first* key with
  any concurrent change to that bucket (a claim and a put in a small
  queue, whose jobs share one bucket, would always conflict); a
  ``JobTree`` merges them when that is safe (see ``_mergeBuckets``).
- the length is a ``BTrees.Length`` (conflict-resolving counter).
- two claims of the same job both write the job (its ``parent``), which
  has no conflict resolution: exactly one commits.

Quotas are plain persistent objects *without* conflict resolution: two
processes that fill the same quota at once conflict, so a quota can never
overfill.
"""
import itertools
import logging
import struct

import BTrees.Length
import BTrees.OOBTree
import persistent
from BTrees.Interfaces import BTreesConflictError
import zope.interface
import ZODB.utils

from zcasync import instanceuuid
from zcasync import interfaces
from zcasync import job as jobmodule
from zcasync import registry
from zcasync import utils
from zcasync.interfaces import ACTIVE, ASSIGNED, CALLBACKS

FRONT, NORMAL = 0, 1

# Keys are bytes -- lane (1 byte), time in microseconds (8 bytes, big
# endian), then the job's oid -- so that they sort as (lane, time, oid) and
# pickle as one object each (tuple keys cost several).
_PREFIX = struct.Struct('>BQ')


def _key(lane, micros, token):
    return _PREFIX.pack(lane, micros) + token


def _keyParts(key):
    """(lane, micros) of a key."""
    return _PREFIX.unpack_from(key)


def _describeOid(job):
    oid = getattr(job, '_p_oid', None)
    if oid is None:
        return '(unstored)'
    return '%d@%s' % (ZODB.utils.u64(oid), utils.databaseName(job))

_UNSTORED = itertools.count()

# BTreesConflictError reasons handled by JobTree (see BTrees' merge code)
_EMPTIED, _FIRST_DELETED = 12, 13
_MISSING = object()


def _bucketItems(state):
    if state is None:
        return []
    flat = state[0]
    return list(zip(flat[0::2], flat[1::2]))


def _same(a, b):
    if a is b:
        return True
    try:
        return a == b
    except ValueError:  # two different ZODB PersistentReferences
        return False


def _mergeBuckets(old, committed, new, inline):
    """Three-way merge of bucket states that BTrees refused only because
    one side removed the bucket's first key (or, for a tree held in one
    inline bucket, emptied it).  Returns the merged bucket state, None for
    an empty inline tree; raises BTreesConflictError when unsafe.

    A key removed, changed or added by both sides is a real conflict (two
    claims of one job).  Removing a bucket's first key may have moved the
    parent node's separator up to that side's new first key, so keys the
    other side added must sort after it; an emptied bucket is unlinked
    from its tree, so only an inline tree may end up empty.
    """
    o, c, n = (_bucketItems(s) for s in (old, committed, new))
    cd, nd = dict(c), dict(n)
    merged = {}
    for key, value in o:
        cv, nv = cd.get(key, _MISSING), nd.get(key, _MISSING)
        c_changed = cv is _MISSING or not _same(cv, value)
        n_changed = nv is _MISSING or not _same(nv, value)
        if c_changed and n_changed:
            raise BTreesConflictError(-1, -1, -1, 5)
        result = cv if c_changed else nv
        if result is not _MISSING:
            merged[key] = result
    old_keys = {key for key, value in o}
    added_c = [key for key, value in c if key not in old_keys]
    added_n = [key for key, value in n if key not in old_keys]
    if set(added_c) & set(added_n):
        raise BTreesConflictError(-1, -1, -1, 6)
    for key in added_c:
        merged[key] = cd[key]
    for key in added_n:
        merged[key] = nd[key]
    if not inline:
        if not merged or not c or not n:
            raise BTreesConflictError(-1, -1, -1, _EMPTIED)
        first = o[0][0]
        for side, added_other in ((c, added_n), (n, added_c)):
            if side[0][0] > first and any(k < side[0][0]
                                          for k in added_other):
                raise BTreesConflictError(-1, -1, -1, _FIRST_DELETED)
    if not merged:
        return None
    flat = []
    for key in sorted(merged):
        flat.extend((key, merged[key]))
    state = (tuple(flat),)
    if not inline and old is not None and len(old) > 1:
        state += (old[1],)  # BTrees checked that no side changed `next`
    return state


class JobBucket(BTrees.OOBTree.OOBucket):
    """A bucket of a ``JobTree``."""

    def _p_resolveConflict(self, old, committed, new):
        try:
            return super()._p_resolveConflict(old, committed, new)
        except BTreesConflictError as e:
            if e.reason != _FIRST_DELETED:
                raise
        return _mergeBuckets(old, committed, new, inline=False)


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
            if e.reason not in (_EMPTIED, _FIRST_DELETED):
                raise
        bucket = _mergeBuckets(*(_inlineBucket(s)
                                 for s in (old, committed, new)),
                               inline=True)
        return None if bucket is None else ((bucket,),)


@zope.interface.implementer(interfaces.IQueues)
class Queues(persistent.Persistent):
    """name -> Queue, stored at ``root[zcasync.interfaces.KEY]``."""

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()

    def __setitem__(self, name, queue):
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

    def __getitem__(self, name):
        return self._data[name]

    def get(self, name, default=None):
        return self._data.get(name, default)

    def setdefault(self, name, queue):
        """The queue named `name`, storing `queue` under it if missing."""
        if name not in self._data:
            self[name] = queue
        return self._data[name]

    def __contains__(self, name):
        return name in self._data

    def __iter__(self):
        return iter(self._data.keys())

    def keys(self):
        return list(self._data.keys())

    def values(self):
        return list(self._data.values())

    def items(self):
        return list(self._data.items())

    def __len__(self):
        return len(self._data)


@zope.interface.implementer(interfaces.IQuota)
class Quota(persistent.Persistent):
    """At most ``size`` jobs with this quota name run at once."""

    parent = None

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

    def __contains__(self, job):
        return any(j is job for j in self._jobs)

    @property
    def filled(self):
        return len(self._jobs) >= self._size

    def _holding(self, job):
        return job.status in (ASSIGNED, ACTIVE, CALLBACKS)

    def clean(self):
        """Drop jobs that finished or went back to waiting."""
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


class Quotas(persistent.Persistent):
    """The quotas of one queue: name -> Quota."""

    parent = None

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()

    def create(self, name, size=1):
        if not isinstance(name, str):
            raise TypeError('quota names are strings, not %r' % (name,))
        if name in self._data:
            raise ValueError('quota %r already exists' % (name,))
        quota = Quota(name, size)
        quota.parent = self
        self._data[name] = quota
        return quota

    def remove(self, name):
        quota = self._data.pop(name)
        quota.parent = None
        return quota

    def __getitem__(self, name):
        return self._data[name]

    def get(self, name, default=None):
        return self._data.get(name, default)

    def __contains__(self, name):
        return name in self._data

    def __iter__(self):
        return iter(self._data.keys())

    def keys(self):
        return list(self._data.keys())

    def values(self):
        return list(self._data.values())

    def __len__(self):
        return len(self._data)

    def _reserve(self, job):
        """Take room for `job` in each of its quotas; False if one is
        full (nothing is taken then)."""
        quotas = []
        for name in job.quota_names:
            quota = self._data.get(name)
            if quota is None:
                continue  # removed since the put: no limit any more
            if quota.filled:
                quota.clean()
                if quota.filled:
                    return False
            quotas.append(quota)
        for quota in quotas:
            quota.add(job)
        return True


@zope.interface.implementer(interfaces.IQueue)
class Queue(persistent.Persistent):
    """See the module docstring."""

    name = None
    parent = None
    #: queue key -> (job, reason, when): jobs set aside (see ``_park``)
    _parked = None

    def __init__(self):
        self._jobs = JobTree()
        self._length = BTrees.Length.Length(0)
        # changed by every put and never by a claim: what dispatchers
        # watch to hear of new jobs (a conflict-resolving counter)
        self.puts = BTrees.Length.Length(0)
        self.quotas = Quotas()
        self.quotas.parent = self
        self.dispatchers = registry.Dispatchers()
        self.dispatchers.parent = self

    # -- adding ----------------------------------------------------------

    def put(self, item, begin_after=None, begin_by=None,
            failure_log_level=None, retry_policy_factory=None):
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
            job.begin_after = begin_after
        elif job.begin_after is None:
            job.begin_after = utils.now()
        if begin_by is not None:
            job.begin_by = begin_by
        if failure_log_level is not None:
            job.failure_log_level = failure_log_level
        if retry_policy_factory is not None:
            job.retry_policy_factory = retry_policy_factory
        job.assignerUUID = instanceuuid.currentUUID()
        jar = self._p_jar
        if jar is not None and job._p_jar is None:
            jar.add(job)
        self._insert(job)
        return job

    def putBack(self, job):
        """Put a (new) job at the front of the queue."""
        if job._status != interfaces.NEW or job.parent is not None:
            raise ValueError(
                'only a new job that belongs nowhere can be put back; %r '
                'is %s' % (job, job.status))
        jar = self._p_jar
        if jar is not None and job._p_jar is None:
            jar.add(job)
        self._insert(job, FRONT)

    def _insert(self, job, lane=NORMAL):
        stamp = utils.now()
        if lane == NORMAL and job.begin_after is not None and \
                job.begin_after > stamp:
            stamp = job.begin_after
        if job.begin_after is None:
            job.begin_after = utils.now()
        # a job not stored yet (the queue is not stored either) has no oid:
        # a process-wide counter keeps such puts first-in first-out
        token = job._p_oid or b'~%016x' % next(_UNSTORED)
        key = _key(lane, utils.toMicros(stamp), token)
        job._queue_key = key
        job.parent = self
        self._jobs[key] = job
        self._length.change(1)
        self.puts.change(1)

    # -- reading ---------------------------------------------------------

    def __len__(self):
        return self._length()

    def __bool__(self):
        return self._length() > 0

    def __iter__(self):
        return iter(self._jobs.values())

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        if index < 0:
            raise IndexError(index)
        for i, job in enumerate(self._jobs.values()):
            if i == index:
                return job
        raise IndexError(index)

    def nextDue(self):
        """When the earliest job scheduled for later comes due (None when
        no job waits for a later time)."""
        now_micros = utils.toMicros(utils.now())
        for key in self._jobs.keys(min=_PREFIX.pack(NORMAL, now_micros + 1)):
            return utils.fromMicros(_keyParts(key)[1])
        return None

    # -- removing --------------------------------------------------------

    def _take(self, job):
        del self._jobs[job._queue_key]
        self._length.change(-1)
        job._queue_key = None
        job.parent = None
        return job

    def remove(self, job):
        """Remove a pending or parked job.  A job this process cannot
        store again (see ``zcasync.job.loadProblem``) is removed without
        being written: it then belongs nowhere (reads NEW)."""
        key = getattr(job, '_queue_key', None)
        parked = self._parked is not None and key is not None and \
            self._parked.get(key, (None,))[0] is job
        if not parked and (key is None or self._jobs.get(key) is not job):
            raise LookupError('%r is not in queue %r' % (job, self.name))
        if parked:
            del self._parked[key]
            if jobmodule.loadProblem(job) is None:
                job._queue_key = None
                job.parent = None
        elif jobmodule.loadProblem(job) is not None:
            del self._jobs[key]
            self._length.change(-1)
        else:
            self._take(job)

    # -- parked jobs -----------------------------------------------------
    #
    # A job this process cannot run -- it cannot be loaded, or its callable
    # lives in a module that cannot be imported here -- would fail every
    # claim (claiming writes the job, and storing its broken callable
    # fails), blocking the queue.  The claim sets it aside instead, without
    # writing it: it moves from the queue's tree to ``_parked``, under the
    # same key, with the reason.  It reads PARKED.  ``unpark`` puts it
    # back where it was (once its module is installed); ``remove`` drops
    # it.  Neither needs to import the job's module.

    def _statusOf(self, job):
        """PENDING, PARKED, or NEW (removed without being written)."""
        key = job._queue_key
        if key is not None and self._jobs.get(key) is job:
            return interfaces.PENDING
        if key is not None and self._parked is not None and \
                self._parked.get(key, (None,))[0] is job:
            return interfaces.PARKED
        return interfaces.NEW if key is not None else interfaces.PENDING

    def _park(self, key, job, reason):
        del self._jobs[key]
        self._length.change(-1)
        if self._parked is None:
            self._parked = BTrees.OOBTree.OOBTree()
        self._parked[key] = (job, reason, utils.now())
        utils.safeLog(utils.log, logging.ERROR,
                      'queue %r set aside job %s (it reads PARKED; the queue '
                      'goes on): %s', self.name, _describeOid(job), reason)

    def parked(self):
        """The parked jobs, oldest first: (job, reason, when) tuples."""
        if self._parked is None:
            return []
        return list(self._parked.values())

    def unpark(self, job):
        """Put a parked job back in the queue, where it was."""
        key = job._queue_key
        if self._parked is None or key is None or \
                self._parked.get(key, (None,))[0] is not job:
            raise LookupError('%s is not parked in queue %r'
                              % (_describeOid(job), self.name))
        del self._parked[key]
        self._jobs[key] = job
        self._length.change(1)
        self.puts.change(1)

    def pull(self, index=0):
        """Remove and return the job at `index` (the way to cancel a job
        nobody claimed yet)."""
        return self._take(self[index])

    def claim(self, filter=None, default=None):
        """The first due job that `filter` accepts and whose quotas have
        room, removed from the queue; `default` when there is none.

        A job past its ``begin_by`` deadline is not handed out: a job that
        fails it with TimeoutError is returned in its place.  A job this
        process cannot run is parked on the way (see parked jobs).
        """
        now = utils.now()
        now_micros = utils.toMicros(now)
        after = None  # resume the walk after a parked job's key
        while True:
            kw = {} if after is None else {'min': after,
                                           'excludemin': True}
            for key, job in self._jobs.items(**kw):
                lane, micros = _keyParts(key)
                if lane == NORMAL and micros > now_micros:
                    return default  # the rest is scheduled for later
                problem = jobmodule.loadProblem(job)
                if problem is not None:
                    self._park(key, job, problem)
                    after = key
                    break  # the tree changed under the walk
                if filter is not None and not filter(job):
                    continue
                if job.begin_by is not None and \
                        job.begin_after + job.begin_by < now:
                    return self._timedOut(job, now)
                if job.quota_names and not self.quotas._reserve(job):
                    continue
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
