"""The zcasync command in-process: parsing, environment variables, help,
and the one-line errors with their exit codes (bad URIs, unreachable or
locked databases, bad job ids) -- each leaving the database unchanged.

Job commands are exercised in test_cli_jobs.py; worker and server errors
(they configure logging and signals, so they run as subprocesses) in
test_cli_processes.py.  Shared helpers: test_cli_support.py.
"""
import re
import socket
import subprocess
import sys

import pytest

from zcasync import cli
from zcasync.cli.common import (
    EXIT_OK, EXIT_USAGE, EXIT_URI, EXIT_UNAVAILABLE, EXIT_NOT_FOUND,
    formatJobId, parseJobId, CommandError)

from test_cli_support import (
    run, database, lastTransaction, fileUri, freePort)


def oneLine(err, prog='zcasync'):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r'zcasync( \w+)?: error: ', lines[0]), err
    assert lines[0].startswith(prog), err
    return lines[0]


def test_help_lists_commands_examples_env_and_exit_codes(capsys):
    code, out, err = run(capsys, '--help')
    assert code == EXIT_OK
    for word in ('worker', 'server', 'put', 'status', 'jobs', 'job',
                 'cancel', 'retry', 'examples:', 'exit codes:',
                 'zeo://', 'postgres://'):
        assert word in out
    code, out, err = run(capsys, 'worker', '--help')
    assert code == EXIT_OK
    text = ' '.join(out.split())
    assert '[env ZCASYNC_POLL_INTERVAL]' in text
    assert '[env ZCASYNC_UUID_FILE]' in text


def test_python_dash_m_runs_the_command(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'zcasync', 'status',
                           '--db', 'nonsense'], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == EXIT_URI
    oneLine(done.stderr, 'zcasync status')
    assert list(tmp_path.iterdir()) == []  # no uuid.txt left behind


def test_no_command_and_unknown_option_are_usage_errors(capsys):
    code, out, err = run(capsys)
    assert code == EXIT_USAGE
    assert 'choose a command' in oneLine(err)
    code, out, err = run(capsys, 'status', '--db', 'memory://', '--bogus')
    assert code == EXIT_USAGE
    assert '--bogus' in oneLine(err)
    code, out, err = run(capsys, 'status')
    assert code == EXIT_USAGE
    assert '--db' in oneLine(err)


def test_options_come_from_the_environment_and_the_command_line_wins():
    env = {'ZCASYNC_DB': 'zeo://h:1', 'ZCASYNC_QUEUE': 'a,b',
           'ZCASYNC_POLL_INTERVAL': '0.25', 'ZCASYNC_GRACE': '7',
           'ZCASYNC_IMPORT': 'x.y', 'ZCASYNC_LOG_LEVEL': 'debug'}
    args = cli.buildParser(env).parse_args(['worker'])
    assert args.db == 'zeo://h:1'
    assert args.queue == ['a', 'b']
    assert args.poll_interval == 0.25
    assert args.grace == 7.0
    assert args.imports == ['x.y']
    assert args.log_level == 10
    args = cli.buildParser(env).parse_args(
        ['worker', '--db', 'memory://', '--poll-interval', '2'])
    assert args.db == 'memory://'
    assert args.poll_interval == 2.0
    args = cli.buildParser({'ZCASYNC_JSON': 'yes'}).parse_args(
        ['status', '--db', 'memory://'])
    assert args.json is True


@pytest.mark.parametrize('name, value, word', [
    ('ZCASYNC_LIMIT', 'many', 'ZCASYNC_LIMIT'),
    ('ZCASYNC_JSON', 'maybe', 'ZCASYNC_JSON'),
    ('ZCASYNC_CONNECT_TIMEOUT', '-1', 'ZCASYNC_CONNECT_TIMEOUT'),
])
def test_bad_environment_values_are_one_line_errors(capsys, name, value,
                                                     word):
    code, out, err = run(capsys, 'jobs', '--db', 'memory://',
                         env={name: value})
    assert code == EXIT_USAGE
    assert word in oneLine(err)


@pytest.mark.parametrize('uri, words', [
    ('foo://somewhere/x', ["unknown database URI scheme 'foo://'",
                           'file', 'zeo']),
    ('Data.fs', ['not a database URI']),
    ('file:///tmp/x.fs?bogus=1', ['unknown option(s) bogus']),
    ('file:///tmp/x.fs?connection_pool_size=many', ['not an integer']),
])
def test_bad_uris_exit_3(capsys, uri, words):
    code, out, err = run(capsys, 'status', '--db', uri)
    assert code == EXIT_URI
    line = oneLine(err, 'zcasync status')
    for word in words:
        assert word in line


