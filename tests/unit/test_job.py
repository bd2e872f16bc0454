"""The Job: what it can call, its attributes, status, repr and life cycle
(issue 2, section 3).  FileStorage in a temp dir; a second connection with
its own transaction manager checks what is committed."""
import datetime
import operator
import threading

import BTrees.Length
import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping
import pytest
import twisted.internet.defer
import twisted.python.failure

from zcasync import testing
import zcasync
import zcasync.instanceuuid
from zcasync import interfaces, utils
from zcasync.agent import Agent
from zcasync.interfaces import (
    NEW, PENDING, ASSIGNED, ACTIVE, COMPLETED)
from zcasync.job import Job
from zcasync.testing import FixedClock

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support

UTC = datetime.timezone.utc


# --- module-level callables (stored by reference) ------------------------

def multiply(a, b):
    return a * b


class Point:
    """A class is a callable too."""

    def __init__(self, x, y):
        self.x, self.y = x, y


class Counter(persistent.Persistent):
    """A persistent callable."""

    count = 0

    def __call__(self, step=1):
        self.count += step
        return self.count


class Plain:
    """A picklable, non-persistent object with a method."""

    def __init__(self, factor):
        self.factor = factor

    def scale(self, value):
        return value * self.factor


def seeMyselfFromElsewhere():
    """Read the running job from a second connection: what is committed."""
    job = support.currentJob()
    return support.storedState(job._p_jar.db(), job._p_oid,
                               'status', 'active_start')


def writeThenRaise():
    support.root()['touched'] = True
    raise ValueError('the job went wrong')


def writeThenReturnFailure():
    support.root()['touched'] = True
    try:
        raise ValueError('reported, not raised')
    except ValueError:
        return twisted.python.failure.Failure()


def callMyself():
    return support.currentJob()()


def returnJob(callable, *args):
    return Job(callable, *args)


_deferreds = {}


def returnDeferred(key):
    deferred = _deferreds[key] = twisted.internet.defer.Deferred()
    return deferred


def returnFiredDeferred(value):
    return twisted.internet.defer.succeed(value)


def store(conn, job, name='job'):
    conn.root()[name] = job
    conn.transaction_manager.commit()
    return job


# --- callables -------------------------------------------------------------

def test_module_level_function(conn, db):
    job = store(conn, Job(multiply, 6, 7))
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        assert stored.callable is multiply
        assert stored() == 42
        other.transaction_manager.commit()
    assert support.storedState(db, job._p_oid, 'status', 'result') == (
        COMPLETED, 42)


def test_builtin_is_stored_as_itself_not_through_its_module(conn, db):
    # operator.mul.__self__ is the operator module, which cannot be stored
    job = store(conn, Job(operator.mul, 14, 3))
    with support.otherConnection(db) as other:
        assert other.root()['job'].callable is operator.mul
    assert job() == 42


def test_method_of_persistent_object(conn, db):
    length = conn.root()['length'] = BTrees.Length.Length(10)
    job = store(conn, Job(length.change, 5))
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        # stored as the object and the method name: the method is bound to
        # the copy of the object in whichever connection loads the job
        assert stored.callable.__self__ is other.root()['length']
        assert stored.callable.__name__ == 'change'
        stored()
        other.transaction_manager.commit()
    with support.otherConnection(db) as other:
        assert other.root()['length']() == 15


def test_persistent_callable(conn, db):
    counter = conn.root()['counter'] = Counter()
    job = store(conn, Job(counter, 4))
    assert job() == 4
    with support.otherConnection(db) as other:
        assert other.root()['counter'].count == 4
        assert other.root()['job'].callable is other.root()['counter']


def test_slot_wrapper_of_a_btree(conn, db):
    tree = conn.root()['tree'] = BTrees.OOBTree.OOBTree()
    store(conn, Job(tree.__setitem__, 'key', 'value'))
    with support.otherConnection(db) as other:
        other.root()['job']()
        other.transaction_manager.commit()
    with support.otherConnection(db) as other:
        assert dict(other.root()['tree']) == {'key': 'value'}


