"""Poison jobs (issue 9, case 5): a job whose callable lives in a module
this process cannot import unpickles with a broken stand-in, and claiming
it -- which writes it -- would fail every claim of its queue.  The claim
parks it instead, without writing it, logs one clear error, and the queue
goes on; ``zcasync jobs/job/cancel/retry`` work on it without importing
its module."""
import json
import logging
import sys
import textwrap

import pytest
import ZODB.utils

from zcasync import testing
from zcasync import interfaces
from zcasync.agent import Agent
from zcasync.interfaces import KEY, PARKED, PENDING
from zcasync.job import Job, loadProblem
from zcasync.queue import Queue, Queues

from test_cli_support import run, fileUri, lastTransaction, openDb

MODULE = 'zcasync_poison_module_for_tests'


@pytest.fixture
def poisoned(tmp_path):
    yield from makePoisoned(tmp_path)


@pytest.fixture
def poisonedLater(tmp_path, clock):
    """As `poisoned`, but the poison job is scheduled a minute ahead (it
    moves to the due tree, unwritten, when it comes due)."""
    yield from makePoisoned(tmp_path, begin_after=clock.now +
                            __import__('datetime').timedelta(seconds=60))


def makePoisoned(tmp_path, begin_after=None):
    """A FileStorage whose primary queue holds [a job calling a function of
    a module that is importable only while the job is put, then two normal
    jobs]; returns (path, poison oid, [normal oids]).  After the fixture
    the module cannot be imported in this process."""
    directory = tmp_path / 'modules'
    directory.mkdir()
    (directory / (MODULE + '.py')).write_text(textwrap.dedent('''
        def work(value):
            return value * 2
    '''))
    sys.path.insert(0, str(directory))
    path = tmp_path / 'Data.fs'
    try:
        module = __import__(MODULE)
        with openDb(path) as (db, conn):
            queues = conn.root()[KEY] = Queues()
            queue = queues[''] = Queue()
            agents = testing.activeRegistration(
                queue, __import__('uuid').uuid4())
            agents['main'] = Agent(size=10)
            poison = queue.put(Job(module.work, 21), begin_after=begin_after)
            normal = [queue.put(Job(len, 'abc')), queue.put(Job(abs, -4))]
            conn.transaction_manager.commit()
            oids = poison._p_oid, [j._p_oid for j in normal]
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(MODULE, None)
    yield (path,) + oids
    sys.modules.pop(MODULE, None)


def agentOf(conn):
    queue = conn.root()[KEY]['']
    [agents] = queue.dispatchers.values()
    return queue, agents['main']


