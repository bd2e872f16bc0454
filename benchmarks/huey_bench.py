"""The reference: huey with ``SqliteHuey`` doing the same work.

Huey's defaults throughout (a SQLite file in WAL mode with SQLite's
default synchronous=FULL; consumer workers polling with a 0.1 s initial
delay, x1.15 back-off up to 10 s) except for the 4 worker threads of an
in-process consumer.  Huey cannot hold back started workers, so a drain
starts the consumer right after the enqueue and times from its start.
"""
import importlib.util
import os
import signal
import threading
import time

from benchmarks import jobs
from benchmarks import support
from benchmarks.support import BenchmarkError


def available():
    return importlib.util.find_spec('huey') is not None


class HueyBench:
    """One SqliteHuey database in `directory`."""

    def __init__(self, directory, sizes):
        from huey import SqliteHuey
        from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR
        self.sizes = sizes
        self.huey = SqliteHuey('bench', filename=os.path.join(directory,
                                                               'huey.db'))
        self.noop = self.huey.task(name='noop')(jobs.noop)
        self.started = self.huey.task(name='started')(jobs.started)
        self.consumer = None
        self.done = 0
        self.errors = []
        self._lock = threading.Lock()
        self.huey.signal(SIGNAL_COMPLETE)(self._completed)
        self.huey.signal(SIGNAL_ERROR)(self._failed)

    def _completed(self, signal_name, task, *args, **kw):
        with self._lock:
            self.done += 1

    def _failed(self, signal_name, task, exc=None, *args, **kw):
        with self._lock:
            self.errors.append(repr(exc))

    def _check(self, what):
        if self.errors:
            raise BenchmarkError('%s: %d huey task(s) failed; first: %s'
                                 % (what, len(self.errors), self.errors[0]))

    def enqueue(self, count):
        start = time.perf_counter()
        for i in range(count):
            self.noop()
        return count / (time.perf_counter() - start)

    def startConsumer(self):
        """An in-process consumer; its signal handlers (installed by
        ``start``) are replaced by ours again at once."""
        self.consumer = self.huey.create_consumer(
            workers=self.sizes.size, worker_type='thread',
            shutdown_timeout=30)
        saved = {signum: signal.getsignal(signum)
                 for signum in (signal.SIGINT, signal.SIGTERM,
                                signal.SIGHUP)}
        try:
            self.consumer.start()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def drain(self, count):
        goal = self.done + count
        start = time.perf_counter()
        self.startConsumer()
        end = support.waitFor(lambda: self.done, goal, 'huey drain')
        self._check('huey drain')
        if len(self.huey):
            raise BenchmarkError('huey drain left %d tasks' % len(self.huey))
        return count / (end - start)

    def latency(self, count, gap):
        latencies = []
        for i in range(count):
            time.sleep(gap)
            result = self.started()
            committed = time.time()
            deadline = time.monotonic() + 60
            while True:
                value = result.get()
                if value is not None:
                    break
                if time.monotonic() > deadline:
                    raise BenchmarkError('huey latency: no result in 60 s')
                time.sleep(0.001)
            latencies.append((value - committed) * 1000)
        self._check('huey latency')
        return latencies

    def close(self):
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None
        self.huey.storage.close()