def test_class_as_callable(conn, db):
    job = store(conn, Job(Point, 1, y=2))
    with support.otherConnection(db) as other:
        point = other.root()['job']()
        other.transaction_manager.commit()
        assert (type(point), point.x, point.y) == (Point, 1, 2)
    job._p_jar.transaction_manager.begin()
    assert isinstance(job.result, Point)


def test_method_of_a_picklable_plain_object(conn, db):
    store(conn, Job(Plain(3).scale, 5))
    with support.otherConnection(db) as other:
        assert other.root()['job']() == 15


def _nested():
    def inner():
        return 1
    return inner


@pytest.mark.parametrize('make, name', [
    (lambda: (lambda: 1), '<lambda>'),
    (_nested, 'inner'),
    (lambda: threading.Lock().acquire, 'acquire'),
])
def test_unstorable_callables_are_refused_with_advice(make, name):
    bad = make()
    with pytest.raises(TypeError) as info:
        Job(bad)
    message = str(info.value)
    assert repr(bad) in message and name in message
    assert 'module level' in message and 'method of a persistent' in message


def test_non_callable_is_refused():
    with pytest.raises(TypeError, match="needs a callable, not 42"):
        Job(42)


def test_callable_cannot_change_after_start(conn):
    job = store(conn, Job(multiply, 2, 3))
    job.callable = operator.add   # allowed while NEW
    assert job() == 5
    with pytest.raises(interfaces.BadStatusError, match='has not started'):
        job.callable = multiply


# --- attributes ------------------------------------------------------------

def test_args_and_kwargs_are_persistent_and_mutable_before_the_run(
        conn, db):
    job = store(conn, Job(support.echo, 1, a='x'))
    assert isinstance(job.args, persistent.list.PersistentList)
    assert isinstance(job.kwargs, persistent.mapping.PersistentMapping)
    job.args.append(2)
    job.kwargs['b'] = 'y'
    conn.transaction_manager.commit()
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        assert list(stored.args) == [1, 2]
        assert stored() == ((1, 2), {'a': 'x', 'b': 'y'})


def test_annotations_are_stored(conn, db):
    job = store(conn, Job(multiply, 1, 2))
    assert len(job.annotations) == 0 and 'app.note' not in job.annotations
    job.annotations['app.note'] = {'owner': 'me'}
    assert isinstance(job.annotations, BTrees.OOBTree.OOBTree)
    conn.transaction_manager.commit()
    with support.otherConnection(db) as other:
        assert other.root()['job'].annotations['app.note'] == {
            'owner': 'me'}


def readArgs(job):
    """An agent filter: reads the arguments and annotations."""
    return job.args[0] == 1 and 'x' not in job.annotations and \
        job.kwargs.get('k') is None


def test_reading_args_kwargs_and_annotations_writes_nothing(conn, db):
    """Arguments and annotations stay in the job's own record until they
    change (zcasync.lazydata): reading them -- as an agent's filter does
    in every claim -- must not write the job (two claimers would
    conflict), and the first change makes them stored sub-objects."""
    job = store(conn, Job(multiply, 1, 2))
    assert readArgs(job)
    assert not job._p_changed
    assert list(job.args) == [1, 2] and dict(job.kwargs) == {}
    assert not job._p_changed
    # a sub-object costs a write at the put and a load at the run: none
    assert type(job._args) is tuple and job._annotations is None
    args = job.args
    args.append(3)
    assert job._p_changed and job.args is args
    assert type(job.args) is persistent.list.PersistentList
    job.kwargs['k'] = 'v'
    assert type(job.kwargs) is persistent.mapping.PersistentMapping
    conn.transaction_manager.commit()
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        assert list(stored.args) == [1, 2, 3]
        assert dict(stored.kwargs) == {'k': 'v'}


def test_jobs_stored_with_sub_objects_still_load(conn, db):
    """A job record written with ``args`` and ``annotations`` attributes
    (zc.async, and zcasync before arguments were kept inline) loads."""
    job = store(conn, Job(multiply, 3, 4))
    state = job.__getstate__()
    state = dict(state)
    state['args'] = persistent.list.PersistentList(state.pop('_args'))
    state['annotations'] = BTrees.OOBTree.OOBTree({'old': 1})
    job.__setstate__(state)
    assert list(job.args) == [3, 4] and job.annotations['old'] == 1
    assert job() == 12


