"""Agents: the persistent "hands" of a dispatcher in a queue.

An agent lives in a ``DispatcherAgents`` (``queue.dispatchers[uuid]``).
At each poll the dispatcher asks each of its agents for jobs
(``claimJob``) until the agent holds ``size`` jobs; the agent claims from
its queue with its ``filter`` (or lets its ``chooser`` pick), holds the
jobs while they run, and, when one completes, moves it to ``completed``:
a collection of recently completed jobs kept for the queue's
``completed_keep`` (a week unless set; ``zcasync prune`` removes them
earlier, in batches).

Held jobs live in a ``zcasync.queue.JobTree`` keyed by claim order, so
that a claim (in the dispatcher's poll) and a completion (in a worker
thread) that commit at once are resolved instead of conflicting (a plain
OOBTree refuses: the completion removes the bucket's first key).
"""
from __future__ import annotations

import datetime
import struct
import heapq
from typing import TYPE_CHECKING, Any, Callable, Iterator

import BTrees.Length
import BTrees.OOBTree
import persistent
import zope.component
import zope.interface

from zcasync import interfaces
from zcasync import utils
from zcasync.queue import JobTree
from zcasync.queueextras import RefusedKeys

if TYPE_CHECKING:
    from zcasync.job import Job
    from zcasync.queue import Queue

#: How long completed jobs are kept in ``agent.completed`` when the agent
#: belongs to no queue (a queue's ``completed_keep`` decides otherwise).
COMPLETED_KEEP = datetime.timedelta(days=7)
# Keys are bytes (one pickled object each): 8 bytes of time, big endian,
# then the job's oid.  Completed jobs use the time reversed, newest first.
_STAMP = struct.Struct('>Q')
_NEWEST = 2 ** 64 - 1


def _completedPrefix(when):
    return _STAMP.pack(_NEWEST - utils.toMicros(when))
_PRUNE_BATCH = 20


#: (database, agent oid, agent serial) -> RefusedKeys
_REFUSED: dict[tuple, Any] = {}


def _token(job):
    return job._p_oid or b'~%x' % id(job)