def test_a_poison_job_is_parked_and_the_queue_goes_on(poisoned, caplog):
    path, poison_oid, normal = poisoned
    caplog.set_level(logging.ERROR, 'zcasync.events')
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        poison = conn.get(poison_oid)
        problem = loadProblem(poison)
        assert MODULE + '.work' in problem
        assert 'zcasync worker --import %s' % MODULE in problem
        first = agent.claimJob()
        assert first._p_oid == normal[0]
        first._activate()
        conn.transaction_manager.commit()  # the poison job was not written
        second = agent.claimJob()
        assert second._p_oid == normal[1]
        conn.transaction_manager.commit()
        assert agent.claimJob() is None
        conn.transaction_manager.commit()
        assert len(queue) == 0
        assert poison.status == PARKED
        [(job, reason, when)] = queue.parked()
        assert job is poison and reason == problem
    errors = [r.getMessage() for r in caplog.records
              if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, when it was parked
    assert 'set aside job %d@unnamed' % ZODB.utils.u64(poison_oid) in \
        errors[0] and MODULE in errors[0]


def test_a_parked_job_can_be_cancelled_without_its_module(poisoned):
    path, poison_oid, normal = poisoned
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        agent.claimJob()
        conn.transaction_manager.commit()
        poison = conn.get(poison_oid)
        assert poison.status == PARKED
        queue.remove(poison)
        conn.transaction_manager.commit()
        assert queue.parked() == []
        assert poison.status == interfaces.NEW  # it belongs nowhere now


def test_a_pending_poison_job_can_be_removed_without_its_module(poisoned):
    path, poison_oid, normal = poisoned
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        poison = conn.get(poison_oid)
        assert poison.status == PENDING
        queue.remove(poison)
        conn.transaction_manager.commit()
        assert len(queue) == 2 and [j._p_oid for j in queue] == normal


def test_an_unparked_job_runs_once_its_module_is_back(poisoned, tmp_path):
    path, poison_oid, normal = poisoned
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        agent.claimJob()
        conn.transaction_manager.commit()
        queue.unpark(conn.get(poison_oid))  # needs no import either
        conn.transaction_manager.commit()
        assert conn.get(poison_oid).status == PENDING
        assert queue[0]._p_oid == poison_oid  # back where it was
    sys.path.insert(0, str(tmp_path / 'modules'))
    try:
        with openDb(path) as (db, conn):  # as a worker that has the module
            queue, agent = agentOf(conn)
            job = agent.claimJob()
            assert job._p_oid == poison_oid
            conn.transaction_manager.commit()
            assert job() == 42
    finally:
        sys.path.remove(str(tmp_path / 'modules'))


def test_unpark_refuses_a_job_that_is_not_parked(poisoned):
    path, poison_oid, normal = poisoned
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        with pytest.raises(LookupError, match='is not parked'):
            queue.unpark(conn.get(normal[0]))


def test_the_command_line_shows_cancels_and_retries_parked_jobs(
        poisoned, capsys):
    path, poison_oid, normal = poisoned
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        agent.claimJob()
        conn.transaction_manager.commit()
    ident = '%d@unnamed' % ZODB.utils.u64(poison_oid)
    code, out, err = run(capsys, 'jobs', 'parked', '--db', fileUri(path),
                         '--json')
    assert code == 0, err
    [info] = json.loads(out)['items']
    assert info['id'] == ident and info['status'] == 'parked'
    assert MODULE in info['error'] and MODULE in info['call']
    code, out, err = run(capsys, 'job', ident, '--db', fileUri(path))
    assert code == 0, err
    assert 'parked' in out
    # retry puts it back in its queue; cancel removes it; neither needs
    # the module
    code, out, err = run(capsys, 'retry', ident, '--db', fileUri(path))
    assert code == 0, err
    assert 'back in queue' in out
    with openDb(path) as (db, conn):
        assert conn.get(poison_oid).status == PENDING
    before = lastTransaction(path)
    code, out, err = run(capsys, 'cancel', ident, '--db', fileUri(path))
    assert code == 0, err
    assert lastTransaction(path) != before
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        assert [j._p_oid for j in queue] == [normal[1]]
        poison = conn.get(poison_oid)
        assert poison.status == interfaces.NEW
        # it could not be written (nor annotated): it had no annotations
        assert 'zcasync.cancelled' not in poison.peekAnnotations()


def test_a_scheduled_poison_job_is_parked_when_due(poisonedLater, clock):
    path, poison_oid, normal = poisonedLater
    with openDb(path) as (db, conn):
        queue, agent = agentOf(conn)
        assert [agent.claimJob()._p_oid for i in range(2)] == normal
        assert agent.claimJob() is None  # the poison job is not due yet
        conn.transaction_manager.commit()
        clock.advance(61)
        testing.activeRegistration(queue, agent.parent.UUID)  # it pinged
        assert agent.claimJob() is None
        conn.transaction_manager.commit()
        poison = conn.get(poison_oid)
        assert poison.status == PARKED and len(queue) == 0
        queue.unpark(poison)
        conn.transaction_manager.commit()
        assert poison.status == PENDING and len(queue) == 1
        queue.remove(poison)
        conn.transaction_manager.commit()
        assert len(queue) == 0 and poison.status == interfaces.NEW


def test_a_storage_error_while_loading_is_not_a_reason_to_park(queue, conn):
    """A lost database connection in the middle of a claim's walk is the
    storage's problem, not the job's: the claim fails (and is tried again
    at the next poll); nothing is parked."""
    import ZODB.POSException
    from zcasync.callables import isStorageError

    class OperationalError(Exception):
        pass
    OperationalError.__module__ = 'psycopg2'

    class Error(Exception):
        pass
    Error.__module__ = 'psycopg2'
    LostConnection = type('OperationalError', (Error,), {})
    assert isStorageError(ZODB.POSException.ConflictError())
    # an object missing from the storage will not come back: park
    assert not isStorageError(ZODB.POSException.POSKeyError(b'\0' * 8))
    assert isStorageError(LostConnection('server closed the connection'))
    assert isStorageError(ConnectionResetError())
    assert not isStorageError(ImportError('No module named x'))
    assert not isStorageError(AttributeError('x'))

    job = queue.put(Job(len, 'abc'))
    conn.transaction_manager.commit()
    job._p_deactivate()

    def failing():
        raise LostConnection('server closed the connection unexpectedly')
    job._p_activate = failing
    with pytest.raises(LostConnection):
        loadProblem(job)
