"""``zcasync migrate`` on copies of the zc.async 1.5 fixture: the report,
dry runs, interruptions and resumption, a second run, bad input."""
import collections
import datetime
import sys
import types

import persistent
import persistent.mapping
import pytest
import transaction
import ZODB
import ZODB.FileStorage

from zcasync import interfaces
from zcasync import stable
from zcasync.cli import buildParser
from zcasync.cli.common import EXIT_FORMAT, EXIT_UNAVAILABLE, EXIT_URI
from zcasync.cli.migrate import runMigrate
from zcasync.migrate import pipeline

from tests.fsutil import lastTransaction
from tests.legacydb import (
    copyFixture, fileURI, legacyApp, manifest, runCommand)


@pytest.fixture
def fixture(tmp_path):
    copy = copyFixture(tmp_path)
    with legacyApp(copy):
        yield copy


def _migrate(copy, *extra):
    return runCommand('migrate', '--db', fileURI(copy), '--import',
                      'legacyapp.tasks', *extra)


def _open(copy):
    return ZODB.DB(ZODB.FileStorage.FileStorage(str(copy / 'Data.fs')))


class Interrupted(Exception):
    pass


def _interruptAfter(count):
    """An on_batch hook that fails the migration after `count` batches;
    returns (hook, list of the stages of the batches done)."""
    done = []

    def hook(stage):
        done.append(stage)
        if len(done) >= count:
            raise Interrupted('after %d batches' % count)
    return hook, done


def _runWithHook(copy, hook, batch=3):
    args = buildParser({}).parse_args([
        'migrate', '--db', fileURI(copy), '--import', 'legacyapp.tasks',
        '--batch', str(batch)])
    return runMigrate(args, on_batch=hook)


def _snapshot(copy):
    """What a migrated database holds, by oid: each queue's pending jobs
    in claim order, each agent's held and completed jobs, and each
    job's status, result and annotations."""
    db = _open(copy)
    try:
        conn = db.open()
        root = conn.root()
        found = {'format': stable.formatOf(root),
                 'migration': stable.MIGRATION_KEY in root}
        for name, queue in root[interfaces.KEY].items():
            found[name] = [job._p_oid for job in queue]
            for uuid, agents in queue.dispatchers.items():
                for agent_name, agent in agents.items():
                    found[name, str(uuid), agent_name] = (
                        [j._p_oid for j in agent],
                        [j._p_oid for j in agent.completed])
            found[name, 'quotas'] = {
                n: [j._p_oid for j in q] for n, q in queue.quotas.items()}
        for entry in manifest(copy)['jobs']:
            job = conn.get(entry['oid'].to_bytes(8, 'big'))
            found[entry['label']] = (
                type(job).__name__, job.status, repr(job.result),
                dict(job.peekAnnotations()), len(job.callbacks))
        conn.close()
        return found
    finally:
        db.close()


def _statusCounts(copy):
    """zc.async's job states in the manifest, as the survey names them."""
    names = {'pending-status': 'pending', 'active-status': 'active',
             'new-status': 'new', 'completed-status': 'completed'}
    counts = collections.Counter()
    for entry in manifest(copy)['jobs']:
        status = names[entry['status']]
        if status == 'completed' and entry['result']['kind'] == 'failure':
            status = 'failed'
        counts[status] += 1
    return counts


# -- the report and the dry run ------------------------------------------------

def test_dry_run_reports_and_changes_nothing(fixture):
    before = (fixture / 'Data.fs').read_bytes()
    tid = lastTransaction(fixture / 'Data.fs')
    files = sorted(p.name for p in fixture.iterdir())
    code, out, err = _migrate(fixture, '--dry-run')
    assert (code, err) == (0, '')
    assert (fixture / 'Data.fs').read_bytes() == before
    assert lastTransaction(fixture / 'Data.fs') == tid
    assert sorted(p.name for p in fixture.iterdir()) == files  # no .index
    lines = out.splitlines()
    assert 'dry run: nothing was changed' in lines[-1]
    jobs = len(manifest(fixture)['jobs'])
    assert any(line.split() == ['zc.async.job.Job', str(jobs)]
               for line in lines)
    for status, count in _statusCounts(fixture).items():
        assert any(line.split()[:1] == [status] and
                   line.split()[-1] == str(count) for line in lines), status


