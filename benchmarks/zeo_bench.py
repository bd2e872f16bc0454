"""zcasync over ZEO with worker processes started by the real command:
``zcasync server`` and ``zcasync worker``.

A drain holds the (idle, already running) workers back by setting their
agents' size to 0, fills the queue, then releases them in one commit and
times from that commit until every job is COMPLETED.
"""
import os
import re
import time

import transaction
import ZEO

from zcasync import invalidations
from zcasync.interfaces import KEY
from zcasync.queue import Queue, Queues

from benchmarks import support
from benchmarks.support import BenchmarkError
from benchmarks.zcasync_bench import AGENT, measureLatency

_SERVING = re.compile(r'serving .* on (\S+):(\d+)\s*$', re.M)


class ZEOServer:
    """``zcasync server`` on a FileStorage in `directory`, on a free port
    of 127.0.0.1 (``address`` once started)."""

    def __init__(self, directory, commands=None):
        self.directory = directory
        self.commands = commands if commands is not None else []
        self.process = None
        self.address = None

    def start(self):
        log = os.path.join(self.directory, 'server.log')
        command = support.zcasyncCommand() + [
            'server', '--db', 'file://' + os.path.join(self.directory,
                                                       'Data.fs'),
            '--address', '127.0.0.1:0', '--log-level', 'WARNING']
        self.commands.append(command)
        self.process = support.spawn(command, log)

        def serving():
            if self.process.poll() is not None:
                with open(log, errors='replace') as f:
                    tail = f.read()[-2000:]
                raise BenchmarkError('the ZEO server exited with code %s:\n%s'
                                     % (self.process.returncode, tail))
            with open(log, errors='replace') as f:
                return _SERVING.search(f.read())
        try:
            support.waitUntil(serving, 'the ZEO server never listened', 60)
        except BaseException:
            self.stop()
            raise
        with open(log, errors='replace') as f:
            host, port = _SERVING.search(f.read()).groups()
        self.address = (host, int(port))
        return self

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process is not None:
            support.stop(self.process, 30)


class Cluster:
    """`workers` worker processes in `directory`, on a ZEO server of their
    own, or on the database `uri` names (``openDB()`` opens it here)."""

    def __init__(self, directory, workers, sizes, uri=None, openDB=None):
        self.directory = directory
        self.count = workers
        self.sizes = sizes
        self.uri = uri
        self.openDB = openDB
        self.server = None
        self.workers = []
        self.db = None
        self.commands = []
        self.heard = 0  # transactions committed by other processes
        self._watch = None
        self._log_checked = 0.0

    # -- life cycle ------------------------------------------------------

    def start(self):
        if self.uri is None:
            self.server = ZEOServer(self.directory, self.commands).start()
            self.uri = 'zeo://%s:%d' % self.server.address
            self.db = ZEO.DB(self.server.address, wait_timeout=30)
        else:
            self.db = self.openDB()
        self._watch = invalidations.watch(self.db, self._heard)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        root = self.conn.root()
        root[KEY] = Queues()
        root[KEY][''] = Queue()
        self.tm.commit()
        self.queue = root[KEY]['']
        for i in range(self.count):
            self._startWorker(i)
        support.waitUntil(self._allActivated,
                          'the workers never activated', 120, 0.1)
        self.tm.begin()
        self.agents = [agents[AGENT]
                       for agents in self.queue.dispatchers.values()]
        return self

    def _heard(self, oids, committing_instance):
        if committing_instance is None:  # a commit made elsewhere
            self.heard += 1

    def _workerLog(self, i):
        return os.path.join(self.directory, 'worker%d.log' % i)

    def _startWorker(self, i):
        command = support.zcasyncCommand() + [
            'worker', '--db', self.uri,
            '--size', str(self.sizes.size),
            '--poll-interval', '%g' % self.sizes.poll_interval,
            '--import', 'benchmarks.jobs',
            '--uuid-file', os.path.join(self.directory, 'worker%d.uuid' % i),
            '--log-level', 'WARNING']
        self.commands.append(command)
        self.workers.append(support.spawn(command, self._workerLog(i)))

    def _checkAlive(self, process, what, log):
        if process.poll() is not None:
            with open(log, errors='replace') as f:
                tail = f.read()[-2000:]
            raise BenchmarkError('%s exited with code %s:\n%s'
                                 % (what, process.returncode, tail))

    def _checkWorkers(self):
        """BenchmarkError if a worker died, or logged an error (the logs
        are read at most once a second)."""
        for i, worker in enumerate(self.workers):
            self._checkAlive(worker, 'worker %d' % i, self._workerLog(i))
        now = time.monotonic()
        if now - self._log_checked > 1:
            self._log_checked = now
            for i in range(len(self.workers)):
                support.checkLog(self._workerLog(i), 'worker %d' % i)

    def _allActivated(self):
        self._checkWorkers()
        self.tm.begin()
        ready = [agents for agents in self.queue.dispatchers.values()
                 if agents.activated and AGENT in agents]
        return len(ready) == self.count

    def close(self):
        """Stop everything; BenchmarkError afterwards if a worker failed."""
        problems = []
        for i, worker in enumerate(self.workers):
            code = support.stop(worker, 60)
            if code != 0:
                problems.append('worker %d exited with code %s (see %s)'
                                % (i, code, self._workerLog(i)))
            else:
                try:
                    support.checkLog(self._workerLog(i), 'worker %d' % i)
                except BenchmarkError as e:
                    problems.append(str(e))
        if self.db is not None:
            try:
                if self._watch is not None:
                    self._watch.close()
                self.tm.abort()
                self.conn.close()
                self.db.close()
            except Exception as e:
                problems.append('closing the client: %s' % e)
        if self.server is not None:
            self.server.stop()
        if problems:
            raise BenchmarkError('; '.join(problems))

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind, value, tb):
        try:
            self.close()
        except BenchmarkError:
            if kind is None:
                raise

    # -- measurements ----------------------------------------------------

    def _setSizes(self, size):
        for attempt in self.tm.attempts(10):
            with attempt:
                for agent in self.agents:
                    agent.size = size

    def completed(self):
        self._checkWorkers()
        self.tm.begin()
        return sum(len(agent.completed) for agent in self.agents)

    def workerPids(self):
        return [worker.pid for worker in self.workers]

    def drain(self, count):
        """Jobs per second draining `count` no-op jobs, and the workers'
        commits per job (transactions this client heard of)."""
        from benchmarks import jobs
        from zcasync.job import Job
        self._setSizes(0)
        for start in range(0, count, self.sizes.fill_batch):
            for i in range(min(self.sizes.fill_batch, count - start)):
                self.queue.put(Job(jobs.noop))
            self.tm.commit()
        time.sleep(0.5)  # the workers' polls for the fill find no room
        goal = self.completed() + count
        self._setSizes(self.sizes.size)  # the jobs are released here
        start = time.perf_counter()
        heard = self.heard
        end = support.waitFor(self.completed, goal,
                              'drain over ZEO with %d worker(s)'
                              % self.count)
        heard = self.heard - heard
        self.tm.begin()
        if len(self.queue):
            raise BenchmarkError('drain over ZEO left %d queued jobs'
                                 % len(self.queue))
        return count / (end - start), heard / count

    def latency(self):
        return measureLatency(self.queue, self.tm, self.sizes.latency_jobs,
                              self.sizes.idle_gap, 'latency over ZEO')
