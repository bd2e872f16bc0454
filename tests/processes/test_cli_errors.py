"""Bad input to ``zcasync worker`` and ``zcasync server`` (real processes:
they set up logging and signal handlers): a one-line error on stderr, a
distinct exit code, and nothing changed in the database."""
import re
import socket
import subprocess

import pytest
import ZODB
import ZODB.FileStorage

from tests.processes.conftest import zcasync, childEnvironment, ROOT
from tests.fsutil import lastTransaction  # noqa: F401


def runCommand(*argv):
    done = subprocess.run(zcasync(*argv), cwd=ROOT, env=childEnvironment(),
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines()
             if ': error: ' in line]
    assert len(lines) == 1, done.stderr
    assert re.match(r'zcasync (worker|server): error: ', lines[0]), lines
    assert 'Traceback' not in done.stderr, done.stderr
    return done.returncode, lines[0]


@pytest.fixture
def datafile(tmp_path):
    path = tmp_path / 'Data.fs'
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    db.close()
    return path


def freePort():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('extra, code, words', [
    (['--import', 'no_such_module_xyz'], 5,
     ["cannot import module 'no_such_module_xyz' given to --import"]),
    (['--size', '0'], 2, ['--size must be at least 1']),
    (['--ping-interval', '5', '--ping-death-interval', '2'], 2,
     ['at least twice the ping interval']),
    # one late ping must not be fatal: a death interval just above the ping
    # interval is refused too
    (['--ping-interval', '30', '--ping-death-interval', '45'], 2,
     ['--ping-interval 30 / --ping-death-interval 45',
      'at least twice the ping interval']),
    (['--poll-interval', 'often'], 2, ['invalid number of seconds']),
    (['--log-level', 'LOUD'], 2, ['invalid log level']),
])
def test_worker_bad_options(tmp_path, datafile, extra, code, words):
    before = lastTransaction(datafile)
    returncode, line = runCommand(
        'worker', '--db', 'file://%s' % datafile, '--uuid-file',
        tmp_path / 'w.uuid', *extra)
    assert returncode == code
    for word in words:
        assert word in line
    assert lastTransaction(datafile) == before


def test_worker_bad_uuid_file(tmp_path, datafile):
    bad = tmp_path / 'bad.uuid'
    bad.write_text('not a uuid\n')
    before = lastTransaction(datafile)
    returncode, line = runCommand('worker', '--db', 'file://%s' % datafile,
                                  '--uuid-file', bad)
    assert returncode == 2
    assert 'UUID file %s given by --uuid-file does not start with a UUID' \
        % bad in line
    assert 'give --uuid-file another path' in line
    assert 'ZC_ASYNC_UUID' not in line  # the user gave --uuid-file
    assert lastTransaction(datafile) == before


@pytest.mark.parametrize('extra, code', [
    (['--import', 'no_such_module_xyz'], 5),
    (['--db', 'zeo://127.0.0.1:1', '--connect-timeout', '0'], 4),
    (['--db', 'nonsense'], 3),
])
def test_a_worker_that_fails_to_start_creates_no_uuid_file(
        tmp_path, datafile, extra, code):
    path = tmp_path / 'new' / 'dir' / 'w.uuid'
    returncode, line = runCommand('worker', '--db', 'file://%s' % datafile,
                                  '--uuid-file', path, *extra)
    assert returncode == code
    assert not (tmp_path / 'new').exists()


def test_worker_unreachable_server_and_unknown_scheme(tmp_path):
    returncode, line = runCommand(
        'worker', '--db', 'zeo://127.0.0.1:%d' % freePort(),
        '--connect-timeout', '0.5', '--uuid-file', tmp_path / 'w.uuid')
    assert returncode == 4
    assert 'cannot reach the ZEO server' in line
    returncode, line = runCommand('worker', '--db', 'zoe://127.0.0.1:1',
                                  '--uuid-file', tmp_path / 'w.uuid')
    assert returncode == 3
    assert "unknown database URI scheme 'zoe://'" in line


def test_server_bad_input(tmp_path, datafile):
    returncode, line = runCommand('server', '--db', 'zeo://127.0.0.1:1')
    assert returncode == 3
    assert 'serves a FileStorage' in line
    returncode, line = runCommand('server', '--db', 'file://%s' % datafile,
                                  '--address', 'nowhere')
    assert returncode == 2
    assert "--address 'nowhere' is not HOST:PORT" in line
    returncode, line = runCommand(
        'server', '--db', 'file://%s' % (tmp_path / 'no' / 'Data.fs'))
    assert returncode == 4
    assert 'does not exist' in line
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        before = lastTransaction(datafile)
        returncode, line = runCommand(
            'server', '--db', 'file://%s' % datafile, '--address',
            '127.0.0.1:%d' % listener.getsockname()[1])
    finally:
        listener.close()
    assert returncode == 10
    assert 'cannot listen on 127.0.0.1:' in line
    assert lastTransaction(datafile) == before