def test_unreachable_zeo_server_exits_4_quickly(capsys):
    port = freePort()
    code, out, err = run(capsys, 'jobs', '--db', 'zeo://127.0.0.1:%d' % port,
                         '--connect-timeout', '0.3')
    assert code == EXIT_UNAVAILABLE
    line = oneLine(err, 'zcasync jobs')
    assert 'cannot reach the ZEO server at 127.0.0.1:%d' % port in line
    assert 'zcasync server' in line


def test_unreachable_postgres_server_exits_4(capsys):
    port = freePort()
    code, out, err = run(
        capsys, 'status', '--db',
        'postgres://postgres@127.0.0.1:%d/nothing' % port,
        '--connect-timeout', '0')
    assert code == EXIT_UNAVAILABLE
    assert 'cannot reach the PostgreSQL server' in oneLine(
        err, 'zcasync status')


def test_missing_file_is_not_created_by_read_commands(capsys, tmp_path):
    path = tmp_path / 'missing.fs'
    for command in (['status'], ['jobs'], ['job', '1'], ['cancel', '1']):
        code, out, err = run(capsys, *command, '--db', fileUri(path))
        assert code == EXIT_UNAVAILABLE
        assert 'no database file at' in oneLine(err)
    assert list(tmp_path.iterdir()) == []


def test_a_locked_file_storage_is_a_clear_error(capsys, tmp_path):
    import ZODB.FileStorage
    path = tmp_path / 'Data.fs'
    storage = ZODB.FileStorage.FileStorage(str(path))
    try:
        code, out, err = run(capsys, 'status', '--db', fileUri(path))
    finally:
        storage.close()
    assert code == EXIT_UNAVAILABLE
    line = oneLine(err, 'zcasync status')
    assert 'locked by another process' in line
    assert 'zcasync server' in line


def test_status_of_a_database_without_queues(capsys, tmp_path):
    path = database(tmp_path, queue=False)
    before = lastTransaction(path)
    code, out, err = run(capsys, 'status', '--db', fileUri(path),
                         terminal=True)
    assert code == EXIT_OK
    assert 'no zcasync queues' in out
    code, out, err = run(capsys, 'status', '--db', fileUri(path))
    assert (code, out) == (EXIT_OK, '')  # piped: no data, no text
    code, out, err = run(capsys, 'status', '--db', fileUri(path), '--json')
    assert code == EXIT_OK
    assert '"queues": []' in out
    assert lastTransaction(path) == before


@pytest.mark.parametrize('ident, code_, words', [
    ('999999', EXIT_NOT_FOUND, ['no job 999999']),
    ('0', EXIT_NOT_FOUND, ['is a PersistentMapping, not a job']),
    ('abc', EXIT_USAGE, ["job id 'abc' is not valid"]),
    ('-3', EXIT_USAGE, ['is not valid']),
    ('1@otherdb', EXIT_NOT_FOUND, ["database 'otherdb'"]),
    ('99999999999999999999999', EXIT_NOT_FOUND, ['no job']),
])
def test_unknown_job_ids(capsys, tmp_path, ident, code_, words):
    path = database(tmp_path)
    before = lastTransaction(path)
    for command in ('job', 'cancel', 'retry'):
        code, out, err = run(capsys, command, ident, '--db', fileUri(path))
        assert code == code_, err
        line = oneLine(err)
        for word in words:
            assert word in line
    assert lastTransaction(path) == before


def test_job_ids_round_trip():
    assert parseJobId('42') == (42, None)
    assert parseJobId('42@unnamed') == (42, 'unnamed')
    with pytest.raises(CommandError):
        parseJobId('')

    class Jar:
        def db(self):
            return self

        database_name = 'main'

    class Stored:
        _p_oid = b'\0' * 7 + b'\x2a'
        _p_jar = Jar()
    assert formatJobId(Stored()) == '42@main'


def test_an_unexpected_error_is_one_line_with_a_hint(capsys, monkeypatch):
    from zcasync.cli import status

    def broken(args):
        raise RuntimeError('something odd\nsecond line')
    monkeypatch.setattr(status, 'runStatus', broken)
    code, out, err = run(capsys, 'status', '--db', 'memory://')
    assert code == 70
    line = oneLine(err, 'zcasync status')
    assert 'RuntimeError: something odd' in line
    assert 'ZCASYNC_TRACEBACK=1' in line


def test_a_busy_port_is_detected_as_reachable():
    # the reachability check itself: a listening socket counts
    from zcasync.cli import db as cli_db
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        cli_db.waitForServer('zeo://127.0.0.1:%d' % listener.getsockname()[1],
                             1)
    finally:
        listener.close()
