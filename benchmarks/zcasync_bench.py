"""zcasync in one process on a FileStorage: enqueue, drain (with commits
per job), latency and queue scale.

Import this module only after ``ZC_ASYNC_UUID`` names a file in a
temporary directory (``run.py`` does): importing zcasync reads or creates
the instance UUID file.
"""
import datetime
import logging
import os
import threading
import time
import uuid

import transaction
import ZODB
import ZODB.FileStorage

import zcasync.configure
from zcasync.agent import Agent
from zcasync.dispatcher import Dispatcher
from zcasync.interfaces import KEY, COMPLETED
from zcasync.job import Job
from zcasync.queue import Queue, Queues

from benchmarks import jobs
from benchmarks.support import BenchmarkError, waitFor, waitUntil

AGENT = 'main'


class CountingFileStorage(ZODB.FileStorage.FileStorage):
    """Counts finished transactions and stored object records (both run
    under the storage's commit lock), and the object records loaded by
    the thread named in ``counting`` (a thread ident, or None)."""

    commits = 0
    stores = 0
    loads = 0
    counting = None

    def tpc_finish(self, *args, **kw):
        self.commits += 1
        return super().tpc_finish(*args, **kw)

    def store(self, *args, **kw):
        self.stores += 1
        return super().store(*args, **kw)

    # connections load through ZODB's MVCC adapter, which calls loadBefore
    def loadBefore(self, *args, **kw):
        if self.counting == threading.get_ident():
            self.loads += 1
        return super().loadBefore(*args, **kw)

    def load(self, *args, **kw):
        if self.counting == threading.get_ident():
            self.loads += 1
        return super().load(*args, **kw)


class LogWatch(logging.Handler):
    """Collects zcasync's warnings and errors during a benchmark."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.errors = 0
        self.first = None  # the first error

    def emit(self, record):
        if record.levelno < logging.ERROR:
            self.warnings += 1
        else:
            self.errors += 1
            self.first = self.first or record

    def __enter__(self):
        logging.getLogger('zcasync').addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger('zcasync').removeHandler(self)

    def check(self, what):
        """BenchmarkError if zcasync logged an error (cheap: called while
        waiting, to fail at once rather than after a stall)."""
        if self.errors:
            raise BenchmarkError('%s: zcasync logged %d error(s); first: %s'
                                 % (what, self.errors,
                                    self.first.getMessage()[:2000]))


class Database:
    """A FileStorage database in `directory` (or the open ZODB.DB `db`)
    with the primary queue, used from this thread through ``conn``/``tm``.
    """

    def __init__(self, directory=None, db=None):
        zcasync.configure.base()
        if db is None:
            self.storage = CountingFileStorage(
                os.path.join(directory, 'Data.fs'))
            db = ZODB.DB(self.storage)
        else:
            self.storage = db.storage
        self.db = db
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        root = self.conn.root()
        if KEY not in root:
            root[KEY] = Queues()
            root[KEY][''] = Queue()
            self.tm.commit()
        self.queue = root[KEY]['']

    def addAgent(self, uuid, size):
        """Register dispatcher `uuid` with one agent of `size` (0 holds
        the jobs back until ``setSize``)."""
        self.queue.dispatchers.register(uuid)
        agents = self.queue.dispatchers[uuid]
        agents[AGENT] = Agent(size=size)
        self.tm.commit()
        return agents[AGENT]

    def setSize(self, agent, size):
        agent.size = size
        self.tm.commit()

    def fill(self, count, batch, function=jobs.noop):
        """Put `count` jobs, `batch` per commit."""
        for start in range(0, count, batch):
            for i in range(min(batch, count - start)):
                self.queue.put(Job(function))
            self.tm.commit()

    def completed(self, agent):
        self.tm.begin()
        return len(agent.completed)

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


class InProcessDispatcher:
    """A Dispatcher with Twisted's SelectReactor in a thread."""

    def __init__(self, db, uuid, poll_interval):
        import twisted.internet.selectreactor
        self.reactor = twisted.internet.selectreactor.SelectReactor()
        self.dispatcher = Dispatcher(db, self.reactor,
                                     poll_interval=poll_interval, uuid=uuid)
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='benchmark reactor')

    def _run(self):
        self.dispatcher.activate()
        self.reactor.run(installSignalHandlers=False)

    def start(self):
        """Start and wait for the first poll that reached the queue."""
        self.thread.start()

        def polled():
            poll = self.dispatcher.polls.first()
            return poll is not None and poll.get('') is not None
        waitUntil(polled, 'the dispatcher never polled its queue', 30)

    def stop(self):
        if self.thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self.thread.join(30)
            if self.thread.is_alive():
                raise BenchmarkError('the dispatcher did not stop in 30 s')


def newUUID():
    return uuid.uuid1()


