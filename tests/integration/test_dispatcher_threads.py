"""Worker threads of a real dispatcher: job records, result reprs, verbose
tracebacks cut at RESULT_LIMIT, the trace log, failure_log_level, log
records formatted at log time, and threads that die being replaced."""
import logging
import uuid

import pytest
import persistent
import transaction
import ZODB
import ZODB.FileStorage

from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import testing
from zcasync import utils
from zcasync.job import Job
from zcasync.queue import Queue, Queues

from test_dispatcher_support import (
    WAIT, CALLS, Running, addAgent, commit, findPoll, jobInfo, waitForRecord,
    workerThreads, dieFirstCall, double,
    echo, fail)

INFO_KEYS = ['call', 'completed', 'failed', 'poll id', 'quota names',
             'result', 'started', 'thread']




@pytest.fixture
def running(db, conn, queue):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, 'main', size=2)
        yield running


def run(conn, queue, running, job, **kw):
    job = queue.put(job, **kw)
    commit(conn)
    result = testing.wait_for_result(job, WAIT)
    info = waitForRecord(running.dispatcher, job)
    return job, result, info


def test_success_record_and_log(conn, queue, running, capture):
    queue.quotas.create('pdf', size=2)
    job = Job(double, 21)
    job.quota_names = ('pdf',)
    job, result, info = run(conn, queue, running, job)
    assert result == 42
    assert sorted(info) == INFO_KEYS
    assert info['call'] == repr(job)
    assert info['result'] == '42'
    assert info['failed'] is False
    assert info['quota names'] == ('pdf',)
    assert info['started'].tzinfo is not None
    assert info['started'] <= info['completed'] <= utils.now()
    assert isinstance(info['thread'], int)
    job_id = utils.jobId(job)
    claiming = findPoll(running.dispatcher, lambda p: job_id in (
        (p.get('') or {}).get('main') or {}).get('new jobs', ()))
    assert info['poll id'] == claiming.key
    record = capture.find(logging.INFO, ' succeeded in thread ')
    assert record.name == 'zcasync.trace'
    assert record.getMessage() == (
        '%r succeeded in thread %d with result:\n42' % (job, info['thread']))


def test_result_is_a_repr(conn, queue, running):
    job, result, info = run(conn, queue, running, Job(echo, 'abc'))
    assert result == 'abc'
    assert info['result'] == "'abc'"
    job, result, info = run(conn, queue, running, Job(echo, 'y' * 30000))
    assert len(result) == 30000
    assert info['result'] == repr('y' * 30000)[:dispatchermodule.RESULT_LIMIT]
    job, result, info = run(conn, queue, running, Job(echo, None))
    assert info['result'] == 'None'


def test_failure_record_and_log(conn, queue, running, capture):
    job, result, info = run(conn, queue, running, Job(fail, 'bad input'))
    assert utils.isFailure(result)
    assert result.check(RuntimeError)
    assert info['failed'] is True
    text = info['result']
    assert text.startswith('*--- Failure #')
    assert text.rstrip().endswith('---')
    assert 'builtins.RuntimeError: bad input' in text
    assert 'test_dispatcher_support' in text  # the frame of `fail`
    record = capture.find(logging.ERROR, ' failed in thread ')
    assert record.name == 'zcasync.trace'
    assert record.getMessage() == (
        '%r failed in thread %d with result:\n%s'
        % (job, info['thread'], text))


def failWithSecret(message):
    password = 'hunter2-%s' % message  # noqa: F841 (a local variable)
    raise ValueError(message)


def test_a_failure_log_shows_no_frame_variables(conn, queue, running,
                                                capture):
    # issue 13: a one-line ValueError took 24 lines of locals and globals
    job, result, info = run(conn, queue, running,
                            Job(failWithSecret, 'bad'))
    text = capture.find(logging.ERROR, ' failed in thread ').getMessage()
    assert 'builtins.ValueError: bad' in text
    assert 'hunter2' not in text and 'password' not in text
    assert 'Capture of Locals and Globals disabled' in text
    assert len(text.splitlines()) <= 8, text


def test_huge_failure_is_cut(conn, queue, running, capture):
    message = 'x' * 50000
    job, result, info = run(conn, queue, running, Job(fail, message))
    assert result.getErrorMessage() == message  # the stored result is whole
    assert len(info['result']) == dispatchermodule.RESULT_LIMIT
    assert info['result'].startswith('*--- Failure #')
    record = capture.find(logging.ERROR, ' failed in thread ')
    assert record.getMessage().endswith('\n' + info['result'])


