"""After ``zcasync migrate``, a real dispatcher (threads, a Twisted reactor,
FileStorage) runs the zc.async 1.5 fixture's jobs as zc.async would have:
checked for each job of the fixture's MANIFEST.json."""
import datetime
import importlib
import types
import uuid

import ZODB
import ZODB.FileStorage
import ZODB.utils
from twisted.python import reflect

from zcasync import interfaces
from zcasync import retry
from zcasync import testing
from zcasync.interfaces import COMPLETED, NEW, PENDING

from tests.legacydb import (
    copyFixture, fileURI, legacyApp, manifest, runCommand)
from test_dispatcher_support import Running, addAgent


WAIT = 60
OLD_UUID = uuid.UUID('92015c00-972d-11e0-9d3e-001d7d0a55c1')
FUTURE = datetime.datetime(2035, 1, 1, tzinfo=datetime.timezone.utc)


def _resolve(path):
    module, name = path.rsplit('.', 1)
    return getattr(importlib.import_module(module), name)


def _job(conn, entry):
    return conn.get(ZODB.utils.p64(entry['oid']))


def _expectedValue(entry, conn):
    """What the job's callable returns for its stored arguments."""
    import legacyapp.tasks
    callable_ = entry['callable']
    if callable_['kind'] == 'method':
        # a fresh object: the stored one is the job's to change
        stored = conn.root()[callable_['root_key']]
        fresh = legacyapp.tasks.ReportGenerator(stored.title)
        function = getattr(fresh, callable_['name'])
    else:
        function = _resolve(callable_['path'])
    return function(*entry['args'], **entry['kwargs'])


def _willRun(entry):
    """Pending jobs that come due now (not the 2035 one), the one the dead
    dispatcher held, and the success callback of a job that succeeds."""
    if entry['status'] == 'active-status':
        return True
    if entry['status'] == 'pending-status':
        return entry['begin_after'] is None or \
            datetime.datetime.fromisoformat(entry['begin_after']) < FUTURE
    return entry['location'] == 'callback_proxy.default'


def test_each_manifest_job_after_migration(tmp_path, monkeypatch):
    copy = copyFixture(tmp_path)
    data = manifest(copy)
    entries = data['jobs']
    by_label = {e['label']: e for e in entries}
    with legacyApp(copy):
        import legacyapp.tasks
        # the fixture's callables "work" with time.sleep (minutes of it)
        monkeypatch.setattr(legacyapp.tasks, 'time',
                            types.SimpleNamespace(sleep=lambda s: None))
        code, out, err = runCommand('migrate', '--db', fileURI(copy),
                                    '--import', 'legacyapp.tasks')
        assert (code, err) == (0, ''), out + err
        db = ZODB.DB(ZODB.FileStorage.FileStorage(str(copy / 'Data.fs')))
        try:
            _runAndCheck(db, data, entries, by_label)
        finally:
            db.close()


def _runAndCheck(db, data, entries, by_label):
    import transaction
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    root = conn.root()
    queues = root[interfaces.KEY]
    # zc.async's death interval is a minute: the dead dispatcher's ring
    # neighbour would watch it that long; a second is enough here
    for queue in queues.values():
        queue.dispatchers[OLD_UUID].ping_death_interval = \
            datetime.timedelta(seconds=1)
    tm.commit()
    running = [e for e in entries if _willRun(e)]
    assert running, 'the manifest has jobs to run'
    with Running(db, poll_interval=0.05) as worker:
        for queue_name in queues:
            addAgent(conn, worker.dispatcher, 'main', size=3,
                     queue_name=queue_name)

        def finished():
            tm.begin()
            return all(_job(conn, e).status == COMPLETED for e in running)
        testing.wait(finished, WAIT, lambda: 'not completed: %s' % [
            (e['label'], _job(conn, e).status) for e in running
            if _job(conn, e).status != COMPLETED])
        tm.begin()
        checked = []
        for entry in entries:
            _checkEntry(conn, entry, by_label)
            checked.append(entry['label'])
        assert checked == [e['label'] for e in data['jobs']]
        _checkQuota(conn, data, by_label)
        _checkRecovery(conn, by_label)
        assert root['app'].generated == 1  # its method ran once
        tm.abort()
    conn.close()


