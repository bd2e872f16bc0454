"""The command line as a new user meets it (issue 13), in process on a
FileStorage: arguments and keyword arguments, malformed and non-finite
JSON, warnings for queues no worker serves, recovery's own jobs hidden,
stopped dispatchers, a second retry of one failed job, hints that name
the right option, ``--version`` and ``import zcasync.local``."""
import json
import operator
import re
import subprocess
import sys

import pytest

from zcasync.cli.common import (
    EXIT_OK, EXIT_USAGE, EXIT_REFUSED, showValue)

from test_cli_support import (
    run, database, fileUri, lastTransaction, runQueuedJobs, openDb,
    WORKER_UUID)


def oneLine(err, prog):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r'zcasync( [\w-]+)?: error: ', lines[0]), err
    assert lines[0].startswith(prog), err
    return lines[0]


def jsonOf(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_OK, err
    return json.loads(out)


def putJson(capsys, path, *argv):
    return jsonOf(capsys, 'put', '--db', fileUri(path), '--json', *argv)


def test_keyword_arguments_and_strings(capsys, tmp_path):
    path = database(tmp_path)
    info = putJson(capsys, path, 'builtins:sorted', '[3, 1, 2]',
                   'reverse=true', 'key=null')
    assert info['call'] == 'builtins.sorted([3, 1, 2], reverse=True, ' \
                           'key=None)'
    detail = jsonOf(capsys, 'job', info['id'], '--db', fileUri(path),
                    '--json')
    assert detail['args'] == [[3, 1, 2]]
    assert detail['kwargs'] == {'reverse': True, 'key': None}
    # plain words stay strings; a string that looks like JSON or holds
    # "=" is quoted
    info = putJson(capsys, path, 'builtins:print', 'abc', '/tmp/x y',
                   '"x=2"', '"2024-01-01"', 'sep="-"')
    detail = jsonOf(capsys, 'job', info['id'], '--db', fileUri(path),
                    '--json')
    assert detail['args'] == ['abc', '/tmp/x y', 'x=2', '2024-01-01']
    assert detail['kwargs'] == {'sep': '-'}
    # --kw still works, beside NAME=VALUE
    info = putJson(capsys, path, '--kw', 'key=null', 'builtins:sorted',
                   '[1]', 'reverse=false')
    assert info['call'] == 'builtins.sorted([1], reverse=False, key=None)'


@pytest.mark.parametrize('argv, words', [
    (['{"a":', '[1, 2'], ["argument 1 '{\"a\":' is not valid JSON",
                          'quote a string']),
    (['1', '[1, 2'], ["argument 2 '[1, 2' is not valid JSON"]),
    (['1e999'], ['1e999 is not a finite number']),
    (['NaN'], ['NaN is not a number JSON allows']),
    (['[1, -Infinity]'], ['-Infinity is not a number JSON allows']),
    (['2024-01-01'], ["'2024-01-01' is not valid JSON"]),
    (['x=[1,'], ["keyword argument x= '[1,' is not valid JSON"]),
    (['x=1', 'x=2'], ['keyword argument x is given twice']),
    (['x=1', '--kw', 'x=2'], ['keyword argument x is given twice']),
    (['x=1', '2'], ["argument '2' comes after keyword argument(s) x"]),
])
def test_malformed_arguments_are_refused(capsys, tmp_path, argv, words):
    path = database(tmp_path)
    before = lastTransaction(path)
    code, out, err = run(capsys, 'put', '--db', fileUri(path),
                         'builtins:print', *argv)
    assert code == EXIT_USAGE, err
    line = oneLine(err, 'zcasync put')
    for word in words:
        assert word in line
    assert out == ''
    assert lastTransaction(path) == before


def test_results_print_as_json():
    assert showValue(42) == '42'
    assert showValue([1, 'a']) == '[1, "a"]'
    assert json.loads(showValue(float('nan'))) == 'nan'
    assert json.loads(showValue({1, 2})) == '{1, 2}'


def test_put_json_is_one_document_with_the_warning(capsys, tmp_path):
    # the registration in database() is stopped: no worker serves ''
    path = database(tmp_path)
    code, out, err = run(capsys, 'put', '--db', fileUri(path), '--json',
                         'operator:add', '1', '2')
    assert code == EXIT_OK
    info = json.loads(out)
    assert info['status'] == 'pending' and info['existing'] is False
    [warning] = info['warnings']
    assert "no worker runs jobs of queue ''" in warning
    assert 'start a worker with --queue' in warning
    assert err.startswith('zcasync put: warning: no worker runs jobs')


def test_put_warns_when_no_worker_serves_the_queue(capsys, tmp_path):
    path = database(tmp_path)
    code, out, err = run(capsys, 'put', '--db', fileUri(path), '--queue',
                         'reports', '--create-queue', 'operator:add', '1',
                         '2')
    assert code == EXIT_OK
    assert re.match(r'\d+@unnamed$', out.strip())
    assert err.strip() == (
        "zcasync put: warning: no worker runs jobs of queue 'reports' (no "
        'live worker serves it): its jobs wait until one does; start a '
        'worker with --queue reports')
    # a paused queue says so
    run(capsys, 'queue', 'pause', 'reports', '--db', fileUri(path))
    code, out, err = run(capsys, 'put', '--db', fileUri(path), '--queue',
                         'reports', 'operator:add', '1', '2')
    assert "queue 'reports' is paused" in err


def activate(path, uuid=WORKER_UUID, queue='', agent=True):
    """What a live worker would have committed."""
    from zcasync import utils
    from zcasync.interfaces import KEY
    with openDb(path) as (db, conn):
        registration = conn.root()[KEY][queue].dispatchers[uuid]
        registration.activated = registration.last_ping = utils.now()
        if not agent:
            del registration['main']
        conn.transaction_manager.commit()


def test_status_warns_per_queue_about_jobs_nobody_runs(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    run(capsys, 'put', *db, 'operator:add', '1', '2')
    found = jsonOf(capsys, 'status', *db, '--json')
    [warning] = found['warnings']
    assert warning.startswith("1 pending job(s): no worker runs jobs of "
                              "queue ''")
    code, out, err = run(capsys, 'status', *db)
    assert err.startswith('zcasync status: warning: 1 pending job(s)')
    # a live dispatcher without an agent is no help either
    activate(path, agent=False)
    found = jsonOf(capsys, 'status', *db, '--json')
    assert found['queues'][0]['dispatchers']['alive'] == 1
    [warning] = found['warnings']
    assert '1 live dispatcher(s) are registered there, but none has an ' \
           'agent' in warning
    # with an agent the queue is served: no warning
    path2 = database(tmp_path, name='Served.fs')
    run(capsys, 'put', '--db', fileUri(path2), 'operator:add', '1', '2')
    activate(path2)
    found = jsonOf(capsys, 'status', '--db', fileUri(path2), '--json')
    assert found['warnings'] == []
    assert found['queues'][0]['capacity'] == 100


def test_stopped_dispatchers_are_counted_and_can_be_pruned(capsys,
                                                           tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    code, out, err = run(capsys, 'status', *db, terminal=True)
    assert str(WORKER_UUID) not in out
    assert '1 stopped dispatcher registration(s) not shown: --all shows ' \
           'them, "zcasync prune --dispatchers" removes them' in out
    code, out, err = run(capsys, 'status', *db, '--all', terminal=True)
    assert str(WORKER_UUID) in out and 'stopped' in out
    code, out, err = run(capsys, 'prune', *db)
    assert code == EXIT_USAGE
    assert '--older-than DURATION' in oneLine(err, 'zcasync prune')
    found = jsonOf(capsys, 'prune', *db, '--dispatchers', '--json')
    assert found == {'dispatchers': {
        'action': 'prune', 'pruned': [{'queue': '', 'uuid': str(
            WORKER_UUID)}], 'kept': []}}
    assert jsonOf(capsys, 'status', *db, '--json')['dispatchers'] == []


def test_recovery_jobs_are_hidden_unless_asked_for(capsys, tmp_path):
    from zcasync.interfaces import KEY
    from zcasync.job import Job
    from zcasync.web import listing
    path = database(tmp_path)
    with openDb(path) as (db, conn):
        queue = conn.root()[KEY]['']
        mine = queue.put(Job(operator.add, 1, 2))
        # what the registry queues when a run is handed back
        recovery = queue.put(Job(mine.handleInterrupt, 'a-token'))
        conn.transaction_manager.commit()
        ids = [j._p_oid for j in (mine, recovery)]
    import ZODB.utils
    mine_id, recovery_id = ['%d@unnamed' % ZODB.utils.u64(o) for o in ids]
    db = ('--db', fileUri(path))
    found = jsonOf(capsys, 'jobs', *db, '--json')
    assert [j['id'] for j in found['items']] == [mine_id]
    found = jsonOf(capsys, 'jobs', *db, '--json', '--internal')
    assert [(j['id'], j['internal']) for j in found['items']] == [
        (mine_id, False), (recovery_id, True)]
    code, out, err = run(capsys, 'jobs', *db, terminal=True)
    assert recovery_id not in out
    assert '(1 internal recovery job(s) not shown: --internal)' in out
    # the dashboard's lists too
    with openDb(path) as (db_, conn):
        root = conn.root()
        shown = listing.JobQuery(state='pending').run(root)
        assert [j['id'] for j in shown['items']] == [mine_id]
        shown = listing.JobQuery.fromArgs(
            {'state': ['pending'], 'internal': ['1']}).run(root)
        assert [j['id'] for j in shown['items']] == [mine_id, recovery_id]


def test_a_failed_job_is_retried_once(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    code, out, err = run(capsys, 'put', *db, 'math:sqrt', '-1')
    bad = out.strip()
    assert runQueuedJobs(path) == 1
    answer = jsonOf(capsys, 'retry', bad, *db, '--json')
    assert answer['action'] == 'retry' and answer['job'] == bad
    again = answer['new_job']
    before = lastTransaction(path)
    code, out, err = run(capsys, 'retry', bad, *db)
    assert code == EXIT_REFUSED
    assert 'job %s was already retried as job %s; retry that one if it ' \
           'failed too' % (bad, again) in oneLine(err, 'zcasync retry')
    assert lastTransaction(path) == before
    # the original says where it went, in the list and in the job
    [info] = jsonOf(capsys, 'jobs', 'failed', *db, '--json')['items']
    assert (info['id'], info['retried_as']) == (bad, again)
    code, out, err = run(capsys, 'jobs', 'failed', *db)
    assert out.strip().endswith('math.sqrt(-1) [retried as %s]' % again)
    code, out, err = run(capsys, 'job', bad, *db)
    assert 'retried_as:   %s' % again in out


@pytest.mark.parametrize('argv, words', [
    (['put', '--wait', 'abc', 'operator:add'],
     ["argument --wait: invalid number of seconds: 'abc'"]),
    (['put', '--queue', 'nope', 'operator:add'],
     ["no queue 'nope'", '--create-queue']),
    (['schedules', '--queue', 'nope'], ["no queue 'nope'"]),
])
def test_hints_name_the_right_option(capsys, tmp_path, argv, words):
    path = database(tmp_path)
    code, out, err = run(capsys, *argv, '--db', fileUri(path))
    line = oneLine(err, 'zcasync')
    for word in words:
        assert word in line
    if argv[0] != 'put':
        assert '--create-queue' not in line


@pytest.mark.parametrize('name, value, words', [
    ('ZCASYNC_LIMIT', 'abc', ["ZCASYNC_LIMIT='abc' (for --limit): invalid "
                              "integer: 'abc'"]),
    ('ZCASYNC_JSON', 'maybe', ["ZCASYNC_JSON='maybe' (for --json): expected "
                               '1/0']),
])
def test_bad_environment_values_name_the_option(capsys, name, value, words):
    code, out, err = run(capsys, 'jobs', '--db', 'memory://',
                         env={name: value})
    assert code == EXIT_USAGE
    line = oneLine(err, 'zcasync')
    for word in words:
        assert word in line
    assert 'base 10' not in line


def test_wait_without_a_number_takes_the_callable(capsys):
    from zcasync import cli
    args = cli.buildParser({}).parse_args(cli._preprocess(
        ['put', '--db', 'x', '--wait', 'operator:add', '1']))
    assert (args.wait, args.callable, args.args) == (
        float('inf'), 'operator:add', ['1'])
    args = cli.buildParser({}).parse_args(cli._preprocess(
        ['put', '--db', 'x', '--wait', '--json', 'operator:add']))
    assert args.wait == float('inf') and args.json
    args = cli.buildParser({}).parse_args(cli._preprocess(
        ['put', '--db', 'x', '--wait', '2.5', 'operator:add']))
    assert args.wait == 2.5


def test_version(capsys):
    from importlib.metadata import version
    code, out, err = run(capsys, '--version')
    assert code == EXIT_OK
    assert out.strip() == 'zcasync %s (Python %s)' % (
        version('zcasync'), sys.version.split()[0])


def test_import_zcasync_local_as_the_readme_says(tmp_path):
    done = subprocess.run(
        [sys.executable, '-c', 'import zcasync.local\n'
         'from zcasync.local import setLiveAnnotation, getJob\n'
         'import zcasync\n'
         'assert zcasync.local.setLiveAnnotation is setLiveAnnotation\n'
         'try:\n    getJob()\nexcept ValueError as e:\n    print(e)\n'],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert 'only available inside a running job' in done.stdout