@zope.interface.implementer(interfaces.ICompletedCollection)
class CompletedJobs(persistent.Persistent):
    """Recently completed jobs, newest first.

    The jobs are spread over a few OOBTrees (by oid) keyed newest first, so
    that worker threads completing jobs at the same moment rarely write the
    same bucket (a bucket split conflicts with any concurrent insert into
    it); reading merges the trees.
    """

    SHARDS = 8

    def __init__(self):
        self._shards = tuple(BTrees.OOBTree.OOBTree()
                             for i in range(self.SHARDS))
        self._length = BTrees.Length.Length(0)

    def _shard(self, token):
        if token[:1] == b'~':
            return self._shards[hash(token) % len(self._shards)]
        return self._shards[int.from_bytes(token[-4:], 'big') %
                            len(self._shards)]

    def add(self, job: Job,
            keep: datetime.timedelta | None = COMPLETED_KEEP) -> None:
        stamp = job.active_end or utils.now()
        token = _token(job)
        shard = self._shard(token)
        shard[_completedPrefix(stamp) + token] = job
        self._length.change(1)
        if keep is not None:
            self._prune(shard, keep)

    def _prune(self, shard, keep):
        """Drop jobs completed more than `keep` ago from `shard` and from
        one other shard in turn (a batch each): every shard is looked at
        often, without loading them all at each completion.  The oldest
        job of a shard is its last key."""
        cutoff = _completedPrefix(utils.now() - keep)
        other = self._shards[self._length() % len(self._shards)]
        for tree in (shard,) if other is shard else (shard, other):
            for i in range(_PRUNE_BATCH):
                if not tree or tree.maxKey() <= cutoff:
                    break
                del tree[tree.maxKey()]
                self._length.change(-1)

    def prune(self, before: datetime.datetime, failed_too: bool = False,
              limit: int = 200, resume: Any = None) -> tuple[int, Any]:
        """Remove up to `limit` jobs completed before `before` (an aware
        datetime); failed jobs only with `failed_too`.  Returns (removed,
        resume): pass `resume` to the next call to go on where this one
        stopped; it is None when nothing is left to look at."""
        resume = dict(resume or {})
        cutoff = _completedPrefix(utils.checkAware(before, 'before'))
        removed = 0
        for index, shard in enumerate(self._shards):
            start = resume.get(index)
            if start is True:
                continue  # done with this shard
            doomed = []
            last = None
            for key, job in shard.items(min=start or cutoff,
                                        excludemin=start is not None):
                last = key
                if failed_too or not utils.isFailure(job.result):
                    doomed.append(key)
                    if removed + len(doomed) >= limit:
                        break
            else:
                last = True
            for key in doomed:
                del shard[key]
            self._length.change(-len(doomed))
            removed += len(doomed)
            resume[index] = last
            if removed >= limit:
                break
        done = len(resume) == len(self._shards) and all(
            v is True for v in resume.values())
        return removed, None if done else resume

    def __len__(self):
        return self._length()

    def __bool__(self):
        return self._length() > 0

    def _merged(self, **kw):
        return (job for key, job in heapq.merge(
            *(shard.items(**kw) for shard in self._shards),
            key=lambda item: item[0]))

    def __iter__(self):
        return self._merged()

    def iter(self, start: datetime.datetime | None = None,
             stop: datetime.datetime | None = None) -> Iterator[Job]:
        """Completed jobs newest first, with ``start <= completion <=
        stop`` (aware datetimes; None means open-ended)."""
        kw = {}
        if stop is not None:
            kw['min'] = _completedPrefix(utils.checkAware(stop, 'stop'))
        if start is not None:
            kw['max'] = _STAMP.pack(_NEWEST - utils.toMicros(
                utils.checkAware(start, 'start')) + 1)
            kw['excludemax'] = True
        return self._merged(**kw)

    def first(self) -> Job | None:
        """The newest completed job (None when empty)."""
        keys = [(s.minKey(), s) for s in self._shards if s]
        if not keys:
            return None
        key, shard = min(keys, key=lambda item: item[0])
        return shard[key]

    def last(self) -> Job | None:
        """The oldest completed job (None when empty)."""
        keys = [(s.maxKey(), s) for s in self._shards if s]
        if not keys:
            return None
        key, shard = max(keys, key=lambda item: item[0])
        return shard[key]


def chooseFirst(agent):
    """A chooser that claims the first job of the agent's queue."""
    return agent.queue.claim()


@zope.component.adapter(interfaces.IDispatcherActivated)
def addMainAgentActivationHandler(event):
    """Subscriber: give an activated dispatcher an agent 'main' (with the
    defaults) in each queue where it has none."""
    registration = event.object
    if 'main' not in registration:
        registration['main'] = Agent()


_BOTH = ('give an agent a chooser or a filter, not both: a chooser picks '
         'jobs itself and would ignore the filter')