def _checkCommon(job, entry):
    """What every job keeps: oid, callable, arguments, times, quota
    names, annotations, retry policy factory."""
    assert job._p_oid == ZODB.utils.p64(entry['oid'])
    assert type(job).__module__ == 'zcasync.job'
    args, kwargs = job.callArguments()
    assert (list(args), kwargs) == (entry['args'], entry['kwargs'])
    callable_ = entry['callable']
    if callable_['kind'] == 'method':
        assert job._callable_name == callable_['name']
        assert job._callable_root is job._p_jar.root()[callable_['root_key']]
    else:
        assert job.callable is _resolve(callable_['path'])
    if entry['begin_after'] is not None and \
            entry['status'] != 'active-status':  # recovery put it back
        assert job.begin_after == datetime.datetime.fromisoformat(
            entry['begin_after'])
    if entry['begin_by'] is not None:
        assert job.begin_by.total_seconds() == entry['begin_by']['seconds']
    assert list(job.quota_names) == entry['quota_names']
    annotations = job.peekAnnotations()
    for key, value in entry['annotations'].items():
        assert annotations[key] == value
    factory = entry['retry_policy_factory']
    if factory is None:
        assert job.retry_policy_factory is None
    elif factory == 'zc.async.job.callback_retry_policy_factory':
        assert job.retry_policy_factory is \
            retry.callback_retry_policy_factory
    else:
        assert job.retry_policy_factory is getattr(
            retry, factory.rsplit('.', 1)[1])
    if entry['failure_log_level'] is not None:
        assert job.failure_log_level == entry['failure_log_level']


def _checkEntry(conn, entry, by_label):
    job = _job(conn, entry)
    _checkCommon(job, entry)
    label, status, location = \
        entry['label'], entry['status'], entry['location']
    if status == 'completed-status':
        # completed under zc.async: result (or failure) kept as it was
        assert job.status == COMPLETED, label
        result = entry['result']
        if result['kind'] == 'value':
            assert repr(job.result) == result['repr'], label
        else:
            assert job.result.check(_resolve(result['type'])), label
            assert reflect.qual(job.result.type) == result['type']
            assert job.result.getErrorMessage() == result['message']
            assert result['message'] in job.result.getTraceback()
        assert job.active_end == datetime.datetime.fromisoformat(
            entry['active_end'])
        if location == 'agent.completed':
            assert job in list(job.agent.completed), label
        for callback in entry['callbacks']:
            child = _job(conn, by_label[callback['label']])
            assert child in job.callbacks and child.parent is job
    elif status == 'pending-status' and not _willRun(entry):
        assert job.status == PENDING, label  # 2035: kept for its time
        assert job in list(job.queue), label
        assert job.queue.name == entry['queue']
    elif entry['begin_by'] is not None:
        # its begin_by passed long ago: failed with TimeoutError, as
        # zc.async fails such a job
        assert job.status == COMPLETED, label
        assert job.result.check(interfaces.TimeoutError), label
    elif _willRun(entry):
        assert job.status == COMPLETED, label
        if location == 'callback_proxy.default':
            parent = by_label[label.rsplit('.callbacks', 1)[0]]
            expected = _resolve(entry['callable']['path'])(
                _job(conn, parent).result)
        else:
            expected = _expectedValue(entry, conn)
        assert job.result == expected, (label, job.result)
        assert job.agent is not None and job.agent.parent.UUID != OLD_UUID
    else:
        # the failure callback of a job that succeeded: never runs
        assert location.startswith('callback_proxy.conditionals'), label
        assert job.status == NEW and job.result is None, label


def _checkQuota(conn, data, by_label):
    """Quota 'db' (size 1): the job waiting for it started only after the
    one holding it (the recovered one) ended."""
    for quota in data['quotas']:
        holder = _job(conn, by_label[quota['jobs'][0]])
        waiting = [_job(conn, e) for e in data['jobs']
                   if quota['name'] in e['quota_names'] and
                   e['label'] not in quota['jobs']]
        assert waiting
        for job in waiting:
            assert job.active_start >= holder.active_end
        stored = conn.root()[interfaces.KEY][quota['queue']].quotas[
            quota['name']]
        assert stored.size == quota['size']
        # (a quota forgets completed jobs lazily, when it fills up)
        assert all(job.status == COMPLETED for job in stored)


def _checkRecovery(conn, by_label):
    """The job the dead dispatcher held ran again under its retry policy
    (RetryCommonForever: an interruption is retried)."""
    job = _job(conn, by_label['active_rebuild_index'])
    counts = job.annotations['zcasync.RetryCommonForever']
    assert counts['interruption'] == 1
    registration = conn.root()[interfaces.KEY][''].dispatchers[OLD_UUID]
    assert not registration.activated  # found dead, deactivated
    assert len(list(registration['main'].completed)) == 3  # kept
