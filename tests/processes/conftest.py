"""Fixtures for the process tier: real ZEO servers, real worker processes
(``python -m zcasync worker``), a throw-away PostgreSQL database, and a
client connection in the test process to put jobs and read the outcome.

Every process is started by a fixture on a free port (the server listens on
port 0 and prints the port it got) with its output in a log file under the
test's tmp_path, and every process is stopped at teardown: SIGTERM, then
SIGKILL if it does not exit within 15 s.  The logs' tails are printed at
teardown, so a failing test shows them.

Timing: workers poll every 0.3 s, ping every 0.5 s and are dead after
2.5 s without a ping, so a crash is recovered within a few seconds.
"""
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidmodule

import pytest
import transaction

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
JOBS = 'tests.processes.jobfuncs'
POLL, PING, DEATH = 0.3, 0.5, 2.5


def childEnvironment():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                  if p])
    for name in list(env):
        if name.startswith('ZCASYNC_') or name == 'ZC_ASYNC_UUID':
            del env[name]
    env['PYTHONUNBUFFERED'] = '1'
    return env


def zcasync(*argv):
    return [sys.executable, '-m', 'zcasync'] + [str(a) for a in argv]


def waitFor(condition, timeout, what, interval=0.1):
    """Re-check `condition` until it returns something true; fail with
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %g s waiting for %s'
                                 % (timeout, what))
        time.sleep(interval)


class Process:

    def __init__(self, name, argv, log, stdout=None):
        self.name = name
        self.argv = argv
        self.log = log
        self._logfile = open(log, 'ab')
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=childEnvironment(), stdout=stdout or
            self._logfile, stderr=self._logfile, stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid

    @property
    def alive(self):
        return self.popen.poll() is None

    def signal(self, signum):
        if self.alive:
            os.kill(self.pid, signum)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s (pid %d) did not exit within %g s'
                                 % (self.name, self.pid, timeout)) from None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL; returns the exit code."""
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._close()
        return self.popen.returncode

    def _close(self):
        if self.popen.stdout is not None and not self.popen.stdout.closed:
            self.popen.stdout.close()
        if not self._logfile.closed:
            self._logfile.close()

    def text(self):
        with open(self.log, errors='replace') as f:
            return f.read()


class Processes:
    """Starts processes and stops every one of them at teardown."""

    def __init__(self, directory):
        self.directory = directory
        self.all = []
        self.reported = False

    def start(self, name, argv, stdout=None):
        process = Process(name, argv, str(self.directory / (name + '.log')),
                          stdout)
        self.all.append(process)
        return process

    def worker(self, name, db, uuid_file=None, *extra, poll=POLL,
               ping=PING, death=DEATH, size=3):
        uuid_file = uuid_file or self.directory / (name + '.uuid')
        return self.start(name, zcasync(
            'worker', '--db', db, '--uuid-file', uuid_file, '--import', JOBS,
            '--poll-interval', poll, '--ping-interval', ping,
            '--ping-death-interval', death, '--size', size, *extra))

    def stopAll(self):
        """Stop everything, newest first (workers before their server),
        and print the tails of the logs (once)."""
        for process in reversed(self.all):
            process.stop()
        if self.reported:
            return
        self.reported = True
        for process in self.all:
            lines = process.text().splitlines()
            print('==== %s (pid %d, exit %s), last lines of %s' % (
                process.name, process.pid, process.popen.returncode,
                process.log))
            print('\n'.join(lines[-40:]))


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stopAll()


class ZEOServer:
    """``zcasync server`` on tmp_path/Data.fs; ``stop()`` and ``start()``
    restart it on the same port and file."""

    def __init__(self, processes, directory):
        self.processes = processes
        self.path = directory / 'Data.fs'
        self.port = 0
        self.starts = 0
        self.process = None
        self.start()

    @property
    def uri(self):
        return 'zeo://127.0.0.1:%d' % self.port

    def start(self):
        self.starts += 1
        process = self.processes.start(
            'zeo-server-%d' % self.starts,
            zcasync('server', '--db', 'file://%s' % self.path, '--address',
                    '127.0.0.1:%d' % self.port), stdout=subprocess.PIPE)
        ready, _, _ = select.select([process.popen.stdout], [], [], 30)
        line = process.popen.stdout.readline().decode() if ready else ''
        if 'serving' not in line:
            process.stop()
            raise AssertionError('the ZEO server did not start: %r\n%s'
                                 % (line, process.text()))
        self.port = int(line.rsplit(':', 1)[1])
        self.process = process

    def stop(self):
        code = self.process.stop()
        assert code == 0, 'the ZEO server exited with %s' % code


