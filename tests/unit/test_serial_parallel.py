"""``serial`` and ``parallel`` (issue 2, section 3), run from a queue in
immediate mode (``zcasync.testing.runQueuedJobs``), including recovery
after the process died at each point of the run."""
import pytest

import zcasync
from zcasync import testing
from zcasync.interfaces import (
    ACTIVE, CALLBACKS, COMPLETED, KEY, PENDING)
from zcasync.job import Job, parallel, serial

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support

_runs = []


@pytest.fixture(autouse=True)
def clean():
    del _runs[:]


def record(name, value):
    _runs.append(name)
    return value


def fail(message):
    _runs.append('fail')
    raise ValueError(message)


def one():
    return 1


def two():
    return 2


def summarize(label, *jobs):
    """A postprocess: the completed jobs are appended to its arguments."""
    return (label, [(job.status, job.result) for job in jobs])


def threeJobs():
    return [Job(record, name, value)
            for name, value in (('a', 1), ('b', 2), ('c', 3))]


def queued(conn):
    return list(conn.root()[KEY][''])


def run(conn, main):
    testing.runQueuedJobs(conn)
    conn.transaction_manager.begin()
    return main.status, main.result


@pytest.mark.parametrize('kind', [serial, parallel])
def test_default_result_is_the_list_of_results(conn, queue, kind):
    main = queue.put(kind(*threeJobs()))
    assert run(conn, main) == (COMPLETED, [1, 2, 3])
    assert sorted(_runs) == ['a', 'b', 'c']


@pytest.mark.parametrize('kind', [serial, parallel])
def test_postprocess_receives_the_completed_jobs(conn, queue, kind):
    main = queue.put(kind(*threeJobs(), postprocess=Job(summarize, 'sum')))
    assert run(conn, main) == (COMPLETED, (
        'sum', [(COMPLETED, 1), (COMPLETED, 2), (COMPLETED, 3)]))


@pytest.mark.parametrize('kind', [serial, parallel])
def test_plain_callables_are_made_jobs(conn, queue, kind):
    main = queue.put(kind(one, two, postprocess=summarize))
    status, (label, outcomes) = run(conn, main)
    assert (status, outcomes) == (COMPLETED, [(COMPLETED, 2)])
    assert label.status == COMPLETED and label.result == 1


@pytest.mark.parametrize('kind', [serial, parallel])
def test_a_failing_job_does_not_stop_the_others(conn, queue, kind):
    main = queue.put(kind(Job(record, 'a', 1), Job(fail, 'broken'),
                          Job(record, 'c', 3)))
    status, results = run(conn, main)
    assert status == COMPLETED
    assert results[0] == 1 and results[2] == 3
    assert results[1].check(ValueError)
    assert results[1].getErrorMessage() == 'broken'


def test_serial_queues_one_job_at_a_time_in_order(conn, queue):
    jobs = threeJobs()
    main = queue.put(serial(*jobs))
    testing.runQueuedJobs(conn, limit=1)
    assert queued(conn) == [jobs[0]] and main.status == ACTIVE
    testing.runQueuedJobs(conn, limit=1)
    assert queued(conn) == [jobs[1]] and jobs[0].status == COMPLETED
    testing.runQueuedJobs(conn, limit=1)
    assert queued(conn) == [jobs[2]]
    assert run(conn, main) == (COMPLETED, [1, 2, 3])
    assert _runs == ['a', 'b', 'c']


def test_parallel_queues_all_jobs_at_once(conn, queue):
    jobs = threeJobs()
    main = queue.put(parallel(*jobs))
    testing.runQueuedJobs(conn, limit=1)
    assert queued(conn) == jobs
    assert [job.status for job in jobs] == [PENDING] * 3
    assert main.status == ACTIVE
    assert run(conn, main) == (COMPLETED, [1, 2, 3])


# --- interruptions -----------------------------------------------------
#
# The immediate-mode "process" dies at one point; then the registry
# cleans up what its agent held (as when a sibling finds it dead):
# ACTIVE jobs get a handleInterrupt job, CALLBACKS jobs a resumeCallbacks
# job; running the queue again must give the right result.

def mainActive(main, jobs, post):
    return main._status == ACTIVE


def firstActive(main, jobs, post):
    return jobs[0]._status == ACTIVE


def firstInCallbacks(main, jobs, post):
    # the next commit is the ACTIVE commit of the job's first callback
    return jobs[0]._status == CALLBACKS


def lastActive(main, jobs, post):
    return jobs[-1]._status == ACTIVE


def lastInCallbacks(main, jobs, post):
    return jobs[-1]._status == CALLBACKS


def postprocessActive(main, jobs, post):
    return post._status == ACTIVE


def postprocessInCallbacks(main, jobs, post):
    # the postprocess's callback completes the main job: it dies before
    return post._status == CALLBACKS


@pytest.mark.parametrize('kind', [serial, parallel])
@pytest.mark.parametrize('point', [
    mainActive, firstActive, firstInCallbacks, lastActive, lastInCallbacks,
    postprocessActive, postprocessInCallbacks])
def test_recovery_after_an_interruption(conn, db, queue, kind, point):
    tm = conn.transaction_manager
    jobs = threeJobs()
    post = Job(summarize, 'sum')
    main = queue.put(kind(*jobs, postprocess=post))
    tm.commit()
    crash = support.Crash(tm, lambda: point(main, jobs, post))
    try:
        with pytest.raises(support.SimulatedCrash):
            testing.runQueuedJobs(conn)
    finally:
        crash.stop()
        tm.abort()
    assert main.status != COMPLETED

    # recovery, as the registry does it for a dead dispatcher
    queue.dispatchers[testing.IMMEDIATE_UUID].activate()
    tm.commit()
    testing.runQueuedJobs(conn)

    with support.otherConnection(db) as other:
        stored = other.get(main._p_oid)
        assert stored.status == COMPLETED
        assert stored.result == (
            'sum', [(COMPLETED, 1), (COMPLETED, 2), (COMPLETED, 3)])
        assert len(other.root()[KEY]['']) == 0
    # every job's work was committed exactly once, whatever ran twice
    assert sorted(set(_runs)) == ['a', 'b', 'c']


@pytest.mark.parametrize('kind', [serial, parallel])
def test_main_job_interrupted_twice(conn, db, queue, kind):
    tm = conn.transaction_manager
    jobs = threeJobs()
    post = Job(summarize, 'sum')
    main = queue.put(kind(*jobs, postprocess=post))
    tm.commit()
    queue.dispatchers.register(testing.IMMEDIATE_UUID)
    agents = queue.dispatchers[testing.IMMEDIATE_UUID]
    for cleanup in (agents.activate, agents.deactivate):
        support.crashWhileActive(_claimImmediately(conn, queue, main))
        cleanup()
        tm.commit()
        # the handleInterrupt job puts the main job back at the front
        assert testing.runQueuedJobs(conn, limit=1)[0].callable == (
            main.handleInterrupt)
        assert main.status == PENDING and queued(conn)[0] is main
    assert run(conn, main) == (
        COMPLETED, ('sum', [(COMPLETED, 1), (COMPLETED, 2), (COMPLETED, 3)]))
    assert zcasync.utils.isFailure(main.result) is False


def _claimImmediately(conn, queue, job):
    agent = testing._immediateAgent(queue)
    assert testing._immediateClaim(agent) is job
    conn.transaction_manager.commit()
    return job
