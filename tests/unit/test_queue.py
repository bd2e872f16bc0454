"""Queues and Queue (issue 3, sections 1 and 2): what may be stored, put,
ordering, reading, removing and claiming.  FileStorage in a temp dir (the
``conn`` and ``queue`` fixtures); time is moved with a FixedClock."""
import datetime
import logging
import uuid

import pytest
import transaction
import ZODB
import ZODB.FileStorage

from zcasync import testing
from zcasync import instanceuuid, interfaces, retry, utils
from zcasync.agent import Agent
from zcasync.interfaces import COMPLETED, NEW, PENDING
from zcasync.job import Job
from zcasync.queue import Queue, Queues

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NOTHING = object()


def double(value):
    return value * 2



def later(seconds):
    return START + datetime.timedelta(seconds=seconds)


# --- Queues ---------------------------------------------------------------

def test_queues_store_only_queues(conn):
    queues = conn.root()[interfaces.KEY] = Queues()
    for bad in (object(), {}, Job(double, 1)):
        with pytest.raises(ValueError, match='only queues'):
            queues['bad'] = bad
    assert 'bad' not in queues and len(queues) == 0


def test_queues_name_must_be_a_string(conn):
    queues = Queues()
    with pytest.raises(TypeError, match='queue names are strings'):
        queues[1] = Queue()
    assert len(queues) == 0


def test_stored_queue_gets_name_and_parent(conn):
    queues = conn.root()[interfaces.KEY] = Queues()
    primary, other = Queue(), Queue()
    queues[''] = primary
    queues['reports'] = other
    assert (primary.name, primary.parent) == ('', queues)
    assert (other.name, other.parent) == ('reports', queues)
    assert queues.keys() == ['', 'reports']
    assert queues[''] is primary and queues.get('nope') is None
    conn.transaction_manager.commit()
    # and it survives a reload in another connection
    second = conn.db().open()
    try:
        loaded = second.root()[interfaces.KEY]['reports']
        assert loaded.name == 'reports'
        assert loaded.parent is second.root()[interfaces.KEY]
    finally:
        second.close()


def test_queue_of_another_queues_refused(conn):
    first, second = Queues(), Queues()
    queue = first['a'] = Queue()
    with pytest.raises(ValueError, match='another Queues'):
        second['a'] = queue
    assert 'a' not in second and queue.parent is first


# --- put ------------------------------------------------------------------

def test_put_returns_the_job(queue):
    job = Job(double, 21)
    assert queue.put(job) is job
    assert list(queue) == [job]
    assert job.status == PENDING and job.parent is queue
    assert job.queue is queue


def test_put_makes_a_job_of_a_callable(queue):
    job = queue.put(double)
    assert interfaces.IJob.providedBy(job)
    assert job.callable is double and list(job.args) == []
    assert list(queue) == [job]


def test_put_refuses_a_job_already_queued(queue):
    job = queue.put(Job(double, 1))
    with pytest.raises(ValueError, match='only a new job'):
        queue.put(job)
    assert len(queue) == 1


def test_put_refuses_a_completed_job(queue, conn):
    job = Job(double, 4)
    conn.add(job)
    assert job() == 8 and job.status == COMPLETED
    with pytest.raises(ValueError, match='only a new job') as info:
        queue.put(job)
    assert COMPLETED in str(info.value)
    assert len(queue) == 0 and job.parent is None


def test_put_refuses_unknown_quota_names_and_stores_nothing(queue, conn):
    storage = conn.db().storage
    queue.quotas.create('known')
    conn.transaction_manager.commit()
    before = storage.lastTransaction()
    job = Job(double, 1)
    job.quota_names = ('known', 'missing')
    with pytest.raises(ValueError) as info:
        queue.put(job)
    message = str(info.value)
    assert "'missing'" in message and 'queue.quotas.create' in message
    assert len(queue) == 0 and list(queue) == []
    assert job.parent is None and job._p_jar is None
    assert job.assignerUUID is None and job.begin_after is None
    conn.transaction_manager.commit()
    assert storage.lastTransaction() == before  # nothing was written


