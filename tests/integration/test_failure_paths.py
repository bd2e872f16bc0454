"""Failure paths of a real dispatcher that must end in a state some process
acts on (issue 9): deactivation hands running jobs to recovery and their
runs never commit (case 2); a claimed job that cannot be loaded is handed
back instead of holding its agent's slot forever (case 4); a reconnection
of the storage wakes the dispatcher (case 6)."""
import collections
import threading

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.POSException

import zcasync
from zcasync import interfaces, invalidations, testing
from zcasync.interfaces import ACTIVE
from zcasync.job import Job

from test_dispatcher_support import (
    Running, addAgent, commit, sync, waitForWorkers, WAIT)

CALLS = collections.Counter()
GATES = collections.defaultdict(threading.Event)


def effect(name):
    """Count the call; the first one waits for GATES[name]; write an
    effect in the job's own transaction."""
    CALLS[name] += 1
    call = CALLS[name]
    if call == 1:
        GATES[name].wait(WAIT)
    job = zcasync.local.getJob()
    job.annotations['effects'] = job.annotations.get('effects', 0) + 1
    return 'call %d' % call


def setup_function():
    CALLS.clear()
    for gate in GATES.values():
        gate.set()
    GATES.clear()


teardown_function = setup_function


def test_deactivation_hands_a_running_job_over_and_its_run_never_commits(
        db, conn, queue):
    running = Running(db, poll_interval=60).start()
    addAgent(conn, running.dispatcher, 'main', size=1)
    job = queue.put(Job(effect, 'drain'))
    commit(conn)
    testing.wait(lambda: CALLS['drain'] == 1)
    token = testing.wait(lambda: sync(conn) or job.run_token)
    # stop the process while the job runs; its thread cannot be stopped
    running.dispatcher.join_timeout = 0.2
    running.reactor.callFromThread(running.reactor.stop)
    running.thread.join(WAIT)
    assert not running.dispatcher.activated
    sync(conn)
    # the job was handed to recovery: a new owner, a recovery job queued
    assert job.status == ACTIVE and job.run_token != token
    [recovery] = list(queue)
    assert recovery.callable == job.handleInterrupt
    assert recovery.args[0] == job.run_token
    # the old run finishes now: its commit must not land
    GATES['drain'].set()
    waitForWorkers(running.threads_before)
    sync(conn)
    assert job.status == ACTIVE and 'effects' not in job.annotations
    # another dispatcher runs the recovery, which runs the job again
    with Running(db, poll_interval=60) as again:
        addAgent(conn, again.dispatcher, 'main', size=1)
        assert testing.wait_for_result(job, WAIT) == 'call 2'
    assert job.annotations['effects'] == 1  # committed once
    assert CALLS['drain'] == 2


# --- a claimed job that cannot be loaded ---------------------------------

class FlakyStorage(ZODB.FileStorage.FileStorage):
    """Fails loads of `fail_oids` (once each) in dispatcher worker
    threads, as a ZEO disconnection or a database blip would."""

    fail_oids = ()

    def loadBefore(self, oid, tid):
        if oid in self.fail_oids and \
                threading.current_thread().name.startswith('zcasync '):
            self.fail_oids = self.fail_oids - {oid}
            raise ZODB.POSException.StorageError(
                'simulated transient load error')
        return super().loadBefore(oid, tid)


def test_a_job_that_fails_to_load_after_its_claim_is_handed_back(
        tmp_path, capture):
    storage = FlakyStorage(str(tmp_path / 'Data.fs'))
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        from zcasync.queue import Queue, Queues
        queues = conn.root()[interfaces.KEY] = Queues()
        queue = queues[''] = Queue()
        tm.commit()
        with Running(db, poll_interval=60) as running:
            addAgent(conn, running.dispatcher, 'main', size=1)
            flaky = queue.put(Job(effect, 'flaky'))
            GATES['flaky'].set()
            tm.commit()
            storage.fail_oids = frozenset([flaky._p_oid])
            later = queue.put(Job(effect, 'later'))
            GATES['later'].set()
            tm.commit()
            assert testing.wait_for_result(flaky, WAIT) == 'call 1'
            assert testing.wait_for_result(later, WAIT) == 'call 1'
            capture.find(40, 'could not load claimed')
            capture.find(30, 'no worker thread runs')
        assert storage.fail_oids == frozenset()
        assert flaky.annotations['zcasync.RetryCommonFourTimes'] == {
            'interruption': 1}
        assert flaky.annotations['effects'] == 1
    finally:
        tm.abort()
        conn.close()
        db.close()


# --- reconnections ------------------------------------------------------------

def test_a_storage_reconnection_is_heard_as_anything_may_have_changed(db):
    heard = []
    watch = invalidations.watch(db, lambda oids, instance: heard.append(oids))
    try:
        # what a ZEO ClientStorage calls when it (re)connects to its server
        db._mvcc_storage.invalidateCache()
        assert heard == [None]
    finally:
        watch.close()


def test_a_dispatcher_polls_at_once_when_anything_may_have_changed(
        db, conn, queue):
    with Running(db, poll_interval=60) as running:
        dispatcher = running.dispatcher
        testing.get_poll(dispatcher, 0)
        before = len(dispatcher.polls)
        db._mvcc_storage.invalidateCache()
        testing.wait(lambda: len(dispatcher.polls) > before, 5,
                     'no poll after a reconnection')
