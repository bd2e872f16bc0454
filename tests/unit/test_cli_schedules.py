"""zcasync put --priority/--unique/--kw, schedules, queue pause|resume and
prune (issue 14) on a FileStorage, in process; bad input gives a one-line
error and changes nothing."""
import datetime
import json

import pytest

from zcasync import utils
from zcasync.cli.common import EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND
from zcasync.interfaces import KEY

from test_cli_support import (
    run, database, fileUri, lastTransaction, runQueuedJobs, openDb)


def ok(capsys, *argv, terminal=False):
    code, out, err = run(capsys, *argv, terminal=terminal)
    assert code == EXIT_OK, err
    return out


def refused(capsys, path, code, text, *argv):
    before = lastTransaction(path)
    got, out, err = run(capsys, *argv)
    assert got == code, (out, err)
    assert text in err and len(err.strip().splitlines()) == 1, err
    assert lastTransaction(path) == before  # nothing changed


def queueOf(path, reader):
    with openDb(path) as (db, conn):
        return reader(conn.root()[KEY][''])


def test_put_priority_unique_and_keywords(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    low = ok(capsys, 'put', *db, 'builtins:max', '1', '2').strip()
    high = ok(capsys, 'put', *db, '--priority', '5', '--unique', 'r-42',
              '--kw', 'default=7', 'builtins:max', '[]').strip()
    again = run(capsys, 'put', *db, '--unique', 'r-42', 'builtins:max', '3')
    assert again[0] == EXIT_OK and again[1].strip() == high
    assert 'held by job %s' % high in again[2]
    info = json.loads(ok(capsys, 'job', high, *db, '--json'))
    assert info['priority'] == 5 and info['unique_key'] == 'r-42'
    assert info['call'] == 'builtins.max([], default=7)'
    assert queueOf(path, lambda q: [j.args[0] for j in q]) == [[], 1]
    assert runQueuedJobs(path) == 2
    # the key is free again once the job completed
    third = ok(capsys, 'put', *db, '--unique', 'r-42', 'builtins:max',
               '[1]').strip()
    assert third != high


@pytest.mark.parametrize('argv, text', [
    (['--kw', 'n={bad'], 'is not valid JSON'),
    (['--kw', 'n=abc'], 'is not valid JSON'),
    (['--kw', 'not an identifier=1'], 'NAME=JSON'),
    (['--kw', 'n=1', '--kw', 'n=2'], 'given twice'),
    (['--priority', '1.5'], 'invalid integer'),
    (['--priority', str(2 ** 40)], 'out of range'),
    (['--unique-for', '10m'], '--unique-for goes with --unique'),
    (['--unique', 'k', '--unique-for', 'soon'], 'not a duration'),
])
def test_put_bad_options(capsys, tmp_path, argv, text):
    path = database(tmp_path)
    refused(capsys, path, EXIT_USAGE, text, 'put', '--db', fileUri(path),
            *argv, 'builtins:max', '1')


def test_schedules_add_list_pause_resume_remove(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    assert 'no schedules' in ok(capsys, 'schedules', *db, terminal=True)
    assert ok(capsys, 'schedules', *db) == ''  # piped: no rows, no text
    line = ok(capsys, 'schedules', 'add', 'nightly', 'builtins:max', '1',
              '2', '--cron', '30 2 * * *', '--timezone', 'Europe/Berlin',
              '--catch-up', *db)
    assert line.startswith('nightly\t') and 'Europe/Berlin' in line
    ok(capsys, 'schedules', 'add', 'beat', 'builtins:max', '[3]', '--every',
       '5m', '--kw', 'default=0', *db)
    found = json.loads(ok(capsys, 'schedules', *db, '--json'))
    assert found['queue'] == ''
    listed = found['items']
    assert [s['name'] for s in listed] == ['beat', 'nightly']
    beat, nightly = listed
    assert beat['every'] == 300.0 and beat['call'] == \
        'builtins.max([3], default=0)'
    assert nightly['catch_up'] and nightly['cron'] == '30 2 * * *'
    assert len(nightly['next_runs']) == 3
    first = datetime.datetime.fromisoformat(nightly['next_runs'][0])
    assert first > utils.now() and first.minute == 30
    table = ok(capsys, 'schedules', *db, terminal=True).splitlines()
    assert table[0].split() == ['NAME', 'WHEN', 'FIRED', 'NEXT', 'RUN',
                                '(UTC)', 'CALL']
    assert table[1].split()[:4] == ['beat', 'every', '300', 's']
    ok(capsys, 'schedules', 'pause', 'beat', *db)
    assert queueOf(path, lambda q: q.schedules['beat'].paused)
    ok(capsys, 'schedules', 'resume', 'beat', *db)
    assert not queueOf(path, lambda q: q.schedules['beat'].paused)
    assert 'removed' in ok(capsys, 'schedules', 'remove', 'beat', *db)
    assert queueOf(path, lambda q: list(q.schedules)) == ['nightly']


@pytest.mark.parametrize('argv, code, text', [
    (['add', 'x', 'builtins:max', '--cron', '61 * * * *'], EXIT_USAGE,
     'invalid cron expression'),
    (['add', 'x', 'builtins:max', '--cron', '* * * * *', '--timezone',
      'Mars/Olympus'], EXIT_USAGE, 'unknown time zone'),
    (['add', 'x', 'builtins:max'], EXIT_USAGE, 'either --cron'),
    (['add', 'x', 'builtins:max', '--cron', '* * * * *', '--every', '1m'],
     EXIT_USAGE, 'either --cron'),
    (['add', 'x', 'builtins:max', '--every', 'often'], EXIT_USAGE,
     'not a duration'),
    (['add', 'x', 'builtins:max', '--every', '1m', '--kw', 'cron=1'],
     EXIT_USAGE, 'option of the schedule'),
    (['add', 'x'], EXIT_USAGE, 'needs the function'),
    (['pause'], EXIT_USAGE, 'needs a schedule NAME'),
    (['pause', 'nope'], EXIT_NOT_FOUND, "no schedule 'nope'"),
    (['remove', 'x', '--cron', '* * * * *'], EXIT_USAGE, '--cron only'),
])
def test_schedules_bad_input(capsys, tmp_path, argv, code, text):
    path = database(tmp_path)
    refused(capsys, path, code, text, 'schedules', '--db', fileUri(path),
            *argv)


def test_queue_pause_and_resume(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    ok(capsys, 'put', *db, 'builtins:max', '1', '2')
    assert 'paused' in ok(capsys, 'queue', 'pause', '', *db)
    assert 'PAUSED' in ok(capsys, 'status', *db)
    assert json.loads(ok(capsys, 'status', *db, '--json'))['queues'][0][
        'paused'] is True
    assert runQueuedJobs(path) == 0
    assert json.loads(ok(capsys, 'queue', 'resume', *db, '--json')) == {
        'queue': '', 'paused': False, 'pending': 1}
    assert runQueuedJobs(path) == 1
    refused(capsys, path, EXIT_NOT_FOUND, "no queue 'nope'", 'queue',
            'pause', 'nope', *db)
    refused(capsys, path, EXIT_USAGE, 'invalid choice', 'queue', 'stop',
            *db)


def test_prune_removes_old_completed_jobs_in_batches(capsys, tmp_path):
    path = database(tmp_path)
    db = ('--db', fileUri(path))
    start = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    clock = lambda: start  # noqa: E731
    utils.setClock(clock)
    try:
        for i in range(5):
            ok(capsys, 'put', *db, 'builtins:max', '[%d]' % i)
        ok(capsys, 'put', *db, 'builtins:max', '[]')  # fails
        assert runQueuedJobs(path) == 6
        start += datetime.timedelta(days=4)
        ok(capsys, 'put', *db, 'builtins:max', '[9]')
        assert runQueuedJobs(path) == 1
        result = json.loads(ok(capsys, 'prune', '--older-than', '3d',
                               '--batch', '2', *db, '--json'))
        assert result['removed'] == 5
        completed = queueOf(path, lambda q: [
            j.args[0] for a in q.dispatchers.values() for g in a.values()
            for j in g.completed])
        assert sorted(completed) == [[], [9]]  # failed and recent kept
        assert 'removed 1 ' in ok(capsys, 'prune', '--older-than', '3d',
                                  '--failed-too', *db)
    finally:
        utils.setClock(None)
