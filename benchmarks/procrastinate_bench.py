"""The PostgreSQL reference: Procrastinate on the same server, each
measurement on a throwaway database of its own with Procrastinate's
schema applied (``app.schema_manager.apply_schema()``).

Procrastinate's defaults throughout (LISTEN/NOTIFY on, a 5 s polling
fallback like zcasync's ``poll_interval``, jobs kept after they finish)
except the worker's ``concurrency``:

- enqueue: ``noop.defer()`` ``count`` times from the synchronous app (one
  INSERT, one transaction each), no worker running;
- drain: idle workers (in this process: ``app.run_worker_async`` on an
  event loop in a thread; or ``procrastinate worker`` processes), each
  LISTENing; then ``noop.batch_defer`` puts ``count`` jobs in one
  transaction, and the drain is timed from its return until all are
  ``succeeded`` (counted in ``procrastinate_jobs`` every 20 ms);
- latency: an idle in-process worker; ``started.defer(token=i)`` one at a
  time, ``gap`` seconds apart, each once the previous one succeeded; the
  task notes ``time.time()`` first thing, minus the time right after
  ``defer`` returned.
"""
import asyncio
import importlib.util
import os
import sys
import threading
import time

from benchmarks import pg_bench, support
from benchmarks.support import BenchmarkError

POLL = 0.02  # seconds between counts of finished jobs


def unavailable():
    """Why Procrastinate cannot run here (a short reason), or None."""
    if importlib.util.find_spec('procrastinate') is None:
        return 'procrastinate not installed'
    try:
        importlib.import_module('procrastinate')  # psycopg needs libpq
    except ImportError as e:
        return 'procrastinate does not import: %s' % e
    return None


class Database:
    """A throwaway database with Procrastinate's schema, and an app opened
    synchronously on it (``app``) for deferring."""

    def __init__(self, purpose):
        from benchmarks import procrastinate_app
        self._context = pg_bench.throwawayDatabase(purpose)
        self.name = self._context.__enter__()
        self.app = None
        try:
            self.dsn = pg_bench.dsn(self.name)
            self.app = procrastinate_app.makeApp(self.dsn)
            self.app.open()
            self.app.schema_manager.apply_schema()
            self.noop = self.app.tasks['noop']
            self.started = self.app.tasks['started']
            self._poller = Poller(self.name)
        except BaseException:
            self.close()
            raise

    def count(self, status):
        return self._poller.count(
            'SELECT count(*) FROM procrastinate_jobs WHERE status = %s',
            (status,))

    def listeners(self):
        """Backends of this database LISTENing (idle workers)."""
        return self._poller.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
            "query LIKE 'LISTEN %%'", (self.name,))

    def waitForListeners(self, count, check):
        def listening():
            check()
            return self.listeners() >= count
        support.waitUntil(listening, 'Procrastinate workers never listened',
                          120, 0.05)

    def close(self):
        try:
            if getattr(self, '_poller', None) is not None:
                self._poller.close()
            if self.app is not None:
                self.app.close()
        finally:
            self._context.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Poller:
    """One autocommit connection for counting."""

    def __init__(self, name):
        import psycopg2
        self.connection = psycopg2.connect(pg_bench.dsn(name))
        self.connection.autocommit = True

    def count(self, query, args=()):
        with self.connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchone()[0]

    def close(self):
        self.connection.close()


class InProcessWorker:
    """``app.run_worker_async`` on an event loop of its own in a thread,
    stopped by cancelling it (as Procrastinate documents)."""

    def __init__(self, dsn, concurrency):
        from benchmarks import procrastinate_app
        self.app = procrastinate_app.makeApp(dsn)
        self.concurrency = concurrency
        self.loop = None
        self.task = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='procrastinate worker')

    def _run(self):
        async def main():
            async with self.app.open_async():
                self.loop = asyncio.get_running_loop()
                self.task = asyncio.ensure_future(self.app.run_worker_async(
                    concurrency=self.concurrency,
                    install_signal_handlers=False))
                try:
                    await self.task
                except asyncio.CancelledError:
                    pass
        try:
            asyncio.run(main())
        except BaseException as e:
            self.error = e

    def check(self):
        if self.error is not None:
            raise BenchmarkError('the Procrastinate worker failed: %r'
                                 % (self.error,))
        if not self.thread.is_alive():
            raise BenchmarkError('the Procrastinate worker stopped')

    def start(self, database):
        self.thread.start()
        database.waitForListeners(1, self.check)
        return self

    def stop(self):
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        if self.thread.is_alive():
            self.thread.join(60)
            if self.thread.is_alive():
                raise BenchmarkError('the Procrastinate worker did not stop '
                                     'in 60 s')


