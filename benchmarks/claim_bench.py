"""What one claim costs behind many jobs it must pass over, against the
same claim on an otherwise empty queue (in-process, FileStorage).

Two kinds of jobs to pass over:

- ``quota``: quota ``one`` of size 1 is held by a running job (ACTIVE,
  held by the agent of an in-process dispatcher that runs it:
  ``benchmarks.jobs.block``, which waits until released); ``blocked``
  jobs needing that quota are pending, then one job without a quota.
  The dispatcher runs in both cases, the empty queue included, so that
  only the pending jobs differ.
- ``filter``: the claiming agent's filter accepts only jobs whose first
  argument is ``'mine'`` (``benchmarks.jobs.onlyMine``); ``blocked``
  jobs with ``'other'`` are pending, then one with ``'mine'``.

The claim is ``agent.claimJob()`` of an agent of a registered dispatcher
that never runs (so nothing else claims for it), followed by its commit;
it is timed, and the object records this thread loads meanwhile are
counted (``CountingFileStorage``).  Before each claim one new job to
claim is put (its own commit).  *Cold*: the connection's cache is
emptied first (``conn.cacheMinimize()``: every object is loaded from the
storage again, as by a new connection); *warm*: right after the previous
claim, whose objects are still in the cache (one untimed claim first).
"""
import datetime
import threading
import time

from zcasync.agent import Agent
from zcasync.interfaces import ACTIVE
from zcasync.job import Job

from benchmarks import jobs, support
from benchmarks.support import BenchmarkError
from benchmarks.zcasync_bench import (
    Database, InProcessDispatcher, LogWatch, newUUID)

QUOTA = 'one'
CLAIMANT = 'claimant'


class ClaimScene:
    """A database in `directory` set up for `kind` ('quota' or 'filter')
    with `blocked` jobs to pass over (0: the empty queue)."""

    def __init__(self, directory, kind, blocked, sizes):
        self.kind = kind
        self.sizes = sizes
        self.data = Database(directory)
        self.dispatcher = None
        self.blocker_name = None
        self.log = LogWatch().__enter__()
        try:
            self._setUp(blocked)
        except BaseException:
            self.close()
            raise

    def _setUp(self, blocked):
        data, queue, tm = self.data, self.data.queue, self.data.tm
        if self.kind == 'quota':
            queue.quotas.create(QUOTA, 1)
            holder = newUUID()
            data.addAgent(holder, 1)
            self.blocker_name = 'claim-bench-%s' % holder
            blocker = Job(jobs.block, self.blocker_name)
            blocker.quota_names = (QUOTA,)
            queue.put(blocker)
            tm.commit()
            self.dispatcher = InProcessDispatcher(
                data.db, holder, self.sizes.poll_interval)
            # it holds the quota; it must not claim ahead the jobs the
            # measured claims are for
            self.dispatcher.dispatcher.prefetch = 0
            self.dispatcher.start()

            def running():
                self.log.check('claim benchmark')
                tm.begin()
                return blocker.status == ACTIVE
            support.waitUntil(running, 'the quota-holding job never ran', 60)
            self.blocker = blocker
        claimant = newUUID()
        queue.dispatchers.register(claimant)
        registration = queue.dispatchers[claimant]
        # a claimant that never pings, yet must look alive to claim
        registration.ping_death_interval = datetime.timedelta(days=1)
        registration.activate()
        registration[CLAIMANT] = Agent(
            filter=jobs.onlyMine if self.kind == 'filter' else None,
            size=1_000_000)
        tm.commit()
        self.agent = registration[CLAIMANT]
        batch = self.sizes.fill_batch
        for first in range(0, blocked, batch):
            for i in range(min(batch, blocked - first)):
                queue.put(self._blockedJob())
            tm.commit()

    def _blockedJob(self):
        if self.kind == 'filter':
            return Job(jobs.tagged, 'other')
        job = Job(jobs.noop)
        job.quota_names = (QUOTA,)
        return job

    def _wanted(self):
        return Job(jobs.tagged, 'mine') if self.kind == 'filter' else \
            Job(jobs.noop)

    def claim(self, cold):
        """Put one job to claim, then time its claim: (ms, loads)."""
        data, tm = self.data, self.data.tm
        job = data.queue.put(self._wanted())
        tm.commit()
        if self.dispatcher is not None:
            time.sleep(0.05)  # let the holder's poll for that commit end
        if cold:
            data.conn.cacheMinimize()
        storage = data.storage
        storage.loads = 0
        storage.counting = threading.get_ident()
        try:
            start = time.perf_counter()
            claimed = self.agent.claimJob()
            tm.commit()
            elapsed = time.perf_counter() - start
        finally:
            storage.counting = None
        if claimed is not job:
            raise BenchmarkError('claim benchmark (%s): claimed %r instead of '
                                 'the job behind the others' % (self.kind,
                                                                claimed))
        self.log.check('claim benchmark')
        return elapsed * 1000, storage.loads

    def measure(self):
        """{'cold': [(ms, loads)...], 'warm': [...]} for one run."""
        cold = [self.claim(True) for i in range(self.sizes.claims_cold)]
        self.claim(False)  # warms the cache
        warm = [self.claim(False) for i in range(self.sizes.claims_warm)]
        if self.kind == 'quota':
            self.data.tm.begin()
            if self.blocker.status != ACTIVE:
                raise BenchmarkError('the quota-holding job stopped running '
                                     'during the claims (%s)'
                                     % self.blocker.status)
        return {'cold': cold, 'warm': warm}

    def close(self):
        try:
            if self.blocker_name is not None:
                jobs.release(self.blocker_name)
            if self.dispatcher is not None:
                self.dispatcher.stop()
        finally:
            self.log.__exit__(None, None, None)
            self.data.close()