def test_put_sets_begin_after_to_now_by_default(queue, clock):
    job = queue.put(Job(double, 1))
    assert job.begin_after == START
    assert job.begin_after.tzinfo is not None


def test_put_keeps_explicit_arguments(queue, clock):
    when = later(3600)
    job = queue.put(Job(double, 1), begin_after=when,
                    begin_by=datetime.timedelta(minutes=5),
                    failure_log_level=logging.CRITICAL,
                    retry_policy_factory=retry.NeverRetry)
    assert job.begin_after == when
    assert job.begin_by == datetime.timedelta(minutes=5)
    assert job.failure_log_level == logging.CRITICAL
    assert job.retry_policy_factory is retry.NeverRetry


def test_put_refuses_a_naive_begin_after(queue):
    with pytest.raises(ValueError, match='naive'):
        queue.put(Job(double, 1), begin_after=datetime.datetime(2030, 1, 1))


def test_put_sets_the_assigner_uuid(queue):
    uuid = instanceuuid.getUUID()  # as a process running a dispatcher does
    job = queue.put(Job(double, 1))
    assert uuid is not None and job.assignerUUID == uuid


def test_a_producer_needs_no_instance_uuid(queue, tmp_path, monkeypatch):
    monkeypatch.setenv('ZC_ASYNC_UUID', str(tmp_path / 'uuid.txt'))
    previous = instanceuuid.currentUUID()
    instanceuuid._reset()
    try:
        job = queue.put(Job(double, 1))
        assert job.assignerUUID is None
        assert not (tmp_path / 'uuid.txt').exists()
    finally:
        instanceuuid._reset()
        monkeypatch.undo()
    assert instanceuuid.getUUID() == previous


def test_put_job_joins_the_queue_connection_before_commit(queue, conn):
    job = queue.put(Job(double, 1))
    assert job._p_jar is conn
    assert job._p_oid is not None
    conn.transaction_manager.commit()
    assert conn.get(job._p_oid) is job


def test_put_stores_the_job_in_the_queue_database(tmp_path):
    """With several databases, a job is stored with its queue, not with
    the object that happened to reference it first."""
    databases = {}
    main = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'main.fs')),
                   databases=databases, database_name='main')
    ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'jobs.fs')),
            databases=databases, database_name='jobs')
    tm = transaction.TransactionManager()
    conn = main.open(transaction_manager=tm)
    try:
        jobs_conn = conn.get_connection('jobs')
        queues = Queues()
        jobs_conn.add(queues)
        conn.root()[interfaces.KEY] = queues
        queue = queues[''] = Queue()
        jobs_conn.add(queue)
        tm.commit()
        job = Job(double, 1)
        conn.root()['my job'] = job  # referenced from the main database
        queue.put(job)
        assert job._p_jar is jobs_conn
        tm.commit()
        assert utils.databaseName(job) == 'jobs'
        assert utils.databaseName(conn.root()) == 'main'
    finally:
        tm.abort()
        conn.close()
        for db in databases.values():
            db.close()


# --- order ----------------------------------------------------------------

def test_due_jobs_come_out_first_in_first_out(queue, clock):
    jobs = []
    for i in range(5):
        jobs.append(queue.put(Job(double, i)))
        clock.advance(1)
    assert list(queue) == jobs
    assert [queue.claim() for i in range(5)] == jobs
    assert queue.claim() is None


def test_fifo_within_one_clock_tick(queue, clock):
    jobs = [queue.put(Job(double, i)) for i in range(40)]
    assert list(queue) == jobs
    assert [queue.claim() for i in range(40)] == jobs


