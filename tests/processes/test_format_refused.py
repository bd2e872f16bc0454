"""A database whose zcasync format is newer than this code's: the worker
and the dashboard commands refuse it with one line and exit code 11, and
write nothing (real processes)."""
import subprocess

import pytest
import transaction
import ZODB
import ZODB.FileStorage

from tests.fsutil import lastTransaction
from tests.processes.conftest import zcasync, childEnvironment, ROOT
from zcasync import stable


@pytest.fixture
def newer(tmp_path):
    path = tmp_path / 'Data.fs'
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    conn = db.open()
    conn.root()[stable.FORMAT_KEY] = stable.FORMAT_VERSION + 1
    transaction.commit()
    conn.close()
    db.close()
    return path


@pytest.mark.parametrize('command, extra', [
    ('worker', ['--uuid-file', 'w.uuid']),
    ('dashboard', ['--address', '127.0.0.1:0']),
])
def test_a_newer_format_is_refused_in_one_line(tmp_path, newer, command,
                                                extra):
    before = lastTransaction(newer)
    done = subprocess.run(
        zcasync(command, '--db', 'file://%s' % newer,
                *[str(tmp_path / e) if e.endswith('.uuid') else e
                  for e in extra]),
        cwd=ROOT, env=childEnvironment(), capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 11, done.stderr
    errors = [line for line in done.stderr.splitlines() if 'error' in line]
    assert errors == [
        'zcasync %s: error: this database has zcasync format %d, newer than '
        'the %d this zcasync reads; upgrade zcasync in this process' % (
            command, stable.FORMAT_VERSION + 1, stable.FORMAT_VERSION)], \
        done.stderr
    assert 'Traceback' not in done.stderr
    assert lastTransaction(newer) == before
    assert not (tmp_path / 'w.uuid').exists()