def test_begin_after_naive_is_refused():
    job = Job(multiply, 1, 2)
    with pytest.raises(ValueError, match='naive.*timezone-aware'):
        job.begin_after = datetime.datetime(2030, 1, 1)
    with pytest.raises(TypeError, match='must be a datetime'):
        job.begin_after = '2030-01-01'
    assert job.begin_after is None


def test_begin_after_is_stored_in_utc(conn, db):
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    job = store(conn, Job(multiply, 1, 2))
    job.begin_after = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=plus2)
    conn.transaction_manager.commit()
    stored, = support.storedState(db, job._p_oid, 'begin_after')
    assert stored == datetime.datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    assert stored.tzinfo is UTC


def test_begin_by():
    job = Job(multiply, 1, 2)
    assert job.begin_by is None
    with pytest.raises(ValueError, match='must not be negative'):
        job.begin_by = datetime.timedelta(seconds=-1)
    with pytest.raises(TypeError, match='must be a datetime.timedelta'):
        job.begin_by = 60
    job.begin_by = datetime.timedelta(minutes=5)
    assert job.begin_by == datetime.timedelta(minutes=5)
    job.begin_by = None
    assert job.begin_by is None


def test_quota_names():
    job = Job(multiply, 1, 2)
    assert job.quota_names == ()
    with pytest.raises(TypeError,
                       match=r"not the string 'pdf'; write \('pdf',\)"):
        job.quota_names = 'pdf'
    with pytest.raises(TypeError, match='must be strings, not 3'):
        job.quota_names = ('pdf', 3)
    job.quota_names = ['pdf', 'mail']
    assert job.quota_names == ('pdf', 'mail')


def test_scheduling_attributes_are_fixed_once_started(conn):
    job = store(conn, Job(multiply, 1, 2))
    job()
    with pytest.raises(interfaces.BadStatusError):
        job.begin_after = utils.now()
    with pytest.raises(interfaces.BadStatusError):
        job.begin_by = datetime.timedelta(0)
    with pytest.raises(interfaces.BadStatusError):
        job.quota_names = ('pdf',)


def test_status_and_result_are_read_only():
    job = Job(multiply, 1, 2)
    with pytest.raises(AttributeError):
        job.status = COMPLETED
    with pytest.raises(AttributeError):
        job.result = 2
    assert (job.status, job.result) == (NEW, None)


def test_status_reads_pending_in_a_queue_and_assigned_in_an_agent(
        conn, queue):
    job = Job(multiply, 6, 7)
    assert job.status == NEW
    queue.put(job)
    conn.transaction_manager.commit()
    assert job.status == PENDING and job.queue is queue
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = Agent()
    assert agent.claimJob() is job
    conn.transaction_manager.commit()
    assert job.status == ASSIGNED
    assert job.agent is agent and job.queue is queue
    assert job() == 42
    assert job.status == COMPLETED


def test_retry_policy_factory_validation():
    job = Job(multiply, 1, 2)
    with pytest.raises(LookupError, match="no retry policy factory is "
                       "registered as 'nope'.*NeverRetry"):
        job.retry_policy_factory = 'nope'
    with pytest.raises(TypeError, match='must be None, a callable'):
        job.retry_policy_factory = 5
    assert job.retry_policy_factory is None


# --- calling ---------------------------------------------------------------

def test_extra_call_arguments_are_appended_and_merged(conn):
    job = store(conn, Job(support.echo, 1, a='job', b='job'))
    assert job(2, b='call', c='call') == (
        (1, 2), {'a': 'job', 'b': 'call', 'c': 'call'})
    assert list(job.args) == [1] and dict(job.kwargs) == {
        'a': 'job', 'b': 'job'}


def test_calling_a_completed_job_is_refused(conn):
    job = store(conn, Job(multiply, 2, 3))
    job()
    with pytest.raises(interfaces.BadStatusError,
                       match='NEW or ASSIGNED.*completed-status'):
        job()
    assert job.result == 6


def test_calling_an_active_job_is_refused(conn):
    job = store(conn, Job(callMyself))
    job()
    assert job.result.check(interfaces.BadStatusError)
    assert 'active-status' in job.result.getErrorMessage()