def enqueueAndDrain(directory, sizes, db=None, count=None,
                    bulk_count=None, what='in-process'):
    """Put `count` (default ``sizes.jobs``) no-op jobs one commit each (no
    dispatcher running), then drain them with an idle dispatcher whose
    agent was held at size 0; then put `bulk_count` jobs (default
    ``sizes.bulk_jobs``), ``sizes.fill_batch`` per commit.  On a FileStorage
    in `directory`, or on the open ZODB.DB `db` (closed at the end).
    Returns the figures of this run (commits and objects stored per job
    only on the FileStorage)."""
    data = Database(directory, db)
    dispatcher = None
    count = count or sizes.jobs
    try:
        me = newUUID()
        agent = data.addAgent(me, 0)
        queue, tm = data.queue, data.tm
        start = time.perf_counter()
        for i in range(count):
            queue.put(Job(jobs.noop))
            tm.commit()
        enqueue = count / (time.perf_counter() - start)

        counting = isinstance(data.storage, CountingFileStorage)
        dispatcher = InProcessDispatcher(data.db, me, sizes.poll_interval)
        with LogWatch() as log:
            dispatcher.start()
            data.setSize(agent, sizes.size)   # the jobs are released here
            start = time.perf_counter()
            if counting:
                commits, stores = data.storage.commits, data.storage.stores
            end = waitFor(lambda: log.check(what + ' drain') or
                          data.completed(agent), count, what + ' drain')
            if counting:
                commits = data.storage.commits - commits
                stores = data.storage.stores - stores
            dispatcher.stop()
            log.check(what + ' drain')
        data.tm.begin()
        if len(queue) or len(agent):
            raise BenchmarkError('%s drain left %d queued and %d held jobs'
                                 % (what, len(queue), len(agent)))
        figures = {'enqueue': enqueue, 'drain': count / (end - start)}
        if counting:
            figures['commits per job'] = commits / count
            figures['objects stored per job'] = stores / count
        figures['bulk enqueue'] = bulkEnqueue(
            data, bulk_count or sizes.bulk_jobs, sizes.fill_batch)
        return figures
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        data.close()


def bulkEnqueue(data, count, batch):
    """Jobs per second putting `count` no-op jobs, `batch` per commit."""
    queue, tm = data.queue, data.tm
    tm.begin()
    start = time.perf_counter()
    for first in range(0, count, batch):
        for i in range(min(batch, count - first)):
            queue.put(Job(jobs.noop))
        tm.commit()
    return count / (time.perf_counter() - start)


def waitForResult(tm, job, what, timeout=30.0, interval=0.001):
    """Re-read until `job` is COMPLETED; its result."""
    deadline = time.monotonic() + timeout
    while True:
        tm.begin()
        if job.status == COMPLETED:
            return job.result
        if time.monotonic() > deadline:
            raise BenchmarkError('%s: %r not completed in %g s (%s)'
                                 % (what, job, timeout, job.status))
        time.sleep(interval)


def measureLatency(queue, tm, count, gap, what):
    """Put `count` single jobs, each once the previous one completed;
    milliseconds from each put's commit to its start (taken in the job)."""
    latencies = []
    for i in range(count):
        time.sleep(gap)  # let the dispatcher settle: it is idle
        job = queue.put(Job(jobs.started))
        tm.commit()
        committed = time.time()
        started = waitForResult(tm, job, what)
        if not isinstance(started, float):
            raise BenchmarkError('%s: the job failed: %r' % (what, started))
        latencies.append((started - committed) * 1000)
    return latencies


def latency(directory, sizes, db=None, what='in-process latency'):
    """Latencies (ms) on an idle in-process dispatcher, on a FileStorage in
    `directory` or on the open ZODB.DB `db` (closed at the end)."""
    data = Database(directory, db)
    dispatcher = None
    try:
        me = newUUID()
        data.addAgent(me, sizes.size)
        dispatcher = InProcessDispatcher(data.db, me, sizes.poll_interval)
        with LogWatch() as log:
            dispatcher.start()
            result = measureLatency(data.queue, data.tm, sizes.latency_jobs,
                                    sizes.idle_gap, what)
            dispatcher.stop()
            log.check(what)
        return result
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        data.close()


class QueueScale:
    """A queue filled to `pending` jobs; ``measure()`` times puts and
    claims, one commit each, keeping the queue near that size."""

    #: with priorities: jobs get priorities 0-9 in turn, and one pending job
    #: in ten waits in the scheduled tree (an hour ahead)
    PRIORITIES = 10

    def __init__(self, directory, pending, sizes, priorities=False):
        self.data = Database(directory)
        self.sizes = sizes
        self.priorities = priorities
        if not priorities:
            self.data.fill(pending, sizes.fill_batch)
            return
        queue, tm = self.data.queue, self.data.tm
        later = datetime.datetime.now(datetime.timezone.utc) + \
            datetime.timedelta(hours=1)
        for i in range(pending):
            queue.put(Job(jobs.noop), priority=i % self.PRIORITIES,
                      begin_after=later if i % 10 == 9 else None)
            if i % sizes.fill_batch == sizes.fill_batch - 1:
                tm.commit()
        tm.commit()

    def _put(self, i):
        if self.priorities:
            self.data.queue.put(Job(jobs.noop), priority=i % self.PRIORITIES)
        else:
            self.data.queue.put(Job(jobs.noop))

    def measure(self, clock=time.perf_counter):
        """Puts and claims per second of `clock` (wall time by default;
        ``time.process_time`` counts this process's CPU only, leaving out
        waits for the disk, which other processes on the machine make
        noisy)."""
        queue, tm, count = self.data.queue, self.data.tm, self.sizes.scale_ops
        start = clock()
        for i in range(count):
            self._put(i)
            tm.commit()
        put = count / (clock() - start)
        start = clock()
        for i in range(count):
            if queue.claim() is None:
                raise BenchmarkError('queue scale: the queue ran empty')
            tm.commit()
        claim = count / (clock() - start)
        return {'put': put, 'claim': claim}

    def close(self):
        self.data.close()