def test_migrate_then_nothing_to_do(fixture):
    code, out, err = _migrate(fixture)
    assert (code, err) == (0, ''), out
    assert 'done: the database holds zcasync data (format %d)' % (
        stable.FORMAT_VERSION) in out
    snapshot = _snapshot(fixture)
    assert snapshot['format'] == stable.FORMAT_VERSION
    assert not snapshot['migration']
    tid = lastTransaction(fixture / 'Data.fs')
    code, out, err = _migrate(fixture)
    assert (code, err) == (0, '')
    assert out.splitlines()[-1].startswith('nothing to do')
    assert lastTransaction(fixture / 'Data.fs') == tid
    assert _snapshot(fixture) == snapshot


def test_pending_jobs_keep_their_order_and_places(fixture):
    assert _migrate(fixture)[0] == 0
    data = manifest(fixture)
    snapshot = _snapshot(fixture)
    labels = {e['label']: e['oid'].to_bytes(8, 'big') for e in data['jobs']}
    for queue in data['queues']:
        assert snapshot[queue['name']] == [
            labels[label] for label in queue['job_labels_in_claim_order']]
        for registration in queue['dispatchers']:
            for agent in registration['agents']:
                held, completed = snapshot[
                    queue['name'], registration['uuid'], agent['name']]
                assert held == [labels[x] for x in agent['active_jobs']]
                assert completed == [
                    labels[x] for x in agent['completed_jobs_newest_first']]
        for quota in queue['quotas']:
            assert snapshot[queue['name'], 'quotas'][quota['name']] == [
                labels[x] for x in quota['jobs']]


# -- interruptions -----------------------------------------------------------

def test_interrupted_migration_resumes(tmp_path):
    """Interrupted after each number of batches in turn (every stage is
    hit), then run again: the same database as an uninterrupted run."""
    reference = copyFixture(tmp_path / 'reference')
    with legacyApp(reference):
        hook, done = _interruptAfter(10 ** 6)
        assert _runWithHook(reference, hook) == 0
        expected = _snapshot(reference)
    stages = list(dict.fromkeys(done))
    assert stages == ['rename', 'jobs', 'queues', 'pending', 'completed']
    # one interruption at the first batch of each stage, one mid-stage
    points = sorted({done.index(s) + 1 for s in stages} | {2, len(done)})
    for point in points:
        copy = copyFixture(tmp_path / ('run%d' % point))
        with legacyApp(copy):
            hook, _ = _interruptAfter(point)
            with pytest.raises(Interrupted):
                _runWithHook(copy, hook)
            db = _open(copy)
            conn = db.open()
            with pytest.raises(interfaces.DatabaseFormatError) as info:
                stable.checkFormat(conn.root())
            assert 'zcasync migrate --db URI' in str(info.value)
            conn.close()
            db.close()
            code, out, err = _migrate(copy)
            assert (code, err) == (0, ''), (point, out)
            assert 'resuming the migration' in out
            assert _snapshot(copy) == expected, point


def test_interrupted_by_a_storage_error_mid_batch(fixture, monkeypatch):
    """A failure inside a batch (not between batches) loses that batch's
    transaction only."""
    from zcasync.migrate import converters
    calls = []
    original = converters.convertJob

    def failing(job, problems):
        calls.append(job)
        if len(calls) == 5:
            raise OSError('disk full')
        return original(job, problems)
    monkeypatch.setattr(converters, 'convertJob', failing)
    with pytest.raises(OSError):
        _runWithHook(fixture, None)
    monkeypatch.setattr(converters, 'convertJob', original)
    assert _migrate(fixture)[0] == 0
    assert _snapshot(fixture)['format'] == stable.FORMAT_VERSION


# -- refusals and bad input ------------------------------------------------------

def test_unmigrated_database_refused_with_one_line(fixture):
    db = _open(fixture)
    conn = db.open()
    with pytest.raises(interfaces.DatabaseFormatError) as info:
        stable.checkFormat(conn.root())
    message = str(info.value)
    assert '\n' not in message
    assert 'zc.async.queue.Queues' in message
    assert message.endswith('zcasync migrate --db URI')
    conn.close()
    db.close()


