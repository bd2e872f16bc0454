"""The format-1 fixture (``tests/fixtures/format1``, written by the
zcasync of its time; see its README): today's code reads every object as
its MANIFEST.json records it, and runs its due jobs -- with a real
dispatcher on a Twisted reactor, and with ``runQueuedJobs`` -- to the
recorded results and callbacks."""
import datetime
import json
import os
import shutil
import uuid

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils

from test_dispatcher_support import Running, addAgent
from zcasync import interfaces
from zcasync import stable
from zcasync import testing
from zcasync import utils

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'fixtures')
HERE = os.path.join(FIXTURES, 'format1')
with open(os.path.join(HERE, 'MANIFEST.json')) as f:
    MANIFEST = json.load(f)
BY_LABEL = {entry['label']: entry for entry in MANIFEST['jobs']}
WAIT = 30


@pytest.fixture
def copy(tmp_path, monkeypatch):
    """(DB, connection) on a copy of the fixture, its tasks importable."""
    monkeypatch.syspath_prepend(FIXTURES)
    shutil.copy(os.path.join(HERE, 'Data.fs'), tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    conn = db.open(transaction_manager=transaction.TransactionManager())
    yield db, conn
    conn.transaction_manager.abort()
    conn.close()
    db.close()


def name(function):
    return '%s:%s' % (function.__module__, function.__qualname__)


def iso(value):
    return None if value is None else value.isoformat()


def get(conn, oid):
    return conn.get(ZODB.utils.p64(oid))


def plain(conn, value):
    if interfaces.IJob.providedBy(value):
        args, kwargs = value.callArguments()
        return {'job': ZODB.utils.u64(value._p_oid),
                'callable': name(value.callable),
                'args': [plain(conn, a) for a in args],
                'kwargs': {k: plain(conn, v) for k, v in kwargs.items()}}
    return value


def checkJob(conn, entry):
    job = get(conn, entry['oid'])
    label = entry['label']
    assert name(job.callable) == entry['callable'], label
    args, kwargs = job.callArguments()
    assert [plain(conn, a) for a in args] == entry['args'], label
    assert {k: plain(conn, v) for k, v in kwargs.items()} == \
        entry['kwargs'], label
    assert job.status == entry['status'], label
    assert (job.queue.name if job.queue is not None else None) == \
        entry['queue'], label
    assert iso(job.begin_after) == entry['begin_after'], label
    assert job.begin_after.tzinfo is not None
    assert job.priority == entry['priority'], label
    assert list(job.quota_names) == entry['quota_names'], label
    assert repr(job.retry_policy_factory) == \
        entry['retry_policy_factory'], label
    assert {k: v for k, v in job.peekAnnotations().items()
            if k.startswith('format1.')} == entry['annotations'], label
    assert [name(cb.callable) for cb in job.callbacks] == \
        entry['callbacks'], label
    if 'failure' in entry:
        assert utils.isFailure(job.result)
        assert utils.exceptionClassName(job.result) == \
            entry['failure']['type']
        assert job.result.getErrorMessage() == entry['failure']['message']
        assert 'Kaput' in job.result.getTraceback()
    elif 'result' in entry:
        assert job.result == entry['result'], label
    if entry['status'] == interfaces.COMPLETED:
        assert iso(job.active_start) == entry['active_start']
        assert iso(job.active_end) == entry['active_end']
    return job


def test_every_object_reads_as_recorded(copy):
    db, conn = copy
    root = conn.root()
    assert sorted(root.keys()) == MANIFEST['root_keys']
    assert stable.formatOf(root) == MANIFEST['format'] == 1
    stable.checkFormat(root)
    queues = root[interfaces.KEY]
    assert list(queues.keys()) == list(MANIFEST['queues'])
    recorded = MANIFEST['queues']['']
    queue = queues['']
    assert len(queue) == recorded['length']
    assert [ZODB.utils.u64(j._p_oid) for j in queue] == \
        recorded['pending_oids']
    assert {n: queue.quotas[n].size for n in queue.quotas} == \
        recorded['quotas']
    assert {n: [ZODB.utils.u64(j._p_oid) for j in queue.quotas[n]]
            for n in queue.quotas} == recorded['quota_holders']
    assert queue.paused == recorded['paused']
    assert queue.completed_keep == datetime.timedelta(
        seconds=recorded['completed_keep_seconds'])
    for schedule_name, expected in recorded['schedules'].items():
        schedule = queue.schedules[schedule_name]
        assert {'callable': name(schedule.callable),
                'args': list(schedule.args), 'cron': schedule.cron,
                'timezone': schedule.timezone, 'paused': schedule.paused,
                'catch_up': schedule.catch_up,
                'grace_seconds': schedule.grace.total_seconds()} == expected
        assert len(schedule.nextRuns(2)) == 2
    assert {str(u) for u in queue.dispatchers} == set(
        recorded['dispatchers'])
    for uuid_text, expected in recorded['dispatchers'].items():
        registration = queue.dispatchers[uuid.UUID(uuid_text)]
        assert iso(registration.activated) == expected['activated'] is None
        assert registration.ping_interval.total_seconds() == \
            expected['ping_interval_seconds']
        assert registration.ping_death_interval.total_seconds() == \
            expected['ping_death_interval_seconds']
        assert registration.last_ping.value is not None
        for agent_name, agent_expected in expected['agents'].items():
            agent = registration[agent_name]
            assert agent.size == agent_expected['size']
            assert len(agent) == agent_expected['held']
            assert [ZODB.utils.u64(j._p_oid) for j in agent.completed] == \
                agent_expected['completed_oids']
            assert interfaces.IFilterAgent.providedBy(agent)
    for entry in MANIFEST['jobs']:
        checkJob(conn, entry)


def test_the_fixture_names_only_declared_names(copy):
    db, conn = copy
    found = stable.storageGlobals(db.storage)
    assert sorted('%s:%s' % pair for pair in found) == MANIFEST['globals']
    assert stable.undeclared(found, ('format1tasks',)) == []


def checkRan(conn):
    """Every job with an ``expect`` in the manifest ended as expected;
    completed ones are unchanged."""
    conn.transaction_manager.begin()
    for entry in MANIFEST['jobs']:
        job = get(conn, entry['oid'])
        expect = entry.get('expect')
        if expect is None:
            checkJob(conn, entry)  # completed before: untouched
            continue
        if 'status' in expect:
            assert job.status == expect['status'], entry['label']
            continue
        assert job.status == interfaces.COMPLETED, entry['label']
        assert job.result == expect['result'], entry['label']
        assert [cb.result for cb in job.callbacks] == \
            expect.get('callbacks', []), entry['label']
        if 'after' in expect:
            before = get(conn, BY_LABEL[expect['after']]['oid'])
            assert job.active_start >= before.active_end, entry['label']
    queue = conn.root()[interfaces.KEY]['']
    assert [ZODB.utils.u64(j._p_oid) for j in queue
            if 'zcasync.schedule' not in j.peekAnnotations()] == [
        BY_LABEL['scheduled far ahead']['oid']]
    stopped = queue.dispatchers[uuid.UUID(
        next(iter(MANIFEST['queues']['']['dispatchers'])))]
    assert stopped.activated is None


def expected():
    """The oids of the jobs the manifest expects to complete."""
    return [entry['oid'] for entry in MANIFEST['jobs']
            if 'result' in entry.get('expect', {})]


def test_a_real_dispatcher_runs_the_due_jobs(copy):
    db, conn = copy
    with Running(db) as running:
        addAgent(conn, running.dispatcher, size=2)

        def done():
            conn.transaction_manager.begin()
            return all(get(conn, oid).status == interfaces.COMPLETED
                       for oid in expected())
        testing.wait(done, WAIT, 'the due jobs of the fixture never all '
                     'completed')
    checkRan(conn)


def test_run_queued_jobs_runs_the_due_jobs(copy):
    db, conn = copy
    testing.runQueuedJobs(conn)
    checkRan(conn)