class WorkerProcesses:
    """`count` ``procrastinate worker --concurrency N`` processes."""

    def __init__(self, database, count, concurrency, directory):
        from benchmarks import procrastinate_app
        self.database = database
        self.directory = directory
        self.command = [sys.executable, '-m', 'procrastinate', '--app',
                        'benchmarks.procrastinate_app.app', 'worker',
                        '--concurrency', str(concurrency)]
        self.env = {procrastinate_app.DSN_VARIABLE: database.dsn}
        self.processes = []
        self.count = count

    def _log(self, i):
        return os.path.join(self.directory, 'procrastinate%d.log' % i)

    def check(self):
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                with open(self._log(i), errors='replace') as f:
                    tail = f.read()[-2000:]
                raise BenchmarkError(
                    'Procrastinate worker %d exited with code %s:\n%s'
                    % (i, process.returncode, tail))

    def start(self):
        try:
            for i in range(self.count):
                self.processes.append(support.spawn(self.command,
                                                    self._log(i),
                                                    env=self.env))
            self.database.waitForListeners(self.count, self.check)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        codes = [support.stop(process, 60) for process in self.processes]
        self.processes = []
        return codes


def enqueue(count):
    """Defers per second, one ``defer()`` (one transaction) each."""
    with Database('procrastinate_enqueue') as database:
        noop = database.noop
        start = time.perf_counter()
        for i in range(count):
            noop.defer()
        rate = count / (time.perf_counter() - start)
        if database.count('todo') != count:
            raise BenchmarkError('Procrastinate enqueue: %d jobs to do, not '
                                 '%d' % (database.count('todo'), count))
        return rate


def _drain(database, count, check, what):
    """Put `count` jobs in one transaction; jobs per second until all
    succeeded."""
    goal = database.count('succeeded') + count
    database.noop.batch_defer(*[{} for i in range(count)])
    start = time.perf_counter()

    def done():
        check()
        failed = database.count('failed')
        if failed:
            raise BenchmarkError('%s: %d job(s) failed' % (what, failed))
        return database.count('succeeded')
    end = support.waitFor(done, goal, what, interval=POLL)
    return count / (end - start)


def drainInProcess(count, concurrency):
    with Database('procrastinate_drain') as database:
        worker = InProcessWorker(database.dsn, concurrency).start(database)
        try:
            rate = _drain(database, count, worker.check,
                          'Procrastinate in-process drain')
        finally:
            worker.stop()
        if worker.error is not None:
            raise BenchmarkError('the Procrastinate worker failed: %r'
                                 % (worker.error,))
        return rate


def drainProcesses(count, processes, concurrency, directory, commands):
    with Database('procrastinate_drain3') as database:
        workers = WorkerProcesses(database, processes, concurrency,
                                  directory)
        commands.append(workers.command)
        workers.start()
        try:
            rate = _drain(database, count, workers.check,
                          'Procrastinate drain with %d processes'
                          % processes)
        finally:
            codes = workers.stop()
        if any(code not in (0, -15) for code in codes):
            raise BenchmarkError('Procrastinate workers exited with codes %s '
                                 '(logs in %s)' % (codes, directory))
        return rate


def latency(count, gap, concurrency):
    """Milliseconds from each ``defer`` to its task's start."""
    from benchmarks.procrastinate_app import STARTED
    with Database('procrastinate_latency') as database:
        worker = InProcessWorker(database.dsn, concurrency).start(database)
        try:
            values = []
            for i in range(count):
                time.sleep(gap)
                token = '%d-%d' % (id(database), i)
                job_id = database.started.defer(token=token)
                committed = time.time()
                deadline = time.monotonic() + 60
                while token not in STARTED:
                    worker.check()
                    if time.monotonic() > deadline:
                        raise BenchmarkError('Procrastinate latency: job %s '
                                             'not started in 60 s' % job_id)
                    time.sleep(0.001)
                values.append((STARTED.pop(token) - committed) * 1000)
                # the job is finished before the next one, like zcasync's
                support.waitUntil(
                    lambda: database.app.job_manager.get_job_status(
                        job_id).value == 'succeeded',
                    'Procrastinate latency: job %s not finished' % job_id,
                    60, 0.001)
        finally:
            worker.stop()
        return values
