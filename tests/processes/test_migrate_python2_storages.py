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
    counts = python2.migrateStage(uri, report, True)
    assert counts['dry_run'] and counts['python2_records'] == len(before)
    assert report.lines[0].startswith('would convert %d of %d'
                                      % (len(before), len(before)))
    assert _records(uri) == before
    counts = python2.migrateStage(uri, Report(), False)
    assert counts['python2_records'] == len(before)
    assert counts['failure_parents'] == 2 and counts['transactions'] == 1
    assertSameForm(_walk(uri), walk.walkFileStorage(
        str(fixtureDir(PY3) / 'Data.fs')))
    report = Report()
    again = python2.migrateStage(uri, report, False)
    assert again['python2_records'] == again['transactions'] == 0
    assert report.lines[0].startswith('nothing to convert')


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