def test_calling_a_pending_job_is_refused(conn, queue):
    job = queue.put(Job(multiply, 2, 3))
    conn.transaction_manager.commit()
    with pytest.raises(interfaces.BadStatusError, match='pending-status'):
        job()
    assert job.status == PENDING


# --- repr ------------------------------------------------------------------

def test_repr(conn):
    job = Job(operator.mul, 14, 3)
    assert repr(job) == (
        "<zcasync.job.Job (oid ?, db ?) ``<built-in function mul>(14, 3)``>")
    store(conn, job)
    oid = int.from_bytes(job._p_oid, 'big')
    assert repr(job) == (
        "<zcasync.job.Job (oid %d, db 'unnamed') "
        "``<built-in function mul>(14, 3)``>" % oid)


def test_repr_of_functions_methods_and_keywords(conn):
    length = conn.root()['length'] = BTrees.Length.Length()
    store(conn, length)
    oid = int.from_bytes(length._p_oid, 'big')
    assert repr(Job(multiply, 1, b='x')).endswith(
        "``test_job.multiply(1, b='x')``>")
    assert repr(Job(length.change, 1)).endswith(
        "``<BTrees.Length.Length (oid %d)>.change(1)``>" % oid)


# --- life cycle ------------------------------------------------------------

def test_active_is_committed_before_the_callable_runs(conn):
    job = store(conn, Job(seeMyselfFromElsewhere))
    seen_status, seen_start = job()
    assert seen_status == ACTIVE
    assert seen_start is not None and seen_start == job.active_start


def test_completed_at_the_end_with_active_times(conn, db):
    clock = FixedClock(datetime.datetime(2030, 5, 1, tzinfo=UTC))
    utils.setClock(clock)
    job = store(conn, Job(multiply, 2, 5))
    job()
    status, result, start, end = support.storedState(
        db, job._p_oid, 'status', 'result', 'active_start', 'active_end')
    assert (status, result) == (COMPLETED, 10)
    assert start == end == clock.now and start.tzinfo is UTC


def test_a_raising_callable_has_its_writes_aborted(conn, db):
    job = store(conn, Job(writeThenRaise))
    result = job()
    assert result.check(ValueError)
    with support.otherConnection(db) as other:
        assert 'touched' not in other.root()
        stored = other.root()['job']
        assert stored.status == COMPLETED
        assert stored.result.getErrorMessage() == 'the job went wrong'


def test_a_callable_returning_a_failure_keeps_its_writes(conn, db):
    job = store(conn, Job(writeThenReturnFailure))
    result = job()
    assert isinstance(result, zcasync.Failure)
    assert result.check(ValueError)
    with support.otherConnection(db) as other:
        assert other.root()['touched'] is True
        assert other.root()['job'].result.getErrorMessage() == (
            'reported, not raised')


def test_job_returning_a_job_waits_for_it_without_running_it(conn):
    # zc.async's semantics: the inner job is the temporary result, and
    # whoever made it runs it (here: the test calls it)
    job = store(conn, Job(returnJob, multiply, 3, 4))
    inner = job()
    assert interfaces.IJob.providedBy(inner) and job.result is inner
    assert job.status == ACTIVE and inner.status == NEW
    assert inner.parent is None
    assert inner() == 12
    assert (job.status, job.result) == (COMPLETED, 12)


def test_job_returning_jobs_nested_twice_waits_for_the_innermost(
        conn, db, queue):
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = Agent(size=3)
    tm = conn.transaction_manager
    outer = queue.put(Job(returnJob, returnJob, multiply, 5))
    tm.commit()
    # the outer job returns a job that returns a job computing 5 * 7
    outer.args.append(7)
    tm.commit()

    assert agent.claimJob() is outer
    tm.commit()
    middle = outer()
    assert outer.status == ACTIVE and outer.result is middle
    assert middle.status == NEW and len(queue) == 0  # not queued for us
    assert outer not in agent   # a waiting job frees its agent slot
    queue.put(middle)
    tm.commit()

    assert agent.claimJob() is middle
    tm.commit()
    inner = middle()
    queue.put(inner)
    assert (outer.status, middle.status, inner.status) == (
        ACTIVE, ACTIVE, PENDING)

    assert agent.claimJob() is inner
    tm.commit()
    assert inner() == 35
    for job in (inner, middle, outer):
        assert support.storedState(db, job._p_oid, 'status', 'result') == (
            COMPLETED, 35)


