"""Parts of a ``zcasync.queue.Queue`` that are about particular jobs:
unique keys, parked jobs, jobs waiting for quota room (base classes of
``Queue``; no persistent class lives here, the data stays on the queue and
its quotas), and what an agent's filter refused (``RefusedKeys``, kept in
memory by each process).
"""
import itertools
import logging

import BTrees.OOBTree
import ZODB.utils

from zcasync import interfaces
from zcasync import utils
from zcasync.interfaces import COMPLETED, NEW


def _describeOid(job):
    oid = getattr(job, '_p_oid', None)
    if oid is None:
        return '(unstored)'
    return '%d@%s' % (ZODB.utils.u64(oid), utils.databaseName(job))


class UniqueKeys:
    """``queue.put(job, unique_key=...)``: while a job put with a key is
    pending or running, putting the key again returns that job.  The
    queue's ``_unique`` tree maps a key to the job holding it; two
    transactions taking one key both write that key of the tree, which
    BTrees refuse to merge, so exactly one commits."""

    def uniqueHolder(self, unique_key):
        """The job holding `unique_key` in this queue, or None."""
        job = self._unique.get(unique_key) if self._unique is not None \
            else None
        if job is None:
            return None
        if job.unique_until is not None:
            return job if utils.now() < job.unique_until else None
        return None if job.status in (NEW, COMPLETED) else job

    def _holdUnique(self, job, unique_key, unique_for):
        # two transactions holding the same key both write this key of
        # the tree: BTrees refuse to merge that, so exactly one commits
        if self._unique is None:
            self._unique = self._newTree()
        job.unique_key = unique_key
        if unique_for is not None:
            job.unique_until = utils.now() + unique_for
        self._unique[unique_key] = job

    def _freeUnique(self, job):
        """Free the unique key of a job that completed or was removed
        (keys held for a period stay until it passes)."""
        key = job.unique_key
        if key is None or self._unique is None or \
                job.unique_until is not None and \
                job.status == COMPLETED and utils.now() < job.unique_until:
            return
        if self._unique.get(key) is job:
            del self._unique[key]

    def jobCompleted(self, job):
        """Called by the agent that held `job` when it completes."""
        self._freeUnique(job)

    def pruneUnique(self, limit=100):
        """Drop up to `limit` keys whose jobs no longer hold them; returns
        how many were dropped."""
        if self._unique is None:
            return 0
        stale = []
        for key, job in self._unique.items():
            if self.uniqueHolder(key) is None:
                stale.append(key)
                if len(stale) >= limit:
                    break
        for key in stale:
            del self._unique[key]
        return len(stale)

class ParkedJobs:
    """Jobs set aside because this process cannot run them (see below)."""

    #    # A job this process cannot run -- it cannot be loaded, or its callable
    # lives in a module that cannot be imported here -- would fail every
    # claim (claiming writes the job, and storing its broken callable
    # fails), blocking the queue.  The claim sets it aside instead, without
    # writing it: it moves from the due tree to ``_parked``, under the same
    # key, with the reason.  It reads PARKED.  ``unpark`` puts it back
    # where it was (once its module is installed); ``remove`` drops it.
    # Neither needs to import the job's module.

    def _parkedKey(self, job):
        if self._parked is None:
            return None
        for tree, key in self._candidates(job):
            if self._parked.get(key, (None,))[0] is job:
                return key
        return None

    def _statusOf(self, job):
        """PENDING, PARKED, or NEW (removed without being written)."""
        if self._locate(job) is not None:
            return interfaces.PENDING
        if self._parkedKey(job) is not None:
            return interfaces.PARKED
        if getattr(job, '_queue_key', None) is None:
            return interfaces.PENDING
        return interfaces.NEW

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
        key = self._parkedKey(job)
        if key is None:
            raise LookupError('%s is not parked in queue %r'
                              % (_describeOid(job), self.name))
        del self._parked[key]
        self._putInDue(key, job)
        self._length.change(1)
        self.puts.change(1)


class BlockedJobs:
    """Jobs waiting for room in a quota, set aside so that a claim costs
    the same whatever is blocked in front of it.

    A due job whose quota is full -- when it is put, or when a claim
    reaches it -- moves from the queue's due tree to its quota's
    ``_waiting`` tree, under the same key and without being written.  At
    each claim, a quota with room gives back as many waiting jobs (the
    oldest first) as it has room for; removing a quota gives back all.
    The jobs stay pending: they count in ``len(queue)``, ``iter(queue)``
    shows them in claim order, and ``remove`` finds them.
    """

    def _waitingTrees(self, job):
        trees = []
        for name in job.quota_names:
            quota = self.quotas.get(name)
            if quota is not None and quota._waiting is not None:
                trees.append(quota._waiting)
        return trees

    def _block(self, key, job, quota, move=True):
        if move:
            del self._jobs[key]
        if quota._waiting is None:
            quota._waiting = self._newTree()
        quota._waiting[key] = job

    def _unblock(self):
        """Give back waiting jobs to the due tree, as much as each quota
        has room for."""
        for quota in self.quotas.values():
            waiting = quota._waiting
            if not waiting:
                continue
            if quota.filled:
                quota.clean()
            room = quota.size - len(quota)
            if room <= 0:
                continue
            for key in list(itertools.islice(waiting.keys(), room)):
                self._putInDue(key, waiting.pop(key))

    def _unblockAll(self, quota):
        for key, job in list(quota._waiting.items()):
            self._putInDue(key, job)
        quota._waiting.clear()


class RefusedKeys:
    """The keys of a queue's due tree that one agent's filter refused, as
    one process remembers them: runs of keys that were consecutive in the
    tree and all refused, so that a claim jumps over a run (one lookup)
    instead of walking it -- jobs meant for other agents then cost this
    agent's claims nothing, whatever their number.

    A run stays true while keys are only appended after it; an insertion
    before the end of the tree (a put back, a higher priority, a job that
    came due or found room in its quota) bumps the queue's reorder count
    (``Queue._reorderCount``), and the runs are forgotten."""

    LIMIT = 100000  # runs kept at most

    def __init__(self):
        self.ends = {}  # first key of a run -> its last key
        self.starts = {}  # last key of a run -> its first key
        self.reorders = None

    def check(self, reorders):
        """Forget every run when the queue's keys were reordered since."""
        if reorders != self.reorders or len(self.ends) > self.LIMIT:
            self.ends.clear()
            self.starts.clear()
            self.reorders = reorders

    def jump(self, key):
        """The last key of the run starting at `key`, or None."""
        return self.ends.get(key)

    def add(self, key, previous):
        """`key` was refused; `previous`, the key visited just before it
        (None if that was not refused), ends a run it extends."""
        start = self.starts.pop(previous, None) if previous is not None \
            else None
        if start is None:
            start = key
        self.ends[start] = key
        self.starts[key] = start