@zope.interface.implementer(interfaces.IAgent)
class Agent(persistent.Persistent):
    """``Agent(chooser=None, size=3, filter=None)`` (zc.async's order).

    - ``filter(job)``: True for the jobs this agent may take (None: any);
      the agent provides ``IFilterAgent`` while it has no chooser;
    - ``chooser(agent)``: claims and returns a job itself (e.g. with
      ``agent.queue.claim(...)``), or None;
    - ``size``: how many jobs it runs at once.
    """

    name: str | None = None
    #: the dispatcher's registration (``DispatcherAgents``) in a queue
    parent: Any = None
    _chooser = None
    _filter = None

    def __init__(self, chooser: Callable[[Agent], Job | None] | None = None,
                 size: int = 3,
                 filter: Callable[[Job], bool] | None = None) -> None:
        if chooser is not None and filter is not None:
            raise ValueError(_BOTH)
        self.chooser = chooser
        self.filter = filter
        self.size = size
        self._jobs = JobTree()
        self.completed = CompletedJobs()

    def __setstate__(self, state):
        state = dict(state)
        # stored before chooser and filter were properties
        for name in ('chooser', 'filter'):
            if name in state:
                state['_' + name] = state.pop(name)
        super().__setstate__(state)
        if self._chooser is None and \
                not interfaces.IFilterAgent.providedBy(self):
            zope.interface.alsoProvides(self, interfaces.IFilterAgent)

    @property
    def chooser(self):
        return self._chooser

    @chooser.setter
    def chooser(self, value):
        if value is not None and self._filter is not None:
            raise ValueError(_BOTH)
        self._chooser = value
        if value is None:
            zope.interface.alsoProvides(self, interfaces.IFilterAgent)
        elif interfaces.IFilterAgent.providedBy(self):
            zope.interface.noLongerProvides(self, interfaces.IFilterAgent)

    @property
    def filter(self):
        return self._filter

    @filter.setter
    def filter(self, value):
        if value is not None and self._chooser is not None:
            raise ValueError(_BOTH)
        self._filter = value

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or \
                value < 0:
            raise ValueError('an agent size is an integer >= 0, not %r'
                             % (value,))
        self._size = value

    @property
    def queue(self) -> Queue | None:
        ob = self.parent
        while ob is not None and not interfaces.IQueue.providedBy(ob):
            ob = getattr(ob, 'parent', None)
        return ob

    # -- held jobs -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def __contains__(self, job: object) -> bool:
        return self._key(job) is not None

    def _key(self, job):
        for key, held in self._jobs.items():
            if held is job:
                return key
        return None

    def index(self, job: Job) -> int:
        for i, held in enumerate(self._jobs.values()):
            if held is job:
                return i
        raise ValueError('%r is not held by agent %r' % (job, self.name))

    def _add(self, job):
        self._jobs[_STAMP.pack(utils.toMicros(utils.now())) +
                   _token(job)] = job
        job.parent = self

    def _release(self, job):
        """Stop holding `job` (it keeps this agent as its parent)."""
        key = self._key(job)
        if key is not None:
            del self._jobs[key]
        return key is not None

    def remove(self, job: Job) -> Job:
        if not self._release(job):
            raise LookupError('%r is not held by agent %r' % (job, self.name))
        job.parent = None
        return job

    def claimJob(self) -> Job | None:
        """A newly claimed job, or None when full, when nothing fits, or
        when the agent's dispatcher registration is deactivated or dead
        (its process must not take work it may not be alive to do)."""
        registration = self.parent
        if registration is not None and (not registration.activated or
                                         registration.dead):
            return None
        if len(self._jobs) >= self._size:
            return None
        if self.chooser is not None:
            job = self.chooser(self)
        else:
            queue = self.queue
            if queue is None:
                raise ValueError('agent %r belongs to no queue' % self.name)
            job = queue.claim(self.filter, refused=self._refused())
        if job is not None:
            self._add(job)
        return job

    def _refused(self):
        """What this agent's filter refused in its queue
        (``zcasync.queueextras.RefusedKeys``), remembered by this process
        for this version of the agent (another filter is another
        version), so that claims jump over the jobs meant for other
        agents.  A filter is taken to depend on the job alone."""
        if self.filter is None or self._p_oid is None:
            return None
        version = (utils.databaseName(self), self._p_oid, self._p_serial)
        refused = _REFUSED.get(version)
        if refused is None:
            for key in [k for k in _REFUSED if k[:2] == version[:2]]:
                del _REFUSED[key]  # an older version of this agent
            refused = _REFUSED[version] = RefusedKeys()
        return refused

    def claimAhead(self, count):
        """Claim up to `count` more jobs beyond ``size``, held (not
        started) for the dispatcher's threads to start as they free up:
        from the front of the queue only, and only jobs without quotas (a
        job waiting here would hold its quota's room); none for an agent
        with a chooser.  Returns the jobs."""
        if self.chooser is not None or count <= 0:
            return []
        queue = self.queue
        if queue is None:
            return []
        accept = self.filter

        def ahead(job):
            return not job.quota_names and (accept is None or accept(job))
        claimed = []
        while len(claimed) < count:
            job = queue.claim(ahead, front=True)
            if job is None:
                break
            self._add(job)
            claimed.append(job)
        return claimed

    def jobCompleted(self, job: Job) -> None:
        self._release(job)
        queue = self.queue
        if queue is None:
            self.completed.add(job)
            return
        self.completed.add(job, keep=queue.completed_keep)
        queue.jobCompleted(job)  # frees the job's unique key

    def __repr__(self):
        return '<zcasync.agent.Agent %r (%d/%d)>' % (
            self.name, len(self._jobs), self._size)
