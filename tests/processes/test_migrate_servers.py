"""``zcasync migrate`` on a zc.async database served by ZEO and by
RelStorage on PostgreSQL, then a ``zcasync worker`` process running its
due jobs."""
import os
import shutil

import pytest
import ZODB.FileStorage
import ZODB.utils

from zcasync.interfaces import COMPLETED

from tests.processes.conftest import (
    Client, Unavailable, ZEOServer, throwawayPostgres, waitFor, zcasync)
from tests.legacydb import copyFixture, legacyApp, manifest

#: jobs that a worker runs at once after the migration (the others wait
#: for the dead dispatcher's death interval, its quota, or 2035)
QUICK = ('pending_send_email', 'pending_builtin_mul', 'pending_callbacks',
         'pending_callbacks.callbacks[0].success', 'pending_retry_policy',
         'reports_pending_method', 'reports_pending_send_email')


@pytest.fixture(params=['zeo', 'postgres'])
def legacy(request, processes, tmp_path, monkeypatch):
    """(URI of a server holding the zc.async fixture, fixture copy)."""
    copy = copyFixture(tmp_path / 'fixture')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(copy)] + [p for p in os.environ.get('PYTHONPATH', '').split(
            os.pathsep) if p]))
    if request.param == 'zeo':
        shutil.copy(copy / 'Data.fs', tmp_path / 'Data.fs')
        server = ZEOServer(processes, tmp_path)
        yield server.uri, copy
        processes.stopAll()
        return
    try:
        databases = throwawayPostgres('zcasync_migrate')
        uri = databases.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        from zcasync.cli import db as cli_db
        factory, dbkw = cli_db.resolve(uri)
        storage = factory()
        source = ZODB.FileStorage.FileStorage(str(copy / 'Data.fs'),
                                              read_only=True)
        storage.copyTransactionsFrom(source)
        source.close()
        storage.close()
        yield uri, copy
        processes.stopAll()
    finally:
        databases.__exit__(None, None, None)


def _run(processes, name, *argv, timeout=120):
    process = processes.start(name, zcasync(*argv))
    code = process.wait(timeout)
    return code, process.text()


def test_migrate_on_a_server_then_run(legacy, processes):
    uri, copy = legacy
    code, text = _run(processes, 'dry-run', 'migrate', '--db', uri,
                      '--import', 'legacyapp.tasks', '--dry-run')
    assert code == 0 and 'dry run: nothing was changed' in text, text
    code, text = _run(processes, 'migrate', 'migrate', '--db', uri,
                      '--import', 'legacyapp.tasks', '--batch', '7')
    assert code == 0 and 'done: the database holds zcasync data' in text, \
        text
    code, text = _run(processes, 'again', 'migrate', '--db', uri)
    assert code == 0 and 'nothing to do' in text, text
    processes.worker('w1', uri, None, '--queue', '', '--queue', 'reports',
                     '--import', 'legacyapp.tasks')
    entries = {e['label']: e for e in manifest(copy)['jobs']}
    oids = [ZODB.utils.p64(entries[label]['oid']) for label in QUICK]
    client = Client(uri)
    try:
        waitFor(lambda: client.completed(oids), 60, 'the due jobs to run')
        with legacyApp(copy):
            import legacyapp.tasks
            job = client.job(oids[0])
            assert job.result == legacyapp.tasks.send_email(
                'alice@example.com', subject='Welcome', body='Hello Alice')
            assert client.job(oids[1]).result == 42
            assert client.job(oids[3]).result == legacyapp.tasks.send_receipt(
                client.job(oids[2]).result)
            assert client.job(oids[5]).result == \
                'Sales report for monthly 2011'
            future = client.job(ZODB.utils.p64(
                entries['pending_future']['oid']))
            assert future.status != COMPLETED
    finally:
        client.close()
