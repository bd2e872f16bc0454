"""zcasync.local inside jobs run by a real dispatcher (SelectReactor in a
thread, FileStorage): where a job runs, live annotations seen across
connections while the job is still running, and the bad paths."""
import persistent
import persistent.mapping
import pytest

import zcasync
from zcasync import interfaces
from zcasync import testing
from zcasync.job import Job

from test_dispatcher_support import (
    WAIT, EVENTS, Running, addAgent, commit, sync)

#: what jobs saw that cannot be stored as a result
SEEN = {}


def whereAmI():
    local = zcasync.local
    SEEN['dispatcher'] = local.getDispatcher()
    SEEN['reactor'] = local.getReactor()
    SEEN['job'] = local.getJob()
    return {'oid': local.getJob()._p_oid,
            'queue': local.getQueue().name,
            'agent': local.getAgentName(),
            'uuid': local.getDispatcher().UUID}


def reportProgress(name):
    """Publish progress live, wait to be released, then tell what this
    job's own transaction sees."""
    zcasync.local.setLiveAnnotation('progress', 0.5)
    live = zcasync.local.getLiveAnnotation('progress')
    EVENTS[name].wait(WAIT)
    local = zcasync.local.getJob().annotations.get('progress', 'MISSING')
    return {'live': live, 'local': local}


def askForReply():
    zcasync.local.setLiveAnnotation('question', 'anyone there?')
    return {
        'reply': zcasync.local.getLiveAnnotation(
            'reply', timeout=WAIT, poll=0.05),
        'absent now': zcasync.local.getLiveAnnotation(
            'absent', default='default'),
        'absent after waiting': zcasync.local.getLiveAnnotation(
            'absent', default='default', timeout=0.2, poll=0.05),
        'local reply': zcasync.local.getJob().annotations.get(
            'reply', 'MISSING'),
    }


def annotateOther(oid):
    other = zcasync.local.getJob()._p_jar.get(oid)
    zcasync.local.setLiveAnnotation('from a sibling', 'hello', job=other)
    return zcasync.local.getLiveAnnotation('from a sibling', job=other)


def refusePersistent():
    messages = []
    for value in (persistent.mapping.PersistentMapping(),
                  [1, {'nested': persistent.mapping.PersistentMapping()}],
                  zcasync.local.getJob(),
                  lambda: None):
        try:
            zcasync.local.setLiveAnnotation('bad', value)
        except ValueError as e:
            messages.append(str(e))
    return messages


@pytest.fixture(autouse=True)
def cleanSeen():
    SEEN.clear()
    yield
    SEEN.clear()


@pytest.fixture
def running(db, conn, queue):
    with Running(db) as running:
        addAgent(conn, running.dispatcher, 'main', size=3)
        yield running


def put(conn, queue, *args):
    job = queue.put(Job(*args))
    commit(conn)
    return job


def test_where_a_job_runs(conn, queue, running):
    job = put(conn, queue, whereAmI)
    assert testing.wait_for_result(job, WAIT) == {
        'oid': job._p_oid, 'queue': '', 'agent': 'main',
        'uuid': running.uuid}
    assert SEEN['dispatcher'] is running.dispatcher
    assert SEEN['reactor'] is running.reactor
    assert SEEN['job']._p_oid == job._p_oid
    assert SEEN['job']._p_jar is not job._p_jar  # the worker's connection


@pytest.mark.parametrize('name', [
    'getJob', 'getQueue', 'getDispatcher', 'getReactor', 'getAgentName'])
def test_outside_a_job(name):
    with pytest.raises(ValueError) as raised:
        getattr(zcasync.local, name)()
    assert 'only available inside a running job' in str(raised.value)
    assert 'no job is running in this thread' in str(raised.value)


def test_live_annotations_outside_a_job():
    with pytest.raises(ValueError, match='no job is running'):
        zcasync.local.setLiveAnnotation('x', 1)
    with pytest.raises(ValueError, match='no job is running'):
        zcasync.local.getLiveAnnotation('x')


def test_setLiveAnnotation_is_seen_before_the_job_commits(
        conn, queue, running):
    job = put(conn, queue, reportProgress, 'progress')
    assert testing.wait_for_annotation(job, 'progress', WAIT) == 0.5
    sync(conn)
    assert job.status == interfaces.ACTIVE  # the job has not committed
    EVENTS['progress'].set()
    assert testing.wait_for_result(job, WAIT) == {
        'live': 0.5, 'local': 'MISSING'}
    assert job.annotations['progress'] == 0.5


def test_getLiveAnnotation_reads_another_connections_commit(
        conn, queue, running):
    job = put(conn, queue, askForReply)
    assert testing.wait_for_annotation(job, 'question', WAIT) == \
        'anyone there?'
    sync(conn)
    assert job.status == interfaces.ACTIVE
    job.annotations['reply'] = 'HIYA'
    commit(conn)
    assert testing.wait_for_result(job, WAIT) == {
        'reply': 'HIYA', 'absent now': 'default',
        'absent after waiting': 'default', 'local reply': 'MISSING'}


def test_live_annotation_of_another_job(conn, queue, running):
    target = Job(len, ())
    conn.root()['target'] = target
    commit(conn)
    job = put(conn, queue, annotateOther, target._p_oid)
    assert testing.wait_for_result(job, WAIT) == 'hello'
    sync(conn)
    assert target.annotations['from a sibling'] == 'hello'


def test_persistent_and_unpicklable_values_are_refused(conn, queue, running):
    job = put(conn, queue, refusePersistent)
    messages = testing.wait_for_result(job, WAIT)
    assert len(messages) == 4
    for message in messages[:3]:
        assert 'must not be or contain a persistent object' in message
        assert 'store plain values' in message
    assert 'must be picklable' in messages[3]
    sync(conn)
    assert 'bad' not in job.annotations


def test_persistent_value_refused_outside_a_job_too():
    with pytest.raises(ValueError, match='persistent object'):
        zcasync.local.setLiveAnnotation('x', persistent.Persistent())
