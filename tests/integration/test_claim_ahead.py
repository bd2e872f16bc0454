"""Jobs claimed ahead (issue 10): a dispatcher claims, beyond its agent's
size, a buffer of jobs held by the agent but not started, which its
threads start one by one in the commit that completes their previous job.
Such jobs are never ACTIVE before a thread runs them: a graceful stop
(``claiming = False``) and deactivation give them back to the queue as
they were, with no interruption counted."""
import collections
import threading

from zcasync import testing
from zcasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, PENDING
from zcasync.job import Job

from test_dispatcher_support import (
    Running, addAgent, commit, sync, waitForWorkers, WAIT)

CALLS = collections.Counter()
GATE = threading.Event()


def gated(n):
    CALLS[n] += 1
    GATE.wait(WAIT)
    return n


def setup_function():
    CALLS.clear()
    GATE.clear()


def teardown_function():
    GATE.set()


def statuses(agent, conn):
    sync(conn)
    return collections.Counter(job.status for job in agent)


def test_a_buffer_is_claimed_ahead_and_given_back_on_a_graceful_stop(
        db, conn, queue):
    running = Running(db, poll_interval=60,
                      setup=lambda d: setattr(d, 'prefetch', 4)).start()
    try:
        agent = addAgent(conn, running.dispatcher, 'main', size=1)
        jobs = [queue.put(Job(gated, n)) for n in range(10)]
        commit(conn)
        testing.wait(lambda: statuses(agent, conn) ==
                     {ACTIVE: 1, ASSIGNED: 4}, WAIT,
                     lambda: 'agent holds %s' % statuses(agent, conn))
        # only one started (its ACTIVE mark commits before its thread
        # calls it: wait for the call)
        testing.wait(lambda: sum(CALLS.values()) == 1, WAIT,
                     lambda: 'calls: %s' % CALLS)
        # stop claiming: the jobs claimed ahead go back to the queue
        running.reactor.callFromThread(
            setattr, running.dispatcher, 'claiming', False)
        testing.wait(lambda: statuses(agent, conn) == {ACTIVE: 1}, WAIT,
                     lambda: 'agent holds %s' % statuses(agent, conn))
        assert [j.status for j in jobs].count(PENDING) == 9
        for job in jobs:
            assert 'zcasync.RetryCommonFourTimes' not in job.annotations
        GATE.set()
        [started] = [j for j in jobs if j.status != PENDING]
        assert testing.wait_for_result(started, WAIT) == started.args[0]
    finally:
        GATE.set()
        running.stop()


def test_deactivation_gives_back_jobs_claimed_ahead_uncounted(
        db, conn, queue):
    running = Running(db, poll_interval=60,
                      setup=lambda d: setattr(d, 'prefetch', 3)).start()
    agent = addAgent(conn, running.dispatcher, 'main', size=1)
    jobs = [queue.put(Job(gated, n)) for n in range(6)]
    commit(conn)
    testing.wait(lambda: statuses(agent, conn) == {ACTIVE: 1, ASSIGNED: 3},
                 WAIT, lambda: 'agent holds %s' % statuses(agent, conn))
    running.dispatcher.join_timeout = 0.1
    running.reactor.callFromThread(running.reactor.stop)
    running.thread.join(WAIT)
    sync(conn)
    assert len(agent) == 0
    by_status = collections.Counter(job.status for job in jobs)
    # the running one is handed to recovery; the others are pending again,
    # never started, no interruption counted
    assert by_status == {ACTIVE: 1, PENDING: 5}
    for job in jobs:
        if job.status == PENDING:
            assert job.active_start is None
            assert 'zcasync.RetryCommonFourTimes' not in job.annotations
    GATE.set()
    waitForWorkers(running.threads_before)
    # another dispatcher runs them all, each once
    with Running(db, poll_interval=60) as again:
        addAgent(conn, again.dispatcher, 'main', size=3)
        for job in jobs:
            assert testing.wait_for_result(job, WAIT) == job.args[0]
    assert all(job.status == COMPLETED for job in jobs)
    assert sorted(CALLS) == list(range(6))
    assert CALLS[jobs[0].args[0]] in (1, 2)  # the interrupted one may rerun
    assert sum(CALLS.values()) <= 7


def test_threads_start_claimed_ahead_jobs_in_their_completing_commit(
        db, conn, queue):
    """Commits per job: with a buffer, a drain costs about one commit per
    job (the worker's), plus one poll commit per refill of the buffer."""
    GATE.set()
    commits = []
    storage = db.storage
    original = storage.tpc_finish

    def counting(*args, **kw):
        commits.append(1)
        return original(*args, **kw)
    with Running(db, poll_interval=60,
                 setup=lambda d: setattr(d, 'prefetch', 20)) as running:
        agent = addAgent(conn, running.dispatcher, 'main', size=2)
        jobs = [queue.put(Job(gated, n)) for n in range(200)]
        commit(conn)
        storage.tpc_finish = counting
        try:
            for job in jobs:
                testing.wait_for_result(job, WAIT)
        finally:
            del storage.tpc_finish
        testing.wait(lambda: sync(conn) or len(agent) == 0, WAIT,
                     'the completed jobs were never settled')
    assert len(agent.completed) == 200
    # about 200 worker commits and ~200/10 poll commits; without the
    # buffer, one poll commit per completion or two
    assert len(commits) < 200 * 1.3, len(commits)
