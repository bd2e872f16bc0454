"""The Python 2 stage (zcasync.migrate.python2) on databases Python 3 opens
through a server: RelStorage on PostgreSQL holding the Python 2 fixture's
records as they were written, and a ZEO server on a Python 2 file whose
magic was already rewritten (what an interrupted zodbupdate run leaves).
After the stage their records have the Python 3 fixture's form."""
import shutil

from zcasync.cli import db as cli_db
from zcasync.migrate import python2, walk

from tests.integration.test_migrate_python2 import (
    PY2, PY3, assertSameForm, fixtureDir)
from tests.processes.conftest import ZEOServer


class Report:
    def __init__(self):
        self.lines = []

    def line(self, text=''):
        self.lines.append(text)


def _records(uri):
    factory, _keywords = cli_db.resolve(uri)
    storage = factory()
    try:
        return {oid: data for oid, _tid, data in walk.currentRecords(storage)}
    finally:
        storage.close()


def _walk(uri):
    factory, _keywords = cli_db.resolve(uri)
    storage = factory()
    try:
        return walk.walkStorage(storage)
    finally:
        storage.close()


def _checkStage(uri):
    before = _records(uri)
    assert sum(walk.isPython2Record(d) for d in before.values()) == len(
        before)
    report = Report()
    # a dry run cannot show the later stages a converted server database
    assert python2.migrateStage(uri, report, True) is None
    assert report.lines[0].startswith('would convert %d of %d'
                                      % (len(before), len(before)))
    assert _records(uri) == before
    report = Report()
    assert python2.migrateStage(uri, report, False) == uri
    assert report.lines[0].startswith('converting %d of %d'
                                      % (len(before), len(before)))
    assert '  stored Failures given Python 3 type names: 2' in report.lines
    assert 'committed 1 transaction(s)' in report.lines
    assertSameForm(_walk(uri), walk.walkFileStorage(
        str(fixtureDir(PY3) / 'Data.fs')))
    converted = _records(uri)
    report = Report()
    assert python2.migrateStage(uri, report, True) == uri
    assert python2.migrateStage(uri, report, False) == uri
    assert report.lines[0].startswith('nothing to convert')
    assert _records(uri) == converted


def test_relstorage_holding_python2_records(postgres):
    factory, _keywords = cli_db.resolve(postgres)
    storage = factory()
    try:
        with walk.openFileStorageReadOnly(
                str(fixtureDir(PY2) / 'Data.fs')) as source:
            storage.copyTransactionsFrom(source)
    finally:
        storage.close()
    _checkStage(postgres)


def test_zeo_server_on_a_python2_file_with_the_new_magic(processes,
                                                          tmp_path):
    path = tmp_path / 'Data.fs'
    shutil.copyfile(fixtureDir(PY2) / 'Data.fs', path)
    path.chmod(0o644)
    with open(path, 'r+b') as f:
        f.write(walk.MAGIC_PY3)
    server = ZEOServer(processes, tmp_path)
    try:
        _checkStage(server.uri)
    finally:
        processes.stopAll()