def test_worker_refuses_unmigrated_database(fixture, tmp_path):
    tid = lastTransaction(fixture / 'Data.fs')
    code, out, err = runCommand(
        'worker', '--db', fileURI(fixture), '--uuid-file',
        str(tmp_path / 'uuid.txt'), '--connect-timeout', '0')
    assert code == EXIT_FORMAT
    assert err.count('\n') == 1 and 'zcasync migrate --db URI' in err
    assert lastTransaction(fixture / 'Data.fs') == tid
    assert not (tmp_path / 'uuid.txt').exists()  # nothing left behind


def test_application_not_importable(tmp_path):
    copy = copyFixture(tmp_path)
    tid = lastTransaction(copy / 'Data.fs')
    code, out, err = runCommand('migrate', '--db', fileURI(copy))
    assert code == EXIT_FORMAT
    assert 'legacyapp.tasks.' in err and '--import MODULE' in err
    assert 'nothing was changed' in err
    assert lastTransaction(copy / 'Data.fs') == tid


def test_bad_uri_and_missing_file(tmp_path):
    code, out, err = runCommand('migrate', '--db', 'nosuch://x')
    assert code == EXIT_URI and 'unknown database URI scheme' in err
    code, out, err = runCommand('migrate', '--db',
                                'file://%s' % (tmp_path / 'none.fs'))
    assert code == EXIT_UNAVAILABLE and 'no database file' in err
    assert not (tmp_path / 'none.fs').exists()


def test_database_without_zc_async_data(tmp_path):
    path = tmp_path / 'Data.fs'
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    db.close()
    tid = lastTransaction(path)
    code, out, err = runCommand('migrate', '--db', 'file://%s' % path)
    assert code == EXIT_FORMAT and "no zc.async data" in err
    assert lastTransaction(path) == tid


def test_zcasync_database_has_nothing_to_do(tmp_path):
    from zcasync.queue import Queue, Queues
    path = tmp_path / 'Data.fs'
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    conn = db.open()
    queues = conn.root()[interfaces.KEY] = Queues()
    queues[''] = Queue()
    transaction.commit()
    conn.close()
    db.close()
    tid = lastTransaction(path)
    code, out, err = runCommand('migrate', '--db', 'file://%s' % path)
    assert (code, err) == (0, '')
    assert 'nothing to do' in out
    assert lastTransaction(path) == tid


class Strange(persistent.Persistent):
    """Stored under a zc.async module path the migration has no rule
    for."""


def test_unknown_zc_async_class_refused(fixture, monkeypatch):
    module = types.ModuleType('zc_async_strange')
    Strange.__module__ = 'zc.async.strange'
    module.Strange = Strange
    monkeypatch.setitem(sys.modules, 'zc.async.strange', module)
    db = _open(fixture)
    conn = db.open()
    conn.root()['other'] = Strange()
    transaction.commit()
    conn.close()
    db.close()
    monkeypatch.delitem(sys.modules, 'zc.async.strange')
    tid = lastTransaction(fixture / 'Data.fs')
    code, out, err = _migrate(fixture)
    assert code == EXIT_FORMAT
    assert 'zc.async.strange.Strange' in err and 'no rule' in err
    assert lastTransaction(fixture / 'Data.fs') == tid


def test_batch_must_be_positive(fixture):
    code, out, err = _migrate(fixture, '--batch', '0')
    assert code == 2 and '--batch' in err


def test_report_lines_are_kept(fixture):
    import io
    report = pipeline.Report(io.StringIO())
    report.line('a')
    assert report.lines == ['a'] and report.stream.getvalue() == 'a\n'


def test_migrated_datetimes_are_utc(fixture):
    assert _migrate(fixture)[0] == 0
    db = _open(fixture)
    conn = db.open()
    for entry in manifest(fixture)['jobs']:
        job = conn.get(entry['oid'].to_bytes(8, 'big'))
        for value in (job.begin_after, job.active_start, job.active_end):
            if value is not None:
                assert value.tzinfo is datetime.timezone.utc
    conn.close()
    db.close()