def test_a_waiting_job_ignores_interruptions(conn, queue):
    agents = testing.activeRegistration(queue, zcasync.instanceuuid.UUID)
    agent = agents['main'] = (
        Agent())
    outer = queue.put(Job(returnJob, multiply, 2, 2))
    conn.transaction_manager.commit()
    agent.claimJob()
    conn.transaction_manager.commit()
    inner = outer()
    assert outer.status == ACTIVE and outer.result is inner
    assert outer.handleInterrupt() is None   # it waits for its inner job
    assert outer.status == ACTIVE and len(queue) == 0


def test_job_returning_a_deferred_of_a_stored_job(conn, db):
    job = store(conn, Job(returnDeferred, 'stored'))
    # as zc.async: the caller gets the Deferred
    assert job() is _deferreds['stored']
    assert job.status == ACTIVE and job.result is None
    # the result is set in a new connection when the deferred fires
    _deferreds.pop('stored').callback('fired')
    assert support.storedState(db, job._p_oid, 'status', 'result') == (
        COMPLETED, 'fired')
    conn.transaction_manager.begin()
    assert job.result == 'fired'


def test_job_returning_a_deferred_that_fails(conn, db):
    job = store(conn, Job(returnDeferred, 'failing'))
    job()
    _deferreds.pop('failing').errback(ValueError('no luck'))
    status, result = support.storedState(db, job._p_oid, 'status', 'result')
    assert status == COMPLETED
    assert isinstance(result, zcasync.Failure) and result.check(ValueError)


def test_job_returning_a_fired_deferred(conn):
    job = store(conn, Job(returnFiredDeferred, 'now'))
    assert job() == 'now'
    assert job.status == COMPLETED


def test_unstored_job_returning_a_deferred():
    job = Job(returnDeferred, 'unstored')
    job()
    assert job.status == ACTIVE
    _deferreds.pop('unstored').callback(3)
    assert (job.status, job.result) == (COMPLETED, 3)


def returnJobReturningDeferred(key):
    return Job(returnDeferred, key)


def test_job_without_a_queue_waits_for_an_inner_job_waiting_on_a_deferred(
        conn, db):
    job = store(conn, Job(returnJobReturningDeferred, 'nested'))
    inner = job()
    assert job._inner is inner and inner.status == NEW
    assert inner() is _deferreds['nested']
    assert (job.status, inner.status) == (ACTIVE, ACTIVE)
    assert support.storedState(db, job._p_oid, 'status') == (ACTIVE,)
    _deferreds.pop('nested').callback('deep')
    conn.transaction_manager.begin()  # the inner job is stored: it
    # completes in a connection of its own when the Deferred fires
    assert (inner.status, inner.result) == (COMPLETED, 'deep')
    assert support.storedState(db, job._p_oid, 'status', 'result') == (
        COMPLETED, 'deep')


_calls = []


def countCall(value):
    _calls.append(value)
    return value


def test_a_job_called_by_two_processes_runs_once(conn, db):
    """Both load the NEW job; B runs it; A's ACTIVE commit then conflicts
    and A finds the job taken instead of running it again."""
    del _calls[:]
    job_a = store(conn, Job(countCall, 'ran'))
    conn.transaction_manager.begin()
    assert job_a.status == NEW   # A's view of the job, loaded now
    with support.otherConnection(db) as other:
        assert other.get(job_a._p_oid)() == 'ran'
        other.transaction_manager.commit()
    with pytest.raises(interfaces.BadStatusError,
                       match='another process took it'):
        job_a()
    assert _calls == ['ran']
    assert (job_a.status, job_a.result) == (COMPLETED, 'ran')


def test_repr_never_raises(conn, db):
    store(conn, Job(multiply, 1, 2))
    with support.otherConnection(db) as other:
        ghost = other.root()['job']
        other.cacheMinimize()
    assert ghost._p_changed is None   # a ghost of a closed connection
    assert repr(ghost) == '<zcasync.job.Job (unreadable)>'
