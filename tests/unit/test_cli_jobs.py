"""zcasync put, status, jobs, job, cancel and retry on a FileStorage, in
process.  Jobs are run by ``runQueuedJobs`` (claim and call, as a worker
does) so that there are completed and failed jobs to look at.  The
callables are standard-library functions, importable anywhere."""
import datetime
import json
import re

import pytest

from zcasync.cli.common import (
    EXIT_OK, EXIT_USAGE, EXIT_IMPORT, EXIT_NOT_FOUND, EXIT_REFUSED)

from test_cli_support import (
    run, database, fileUri, lastTransaction, runQueuedJobs, jobState,
    openDb, WORKER_UUID)


def oneLine(err, prog):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r'zcasync( \w+)?: error: ', lines[0]), err
    assert lines[0].startswith(prog), err
    return lines[0]


def put(capsys, path, *argv):
    code, out, err = run(capsys, 'put', '--db', fileUri(path), *argv)
    assert code == EXIT_OK, err
    ident = out.strip()
    return ident, int(ident.split('@')[0])


def jsonOf(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_OK, err
    return json.loads(out)


def test_put_parses_arguments_as_json_or_strings(capsys, tmp_path):
    path = database(tmp_path)
    ident, oid = put(capsys, path, 'builtins:print', '1', '"1"', 'abc',
                     '[1, 2]', '{"a": null}', 'true', '-5')
    assert ident == '%d@unnamed' % oid
    info = jsonOf(capsys, 'job', ident, '--db', fileUri(path), '--json')
    assert info['status'] == 'pending'
    assert info['queue'] == ''
    assert info['call'] == "builtins.print(1, '1', 'abc', [1, 2], " \
                           "{'a': None}, True, -5)"
    assert info['assigner'] is None  # a producer needs no instance UUID


def test_put_schedules_and_sets_policy(capsys, tmp_path):
    path = database(tmp_path)
    ident, oid = put(capsys, path, '--begin-after', '2031-02-03T04:05:06Z',
                     '--begin-by', '60', '--retry-policy', 'NeverRetry',
                     'operator:add', '1', '2')
    info = jsonOf(capsys, 'job', ident, '--db', fileUri(path), '--json')
    assert info['begin_after'] == '2031-02-03T04:05:06+00:00'
    assert info['begin_by_seconds'] == 60.0
    assert info['retry_policy'] == 'NeverRetry'
    ident, oid = put(capsys, path, '--begin-after',
                     '2031-02-03T05:05:06+01:00', 'operator:add', '1', '2')
    info = jsonOf(capsys, 'job', ident, '--db', fileUri(path), '--json')
    assert info['begin_after'] == '2031-02-03T04:05:06+00:00'
    before = datetime.datetime.now(datetime.timezone.utc)
    ident, oid = put(capsys, path, '--in', '3600', 'operator:add', '1', '2')
    info = jsonOf(capsys, 'job', ident, '--db', fileUri(path), '--json')
    start = datetime.datetime.fromisoformat(info['begin_after'])
    assert before + datetime.timedelta(seconds=3600) <= start
    # scheduled jobs do not run yet
    assert runQueuedJobs(path) == 0


def test_put_with_a_policy_factory_given_as_module_function(capsys,
                                                            tmp_path):
    path = database(tmp_path)
    ident, oid = put(capsys, path, '--retry-policy',
                     'zcasync.retry:RetryCommonForever', 'operator:add',
                     '1', '2')
    info = jsonOf(capsys, 'job', ident, '--db', fileUri(path), '--json')
    assert info['retry_policy'] == 'zcasync.retry:RetryCommonForever'


@pytest.mark.parametrize('argv, code_, words', [
    (['no_such_module_xyz:f'], EXIT_IMPORT,
     ["cannot import module 'no_such_module_xyz'", 'PYTHONPATH']),
    (['operator:no_such_function'], EXIT_IMPORT,
     ["module 'operator' has no 'no_such_function'"]),
    (['operator'], EXIT_IMPORT, ['is not module:function']),
    (['math:pi'], EXIT_IMPORT, ['is not callable']),
    (['--begin-after', 'next tuesday', 'operator:add'], EXIT_USAGE,
     ["--begin-after 'next tuesday' is not an ISO 8601 date-time"]),
    (['--begin-after', '2030-01-31T09:00:00', 'operator:add'], EXIT_USAGE,
     ['has no time zone']),
    (['--begin-after', '2030-01-31T09:00:00Z', '--in', '5', 'operator:add'],
     EXIT_USAGE, ['not allowed with argument']),
    (['--in', '-5', 'operator:add'], EXIT_USAGE, ['--in']),
    (['--retry-policy', 'Sometimes', 'operator:add'], EXIT_USAGE,
     ["no retry policy factory is registered as 'Sometimes'"]),
    (['--retry-policy', 'nowhere_xyz:P', 'operator:add'], EXIT_IMPORT,
     ['the retry policy']),
    (['--queue', 'reports', 'operator:add'], EXIT_NOT_FOUND,
     ["no queue 'reports'", '--create-queue']),
    (['--wait', 'operator:add', '1', '2'], EXIT_USAGE,
     ['--wait needs a database that workers share']),
])
def test_put_refuses_bad_input_and_changes_nothing(capsys, tmp_path, argv,
                                                   code_, words):
    path = database(tmp_path)
    before = lastTransaction(path)
    code, out, err = run(capsys, 'put', '--db', fileUri(path), *argv)
    assert code == code_, err
    line = oneLine(err, 'zcasync put')
    for word in words:
        assert word in line
    assert out == ''
    assert lastTransaction(path) == before


def test_put_creates_a_queue_only_when_asked(capsys, tmp_path):
    path = database(tmp_path, queue=False)
    ident, oid = put(capsys, path, '--queue', 'reports', '--create-queue',
                     'operator:add', '1', '2')
    info = jsonOf(capsys, 'status', '--db', fileUri(path), '--json')
    assert [(q['name'], q['pending']) for q in info['queues']] == [
        ('reports', 1)]


def test_status_jobs_and_job_show_what_happened(capsys, tmp_path):
    path = database(tmp_path)
    ok, ok_oid = put(capsys, path, 'operator:add', '40', '2')
    bad, bad_oid = put(capsys, path, 'math:sqrt', '-1')
    later, later_oid = put(capsys, path, '--in', '3600', 'operator:add',
                           '1', '1')
    assert runQueuedJobs(path) == 2
    db = fileUri(path)

    status = jsonOf(capsys, 'status', '--db', db, '--json')
    [queue] = status['queues']
    assert queue['pending'] == 1
    assert queue['dispatchers'] == {'alive': 0, 'dead': 0, 'stopped': 1}
    [dispatcher] = status['dispatchers']
    assert dispatcher['state'] == 'stopped'
    assert dispatcher['activated'] is None
    [agent] = dispatcher['agents']
    assert (agent['name'], agent['size'], agent['held'],
            agent['completed'], agent['jobs']) == ('main', 100, 0, 2, [])
    code, out, err = run(capsys, 'status', '--db', db, '--all',
                         terminal=True)
    lines = out.splitlines()
    assert lines[0].split() == ['QUEUE', 'PENDING', 'OLDEST', 'WAIT',
                                'RUNNING', 'CAPACITY', 'DISPATCHERS',
                                'NOTE']
    assert lines[1].split()[:5] == ['(primary)', '1', '-', '0', '0']
    assert str(WORKER_UUID) in lines[4] and 'main 0/100' in lines[4]

    def listed(*argv):
        found = jsonOf(capsys, 'jobs', '--db', db, '--json', *argv)
        return [j['id'] for j in found['items']]
    found = jsonOf(capsys, 'jobs', '--db', db, '--json')
    assert [(j['id'], j['status'], j['state']) for j in found['items']] == [
        (later, 'pending', 'pending'), (bad, 'completed', 'failed'),
        (ok, 'completed', 'succeeded')]
    assert (found['state'], found['limit'], found['more']) == (
        None, 100, False)
    assert listed('failed') == [bad]
    assert listed('succeeded') == [ok]
    assert listed('pending') == [later]
    assert listed('active') == []
    assert listed('--agent', 'main') == [bad, ok]
    found = jsonOf(capsys, 'jobs', '--limit', '1', '--db', db, '--json')
    assert len(found['items']) == 1 and found['more'] is True
    # piped: tab-separated lines, no header
    code, out, err = run(capsys, 'jobs', '--db', db)
    rows = [line.split('\t') for line in out.splitlines()]
    assert [row[:3] for row in rows] == [
        [later, 'pending', ''], [bad, 'failed', ''], [ok, 'succeeded', '']]
    assert rows[1][3] == 'main@%s' % WORKER_UUID.hex[:8]
    assert rows[1][4].startswith('ended 20')
    assert rows[0][4].startswith('due 20')
    assert rows[1][5] == 'math.sqrt(-1)'
    # a terminal: a header and aligned columns; the primary queue named
    code, out, err = run(capsys, 'jobs', '--db', db, terminal=True)
    lines = out.splitlines()
    assert lines[0].split() == ['ID', 'STATE', 'QUEUE', 'AGENT', 'WHEN',
                                '(UTC)', 'CALL']
    start = lines[0].index('CALL')
    assert [line[start:] for line in lines[1:]] == [
        '_operator.add(1, 1)', 'math.sqrt(-1)', '_operator.add(40, 2)']
    assert lines[2].split()[:3] == [bad, 'failed', '(primary)']
    code, out, err = run(capsys, 'jobs', '--queue', 'nope', '--db', db)
    assert code == EXIT_NOT_FOUND
    line = oneLine(err, 'zcasync jobs')
    assert "no queue 'nope'" in line
    assert '--create-queue' not in line  # jobs has no such option

    info = jsonOf(capsys, 'job', ok, '--db', db, '--json')
    assert (info['status'], info['result'], info['failed']) == (
        'completed', 42, False)
    assert info['agent'] == 'main'
    assert info['active_start'] <= info['active_end']
    info = jsonOf(capsys, 'job', str(bad_oid), '--db', db, '--json')
    assert info['failed'] is True and info['state'] == 'failed'
    assert info['error'] == 'builtins.ValueError: math domain error'
    assert 'ValueError' in info['traceback']
    code, out, err = run(capsys, 'job', bad, '--db', db)
    assert 'failed:       builtins.ValueError: math domain error' in out
    assert 'Traceback' in out
    code, out, err = run(capsys, 'job', ok, '--db', db)
    assert 'result:       42' in out
    assert 'status:       completed' in out


def test_cancel_completes_a_pending_job_and_refuses_completed_ones(
        capsys, tmp_path):
    path = database(tmp_path)
    db = fileUri(path)
    done, done_oid = put(capsys, path, 'operator:add', '1', '2')
    assert runQueuedJobs(path) == 1
    waiting, waiting_oid = put(capsys, path, '--in', '3600', 'operator:add',
                               '1', '2')
    code, out, err = run(capsys, 'cancel', waiting, '--db', db)
    assert code == EXIT_OK, err
    assert 'completed with CancelledError' in out
    status, result, annotations = jobState(path, waiting_oid)
    assert status == 'completed-status'
    assert 'CancelledError' in result.getErrorMessage() or \
        result.check('zcasync.interfaces.CancelledError')
    assert jsonOf(capsys, 'jobs', 'pending', '--db', db, '--json')[
        'items'] == []
    # listed as cancelled (and as failed), not the completed one
    cancelled = jsonOf(capsys, 'jobs', 'cancelled', '--db', db, '--json')
    assert [i['id'] for i in cancelled['items']] == [waiting]
    assert waiting in [i['id'] for i in jsonOf(
        capsys, 'jobs', 'failed', '--db', db, '--json')['items']]
    assert runQueuedJobs(path) == 0

    for ident in (waiting, done):
        before = lastTransaction(path)
        code, out, err = run(capsys, 'cancel', ident, '--db', db)
        assert code == EXIT_REFUSED
        line = oneLine(err, 'zcasync cancel')
        assert 'it is completed' in line
        assert 'nothing to cancel' in line
        assert lastTransaction(path) == before


def test_cancel_a_claimed_job_and_json(capsys, tmp_path):
    from zcasync.interfaces import KEY
    path = database(tmp_path)
    ident, oid = put(capsys, path, 'operator:add', '1', '2')
    with openDb(path) as (db, conn):
        from zcasync import testing
        agent = conn.root()[KEY][''].dispatchers[WORKER_UUID]['main']
        assert testing._immediateClaim(agent) is not None
        conn.transaction_manager.commit()
    answer = jsonOf(capsys, 'cancel', ident, '--db', fileUri(path), '--json')
    assert answer == {'action': 'cancel', 'job': ident, 'queue': '',
                      'outcome': 'cancelled'}
    assert jobState(path, oid)[0] == 'completed-status'


def test_cancel_refuses_a_bad_grace(capsys, tmp_path):
    path = database(tmp_path)
    ident, oid = put(capsys, path, 'operator:add', '1', '2')
    before = lastTransaction(path)
    for grace in ('-1', 'soon', 'nan'):
        code, out, err = run(capsys, 'cancel', ident, '--db', fileUri(path),
                             '--grace', grace)
        assert code == EXIT_USAGE, err
        assert '--grace' in err or 'seconds' in err
    assert lastTransaction(path) == before
    assert jobState(path, oid)[0] == 'pending-status'


def test_put_timeout(capsys, tmp_path):
    path = database(tmp_path)
    ident, oid = put(capsys, path, '--timeout', '90', 'operator:add', '1',
                     '2')
    with openDb(path) as (db, conn):
        import ZODB.utils
        job = conn.get(ZODB.utils.p64(oid))
        assert job.timeout == datetime.timedelta(seconds=90)
    before = lastTransaction(path)
    for value in ('0', '-3', 'later'):
        code, out, err = run(capsys, 'put', '--db', fileUri(path),
                             '--timeout', value, 'operator:add', '1', '2')
        assert code == EXIT_USAGE, err
        assert 'timeout' in err or 'seconds' in err
    assert lastTransaction(path) == before


def test_retry_queues_a_failed_job_again(capsys, tmp_path):
    path = database(tmp_path)
    db = fileUri(path)
    bad, bad_oid = put(capsys, path, '--retry-policy', 'NeverRetry',
                       'math:sqrt', '-4')
    ok, ok_oid = put(capsys, path, 'operator:add', '1', '2')
    assert runQueuedJobs(path) == 2

    code, out, err = run(capsys, 'retry', bad, '--db', db)
    assert code == EXIT_OK, err
    again = out.strip()
    assert again != bad
    info = jsonOf(capsys, 'job', again, '--db', db, '--json')
    assert info['status'] == 'pending'
    assert info['call'] == 'math.sqrt(-4)'
    assert info['retry_policy'] == 'NeverRetry'
    assert info['annotations']['zcasync.retry_of'] == bad
    assert runQueuedJobs(path) == 1
    info = jsonOf(capsys, 'job', again, '--db', db, '--json')
    assert info['failed'] is True

    for ident, word in ((ok, 'completed and succeeded'),):
        before = lastTransaction(path)
        code, out, err = run(capsys, 'retry', ident, '--db', db)
        assert code == EXIT_REFUSED
        assert word in oneLine(err, 'zcasync retry')
        assert lastTransaction(path) == before
    pending, pending_oid = put(capsys, path, '--in', '99', 'operator:add',
                               '1', '2')
    code, out, err = run(capsys, 'retry', pending, '--db', db)
    assert code == EXIT_REFUSED
    assert 'it is pending' in oneLine(err, 'zcasync retry')
