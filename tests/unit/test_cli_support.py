"""Helpers for the zcasync command tests (no tests here).

- ``run(capsys, *argv, env=None, terminal=False)``: run the command
  in-process and return (exit code, stdout, stderr); with `terminal`,
  stdout and stderr say they are a terminal (tables get headers, ``put
  --wait`` shows progress);
- ``database(tmp_path)``: a closed FileStorage with the primary queue
  (and optionally a registered dispatcher with an agent);
- ``runQueuedJobs(path)``: claim and run every due job of the primary
  queue in this process, as a worker would, so that jobs complete or fail;
- ``lastTransaction(path)``: the last committed transaction id, to show
  that a command changed nothing;
- ``openDb(path)``: a context manager giving (db, conn) on the file.
"""
import contextlib
import socket
import sys
import uuid as uuidmodule

import transaction
import ZODB
import ZODB.FileStorage

from tests.fsutil import lastTransaction  # noqa: F401 (used by the CLI tests)
from zcasync import cli

WORKER_UUID = uuidmodule.UUID('12345678-1234-1234-1234-1234567890ab')


def run(capsys, *argv, env=None, terminal=False):
    capsys.readouterr()
    streams = (sys.stdout, sys.stderr)
    if terminal:
        for stream in streams:
            stream.isatty = lambda: True
    try:
        code = cli.main(list(argv), environ=dict(env or {}))
    finally:
        if terminal:
            for stream in streams:
                del stream.isatty
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fileUri(path):
    return 'file://%s' % path


def freePort():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openDb(path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        yield db, conn
    finally:
        tm.abort()
        conn.close()
        db.close()


def database(tmp_path, queue=True, name='Data.fs'):
    from zcasync.agent import Agent
    from zcasync.interfaces import KEY
    from zcasync.queue import Queue, Queues
    path = tmp_path / name
    with openDb(path) as (db, conn):
        if queue:
            queues = conn.root()[KEY] = Queues()
            queues[''] = Queue()
            queues[''].dispatchers.register(WORKER_UUID)
            agents = queues[''].dispatchers[WORKER_UUID]
            agents['main'] = Agent(size=100)
        conn.transaction_manager.commit()
    return path


def runQueuedJobs(path):
    """Claim and run the due jobs of the primary queue; returns how many
    ran."""
    from zcasync.interfaces import KEY
    count = 0
    with openDb(path) as (db, conn):
        tm = conn.transaction_manager
        from zcasync import testing
        agent = conn.root()[KEY][''].dispatchers[WORKER_UUID]['main']
        while True:
            # the worker's record is not activated here (no worker runs)
            job = testing._immediateClaim(agent)
            if job is None:
                tm.abort()
                return count
            tm.commit()
            job()
            count += 1


def jobState(path, oid):
    """(status, result, annotations) of a job as committed."""
    import ZODB.utils
    with openDb(path) as (db, conn):
        job = conn.get(ZODB.utils.p64(oid))
        return job.status, job.result, dict(job.annotations)