def test_application_references_to_jobs_still_work(fixture, monkeypatch):
    """An application object that refers to a job (its persistent
    reference names zc.async's class, as zc.async wrote them) finds the
    migrated job."""
    class Job(persistent.Persistent):
        pass
    Job.__module__ = 'zc.async.job'
    # zc.async cannot be imported: modules holding a class of that name
    # let ZODB write such a reference
    for name in ('zc', 'zc.async', 'zc.async.job'):
        fake = types.ModuleType(name)
        fake.Job = Job
        monkeypatch.setitem(sys.modules, name, fake)
    db = _open(fixture)
    conn = db.open()
    reference = Job()  # stands for job 58 (completed_add), not loaded
    reference._p_oid = (58).to_bytes(8, 'big')
    reference._p_jar = conn
    refs = conn.root()['refs'] = persistent.mapping.PersistentMapping(
        job=reference)
    transaction.commit()
    from zcasync.migrate import survey
    data, tid = db.storage.load(refs._p_oid)
    klass, state, names = survey.readRecord(data)
    assert state['data']['job'].klass == ('zc.async.job', 'Job')
    conn.close()
    db.close()
    for name in ('zc', 'zc.async', 'zc.async.job'):
        monkeypatch.delitem(sys.modules, name)
    assert _migrate(fixture)[0] == 0
    db = _open(fixture)
    conn = db.open()
    job = conn.root()['refs']['job']
    assert type(job).__module__ == 'zcasync.job'
    assert job.status == interfaces.COMPLETED and job.result == 5
    assert job in list(job.agent.completed)
    conn.close()
    db.close()


def test_nothing_of_zc_async_reachable_after_migration(fixture):
    from zcasync.migrate import survey
    assert _migrate(fixture)[0] == 0
    storage = ZODB.FileStorage.FileStorage(str(fixture / 'Data.fs'),
                                           read_only=True)
    try:
        found = survey.survey(storage)
    finally:
        storage.close()
    assert found.legacy == 0 and not found.jobs
    assert not found.legacyNames()
    assert all(module == 'zcasync.migrate.legacy'
               for module, name in found.replaced)


def test_python2_stage_runs_first_and_names_the_database(fixture,
                                                         monkeypatch):
    """The seam of --from-python2: its function runs before the database
    is opened, and the later stages open the URI it returns (None: stop
    after its report)."""
    from zcasync.migrate import python2
    calls = []

    def convert(uri, report, dry_run, connect_timeout=10.0):
        calls.append((uri, dry_run))
        report.line('python2 stage: %s' % uri)
        return uri if not dry_run else None
    monkeypatch.setattr(python2, 'migrateStage', convert)
    tid = lastTransaction(fixture / 'Data.fs')
    code, out, err = _migrate(fixture, '--from-python2', '--dry-run')
    assert (code, err) == (0, '')
    assert calls == [(fileURI(fixture), True)]
    assert out.splitlines()[1] == 'python2 stage: %s' % fileURI(fixture)
    assert lastTransaction(fixture / 'Data.fs') == tid
    code, out, err = _migrate(fixture, '--from-python2')
    assert (code, err) == (0, '')
    assert calls[-1] == (fileURI(fixture), False)
    assert 'done: the database holds zcasync data' in out


def test_migrated_records_name_declared_names_only(fixture):
    """Every name the current records refer to after a migration is
    declared in zcasync.stable (the stand-ins the migration replaced
    among them: they stay until a pack), or is the application's."""
    from zcasync.migrate import renames
    assert _migrate(fixture)[0] == 0
    storage = ZODB.FileStorage.FileStorage(str(fixture / 'Data.fs'),
                                           read_only=True)
    try:
        found = set()
        for oid, tid, data in renames.currentRecords(storage):
            found |= stable.globalsIn(data)
    finally:
        storage.close()
    assert stable.undeclared(
        found, application=('legacyapp.', 'builtins', '_operator')) == []
    for new in renames.RENAMES.values():
        assert '%s:%s' % new in stable.allNames(), new