def test_fifo_within_one_clock_tick_in_a_queue_not_stored_yet(clock):
    queue = Queue()  # no connection: the jobs get no oid
    jobs = [queue.put(Job(double, i)) for i in range(40)]
    assert all(job._p_oid is None for job in jobs)
    assert list(queue) == jobs
    assert [queue.claim() for i in range(40)] == jobs


def test_fifo_when_a_later_job_has_begin_after_in_the_past(queue, clock):
    first = queue.put(Job(double, 1))
    clock.advance(10)
    second = queue.put(Job(double, 2), begin_after=later(-3600))
    clock.advance(10)
    third = queue.put(Job(double, 3))
    assert list(queue) == [first, second, third]
    assert [queue.claim() for i in range(3)] == [first, second, third]


def test_scheduled_jobs_come_out_when_due_by_begin_after(queue, clock):
    late = queue.put(Job(double, 1), begin_after=later(20))
    soon = queue.put(Job(double, 2), begin_after=later(10))
    now = queue.put(Job(double, 3))
    assert list(queue) == [now, soon, late]
    assert queue.claim() is now
    assert queue.claim(default=NOTHING) is NOTHING
    clock.advance(9)
    assert queue.claim() is None
    clock.advance(1)
    assert queue.claim() is soon
    assert queue.claim() is None
    clock.advance(15)
    assert queue.claim() is late
    assert len(queue) == 0


def test_a_due_scheduled_job_comes_before_later_puts(queue, clock):
    scheduled = queue.put(Job(double, 1), begin_after=later(10))
    clock.advance(30)
    fresh = queue.put(Job(double, 2))
    assert [queue.claim(), queue.claim()] == [scheduled, fresh]


def test_put_back_jobs_come_out_before_everything(queue, clock):
    normal = queue.put(Job(double, 1))
    clock.advance(5)
    back = Job(double, 2)
    queue.putBack(back)
    assert back.status == PENDING and back.parent is queue
    clock.advance(5)
    back2 = Job(double, 3)
    queue.putBack(back2)
    assert list(queue) == [back, back2, normal]
    assert [queue.claim() for i in range(3)] == [back, back2, normal]


def test_put_back_refuses_a_queued_job(queue):
    job = queue.put(Job(double, 1))
    with pytest.raises(ValueError, match='only a new job'):
        queue.putBack(job)
    assert list(queue) == [job]


# --- reading and removing --------------------------------------------------

def test_len_iter_and_getitem(queue, clock):
    assert len(queue) == 0 and not queue and list(queue) == []
    jobs = [queue.put(Job(double, i)) for i in range(4)]
    assert len(queue) == 4 and queue
    assert list(queue) == jobs
    assert [queue[i] for i in range(4)] == jobs
    assert queue[-1] is jobs[3] and queue[-4] is jobs[0]
    for bad in (4, -5):
        with pytest.raises(IndexError):
            queue[bad]


def test_pull_removes_and_returns(queue, clock):
    jobs = [queue.put(Job(double, i)) for i in range(4)]
    assert queue.pull() is jobs[0]
    assert queue.pull(1) is jobs[2]
    assert queue.pull(-1) is jobs[3]
    assert list(queue) == [jobs[1]] and len(queue) == 1
    pulled = jobs[0]
    assert pulled.parent is None and pulled.status == NEW
    with pytest.raises(IndexError):
        queue.pull(1)


def test_pull_cancels_a_job_that_can_be_queued_again(queue, clock):
    job = queue.put(Job(double, 1))
    assert queue.pull() is job
    assert queue.claim() is None
    assert queue.put(job) is job and queue.claim() is job


def test_pull_from_empty_queue(queue):
    with pytest.raises(IndexError):
        queue.pull()


def test_remove(queue, clock):
    jobs = [queue.put(Job(double, i)) for i in range(3)]
    queue.remove(jobs[1])
    assert list(queue) == [jobs[0], jobs[2]] and len(queue) == 2
    assert jobs[1].parent is None
    with pytest.raises(LookupError, match='is not in queue'):
        queue.remove(jobs[1])
    with pytest.raises(LookupError):
        queue.remove(Job(double, 9))
    assert len(queue) == 2