def test_failure_log_level(conn, queue, running, capture):
    job, result, info = run(conn, queue, running, Job(fail, 'expected'),
                            failure_log_level=logging.WARNING)
    assert info['failed'] is True
    record = capture.find(logging.WARNING, ' failed in thread ')
    assert record.getMessage().startswith(repr(job))
    assert not [r for r in capture.snapshot()
                if r.levelno >= logging.ERROR and 'expected' in
                r.getMessage()]


def test_messages_are_formatted_when_logged(tmp_path, capture):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'log.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    queues = conn.root()[interfaces.KEY] = Queues()
    queue = queues[''] = Queue()
    tm.commit()
    with Running(db) as running:
        addAgent(conn, running.dispatcher, 'main', size=1)
        jobs = [queue.put(Job(double, 2)), queue.put(Job(fail, 'oops'))]
        tm.commit()
        for job in jobs:
            testing.wait_for_result(job, WAIT)
            waitForRecord(running.dispatcher, job)
    tm.abort()
    conn.close()
    db.close()
    records = capture.snapshot()
    assert len(records) > 4
    for record in records:
        for arg in record.args or ():
            assert not isinstance(arg, persistent.Persistent), record.msg
        record.getMessage()  # no ConnectionStateError: nothing to load
    messages = [r.getMessage() for r in records]
    assert any(' succeeded in thread ' in m for m in messages)
    assert any(' failed in thread ' in m for m in messages)
    assert any(m.startswith('deactivated dispatcher ') for m in messages)


@pytest.mark.parametrize('exception', ['SystemExit', 'Interrupt'])
def test_thread_that_dies_is_replaced(db, conn, queue, capture, exception):
    name = 'die-%s' % uuid.uuid4().hex[:8]
    original = db.getPoolSize()
    with Running(db) as running:
        addAgent(conn, running.dispatcher, name, size=1)
        testing.wait(lambda: len(workerThreads('', name)) == 1, WAIT,
                     'no worker thread')
        [first_thread] = workerThreads('', name)
        dying = queue.put(Job(dieFirstCall, name, exception))
        commit(conn)
        testing.wait(lambda: CALLS[name] >= 1, WAIT, 'the job never ran')
        died = capture.find(logging.CRITICAL, 'died; replacing it')
        assert repr(name) in died.getMessage()
        interrupted = capture.find(logging.CRITICAL,
                                   'was interrupted in thread')
        assert interrupted.getMessage().startswith(repr(dying))
        # recovered through handleInterrupt: put back and run again, on
        # the replacement thread
        assert testing.wait_for_result(dying, WAIT) == 'survived call 2'
        assert dying.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}
        info = waitForRecord(running.dispatcher, dying)
        assert info['failed'] is False
        later = queue.put(Job(double, 5))
        commit(conn)
        assert testing.wait_for_result(later, WAIT) == 10
        later_info = waitForRecord(running.dispatcher, later)
        assert later_info['thread'] == info['thread']
        killed = [int(m.split(' in thread ')[1].split(';')[0])
                  for m in capture.messages(logging.CRITICAL)
                  if 'was interrupted in thread' in m]
        assert killed == [first_thread.ident]
        testing.wait(lambda: not first_thread.is_alive(), WAIT,
                     'the thread that raised %s is still alive' % exception)
        [replacement] = workerThreads('', name)
        assert replacement is not first_thread
        assert replacement.ident == info['thread']
        assert db.getPoolSize() == original + 1 + 1
        # the killed run is not reported as a success
        runs = [m for m in capture.messages()
                if m.startswith(repr(dying)) and ' in thread %d ' %
                killed[0] in m]
        assert runs and not any(' succeeded in thread ' in m for m in runs)
        assert any(' failed in thread ' in m and exception in m
                   for m in runs)
    assert db.getPoolSize() == original


def test_job_history_is_bounded(conn, queue, running):
    running.dispatcher.jobs.size = 2
    jobs = [run(conn, queue, running, Job(double, n))[0] for n in range(3)]
    with pytest.raises(ValueError, match='no record of job'):
        jobInfo(running.dispatcher, jobs[0])
    assert [jobInfo(running.dispatcher, j)['result'] for j in jobs[1:]] == \
        ['2', '4']
    assert running.dispatcher.getStatistics()['started'] == 2