@pytest.fixture
def zeo(processes, tmp_path):
    server = ZEOServer(processes, tmp_path)
    yield server
    processes.stopAll()  # the workers first, then the server


def postgresReachable():
    try:
        with socket.create_connection(('127.0.0.1', 5432), timeout=1):
            return True
    except OSError:
        return False


class Unavailable(Exception):
    """What a variant needs is not there (the reason says what)."""


@contextlib.contextmanager
def throwawayPostgres(prefix='zcasync_test'):
    """The URI of a new history-free RelStorage database on
    127.0.0.1:5432, dropped afterwards; Unavailable when PostgreSQL or
    RelStorage is not there."""
    if not postgresReachable():
        raise Unavailable('PostgreSQL is not reachable on 127.0.0.1:5432 '
                          '(the RelStorage variant needs a server with trust '
                          'auth for user postgres)')
    try:
        import psycopg2
        import relstorage  # noqa: F401
    except ImportError as e:
        raise Unavailable('RelStorage/psycopg2 not installed: %s' % e)
    name = '%s_%s' % (prefix, uuidmodule.uuid4().hex[:12])
    admin = psycopg2.connect(host='127.0.0.1', port=5432, user='postgres',
                             dbname='postgres')
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute('CREATE DATABASE %s' % name)
        yield 'postgres://postgres@127.0.0.1:5432/%s?keep_history=false' % (
            name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
        admin.close()


@pytest.fixture
def postgres():
    """The URI of a throw-away history-free RelStorage database, dropped
    at teardown."""
    try:
        databases = throwawayPostgres()
        uri = databases.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield uri
    finally:
        databases.__exit__(None, None, None)


class Client:
    """A connection to the shared database from the test process."""

    def __init__(self, uri):
        from zcasync.cli import db as cli_db
        import zcasync.configure
        zcasync.configure.base()
        self.db = cli_db.openDatabase(uri, connect_timeout=10)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()

    def queue(self, name=''):
        from zcasync.interfaces import KEY
        self.tm.begin()
        queues = self.conn.root().get(KEY)
        return queues.get(name) if queues is not None else None

    def put(self, *calls, **kw):
        """Queue Job(func, *args) for each (func, args...) tuple in one
        transaction; returns the job oids."""
        from zcasync.job import Job
        for attempt in self.tm.attempts(10):
            with attempt:
                queue = self.queue()
                jobs = [queue.put(Job(call[0], *call[1:]), **kw)
                        for call in calls]
        return [job._p_oid for job in jobs]

    def job(self, oid):
        self.tm.begin()
        return self.conn.get(oid)

    def activeDispatchers(self, name=''):
        queue = self.queue(name)
        if queue is None:
            return set()
        return {uuid for uuid, agents in queue.dispatchers.items()
                if agents.activated and not agents.dead}

    def completed(self, oids):
        """True when every job in `oids` is completed."""
        from zcasync.interfaces import COMPLETED
        self.tm.begin()
        return all(self.conn.get(oid).status == COMPLETED for oid in oids)

    def heldJobs(self, name=''):
        queue = self.queue(name)
        return sum(len(agent) for agents in queue.dispatchers.values()
                   for agent in agents.values())


def settled(client, timeout=30):
    """Wait until the workers' agents hold no job: a completed job's
    bookkeeping (leaving its agent for the completed collection) is done
    by its worker's next poll, batched."""
    waitFor(lambda: client.heldJobs() == 0, timeout,
            'the agents to settle their completed jobs')


def readUUID(path):
    with open(path) as f:
        return uuidmodule.UUID(f.readline().strip())


def startLines(directory):
    """[(n, pid)] from directory/starts.log, in order."""
    path = os.path.join(str(directory), 'starts.log')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(int(x) for x in line.split()[1:]) for line in f
                if line.startswith('start ')]


def runLines(path):
    if not os.path.exists(str(path)):
        return []
    with open(str(path)) as f:
        return [tuple(int(x) for x in line.split()[1:]) for line in f
                if line.startswith('run ')]