def test_remove_a_job_of_another_queue(queue, conn):
    other = conn.root()[interfaces.KEY]['other'] = Queue()
    job = other.put(Job(double, 1))
    with pytest.raises(LookupError):
        queue.remove(job)
    assert list(other) == [job]


def test_queues_refuse_to_delete_a_queue_holding_jobs(queue, conn):
    queues = conn.root()[interfaces.KEY]
    job = queue.put(Job(double, 1))
    with pytest.raises(ValueError, match='pull them first'):
        del queues['']
    assert queues[''] is queue
    queue.remove(job)
    del queues['']
    assert '' not in queues and queue.parent is None


# --- claim ----------------------------------------------------------------

def test_claim_takes_the_first_job_the_filter_accepts(queue, clock):
    jobs = [queue.put(Job(double, i)) for i in range(4)]
    seen = []

    def odd(job):
        seen.append(job)
        return job.args[0] % 2 == 1
    assert queue.claim(odd) is jobs[1]
    assert seen == jobs[:2]
    assert jobs[1].parent is None and jobs[1] not in list(queue)
    assert queue.claim(odd) is jobs[3]
    assert queue.claim(odd, default=NOTHING) is NOTHING
    assert list(queue) == [jobs[0], jobs[2]]


def test_claim_on_an_empty_queue(queue):
    assert queue.claim() is None
    assert queue.claim(default=NOTHING) is NOTHING


def test_claim_skips_a_job_whose_quota_is_full(queue, clock):
    agents = testing.activeRegistration(queue, uuid.uuid4())
    agent = agents['main'] = Agent(size=5)
    queue.quotas.create('db', size=1)
    first, blocked = Job(double, 1), Job(double, 2)
    first.quota_names = blocked.quota_names = ('db',)
    queue.put(first)
    queue.put(blocked)
    free = queue.put(Job(double, 3))
    assert agent.claimJob() is first
    assert list(queue.quotas['db']) == [first]
    assert agent.claimJob() is free  # the blocked job does not block it
    assert agent.claimJob() is None
    assert list(queue) == [blocked] and blocked.status == PENDING


def test_claim_replaces_a_job_past_its_deadline(queue, conn, clock):
    job = queue.put(Job(double, 1), begin_by=datetime.timedelta(seconds=10))
    conn.transaction_manager.commit()
    clock.advance(11)
    seen = []

    def accept(candidate):
        seen.append(candidate)
        return True
    replacement = queue.claim(accept)
    assert seen == [job]  # the filter saw the original
    assert replacement is not job and interfaces.IJob.providedBy(replacement)
    assert replacement.callable == job.fail
    assert replacement._p_jar is conn
    assert len(queue) == 0 and list(queue) == []
    assert job.parent is replacement
    conn.transaction_manager.commit()
    replacement()
    assert replacement.status == COMPLETED
    assert job.status == COMPLETED
    assert job.result.check(interfaces.TimeoutError)
    # committed: another connection sees the failure
    other = conn.db().open()
    try:
        stored = other.get(job._p_oid)
        assert stored.status == COMPLETED
        assert stored.result.check(interfaces.TimeoutError)
    finally:
        other.close()


def test_claim_hands_out_a_job_within_its_deadline(queue, clock):
    job = queue.put(Job(double, 1), begin_by=datetime.timedelta(seconds=10))
    clock.advance(10)
    assert queue.claim() is job


def test_a_late_job_the_filter_refuses_stays(queue, clock):
    job = queue.put(Job(double, 1), begin_by=datetime.timedelta(seconds=1))
    clock.advance(5)
    assert queue.claim(lambda j: False) is None
    assert list(queue) == [job]


def test_repr(queue):
    queue.put(Job(double, 1))
    assert repr(queue) == "<zcasync.queue.Queue '' (1 jobs)>"
