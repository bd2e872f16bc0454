"""The dashboard's actions (zcasync.web.actions): the token, and retry,
cancel, resize and prune, each in its own transaction; a refused action
writes nothing."""
import operator
import uuid as uuidmodule

import pytest

from tests.fsutil import lastTransaction
from zcasync import interfaces
from zcasync.web import actions, api
from zcasync.web.api import ApiError

from web_support import putJobs, runJobs, startJob, worker, WORKER


@pytest.mark.parametrize('expected, header, message', [
    (None, 'Bearer s3cret', 'this dashboard is read-only'),
    ('s3cret', None, 'actions need the dashboard token'),
    ('s3cret', 'Basic s3cret', 'actions need the dashboard token'),
    ('s3cret', 'Bearer ', 'actions need the dashboard token'),
    ('s3cret', 'Bearer wrong', 'wrong token'),
    ('s3cret', 'Bearer s3cret2', 'wrong token'),
])
def test_actions_need_the_token(expected, header, message):
    with pytest.raises(ApiError) as e:
        actions.checkToken(expected, header)
    assert e.value.status == 403 and message in e.value.message
    assert 's3cret' not in e.value.message


def test_the_right_token_passes():
    actions.checkToken('s3cret', 'Bearer s3cret')
    actions.checkToken('s3cret', 'bearer  s3cret ')


def refused(conn, tmp_path, name, target, body, status, message):
    """The action fails with `status` and the file is not written."""
    conn.transaction_manager.commit()
    before = lastTransaction(tmp_path / 'Data.fs')
    with pytest.raises(ApiError) as e:
        actions.perform(conn, name, target, body)
    assert e.value.status == status
    assert message in e.value.message
    assert lastTransaction(tmp_path / 'Data.fs') == before
    return e.value


def test_retry_queues_a_failed_job_again(conn, queue, ticking, tmp_path):
    [failed, succeeded] = putJobs(conn, (operator.truediv, 1, 0),
                                  (operator.add, 1, 2))
    runJobs(conn)
    result = actions.perform(conn, 'retry', api.jobId(failed), {})
    conn.transaction_manager.begin()
    [new] = list(queue)
    assert result == {'action': 'retry', 'job': api.jobId(failed),
                      'new_job': api.jobId(new), 'queue': ''}
    assert new.args == [1, 0] and new.callable is operator.truediv
    assert new.annotations['zcasync.retry_of'] == api.jobId(failed)
    assert failed.annotations['zcasync.retried_as'] == api.jobId(new)
    refused(conn, tmp_path, 'retry', api.jobId(succeeded), {}, 409,
            'it is completed and succeeded; only a failed job')
    refused(conn, tmp_path, 'retry', api.jobId(new), {}, 409,
            'it is pending')
    refused(conn, tmp_path, 'retry', '999999', {}, 404, 'no job 999999')
    # a second retry of the same failed job is refused: it names the new one
    refused(conn, tmp_path, 'retry', api.jobId(failed), {}, 409,
            'was already retried as job %s' % api.jobId(new))


def test_cancel_completes_a_pending_job_and_asks_a_running_one_to_stop(
        conn, queue, ticking, tmp_path):
    from zcasync import control
    [first, second] = putJobs(conn, (operator.add, 1, 2),
                              (operator.add, 3, 4))
    result = actions.perform(conn, 'cancel', api.jobId(second), {})
    assert result == {'action': 'cancel', 'job': api.jobId(second),
                      'queue': '', 'outcome': 'cancelled'}
    conn.transaction_manager.begin()
    assert list(queue) == [first]
    assert second.status == interfaces.COMPLETED
    assert second.result.check(interfaces.CancelledError)
    refused(conn, tmp_path, 'cancel', api.jobId(second), {}, 409,
            'it is completed; only a job that has not completed')
    from zcasync.web.listing import JobQuery
    for state in ('cancelled', 'failed', 'completed'):
        listed = JobQuery(state=state).run(conn.root())['items']
        assert [i['id'] for i in listed] == [api.jobId(second)], state
    assert JobQuery(state='succeeded').run(conn.root())['items'] == []
    startJob(conn)
    refused(conn, tmp_path, 'cancel', api.jobId(first), {'grace': -1}, 400,
            'grace must be a finite number of seconds >= 0')
    result = actions.perform(conn, 'cancel', api.jobId(first),
                             {'grace': 2})
    assert result == {'action': 'cancel', 'job': api.jobId(first),
                      'queue': '', 'outcome': 'stopping', 'grace': 2}
    conn.transaction_manager.begin()
    assert first.status == interfaces.ACTIVE
    assert control.stopRequest(first, first.run_token)['grace'] == 2


def test_resize_sets_an_agents_size(conn, queue, tmp_path):
    agent = worker(conn)['main']
    body = {'queue': '', 'dispatcher': str(WORKER), 'agent': 'main',
            'size': 5}
    assert actions.perform(conn, 'resize', None, body) == dict(
        body, action='resize', previous_size=3)
    conn.transaction_manager.begin()
    assert agent.size == 5
    for change, status, message in (
            ({'size': -1}, 400, '"size" must be an integer from 0 to 1000'),
            ({'size': '2'}, 400, '"size" must be an integer'),
            ({'size': True}, 400, '"size" must be an integer'),
            ({'queue': 'nope'}, 404, "no queue 'nope'"),
            ({'queue': None}, 400, "'queue' must be a string"),
            ({'dispatcher': str(uuidmodule.uuid4())}, 404, 'no dispatcher'),
            ({'agent': 'other'}, 404, "has no agent 'other'")):
        refused(conn, tmp_path, 'resize', None, dict(body, **change),
                status, message)


def test_prune_unregisters_stopped_dispatchers_only(conn, queue, ticking,
                                                    tmp_path):
    from zcasync.agent import Agent
    worker(conn)  # alive: kept
    registry = queue.dispatchers
    stopped = uuidmodule.uuid4()
    registry.register(stopped)
    registry[stopped]['main'] = Agent()
    busy = uuidmodule.uuid4()
    registry.register(busy)
    agents = registry[busy]
    agents['main'] = Agent()
    agents.activate()
    conn.transaction_manager.commit()
    putJobs(conn, (operator.add, 1, 2))
    agents['main'].claimJob()
    agents.activated = None  # stopped, but still holding a job
    conn.transaction_manager.commit()
    refused(conn, tmp_path, 'prune', None, {'dispatcher': str(WORKER)},
            409, 'is alive in queue')
    refused(conn, tmp_path, 'prune', None, {'queue': 'nope'}, 404,
            "no queue 'nope'")
    result = actions.perform(conn, 'prune', None, {})
    assert result == {'action': 'prune',
                      'pruned': [{'queue': '', 'uuid': str(stopped)}],
                      'kept': [{'queue': '', 'uuid': str(busy),
                                'reason': 'its agents hold jobs'}]}
    conn.transaction_manager.begin()
    assert set(registry) == {WORKER, busy}
    assert registry[WORKER].activated is not None


def test_an_action_that_conflicts_is_retried(conn, db, queue, ticking):
    """The action's transaction is retried when another connection
    committed a conflicting change meanwhile."""
    import transaction
    agent = worker(conn)['main']
    other_tm = transaction.TransactionManager()
    other = db.open(transaction_manager=other_tm)
    calls = []
    resize = actions.ACTIONS['resize']

    def racing(conn, target, body):
        if not calls:
            other_agent = other.get(agent._p_oid)
            other_agent.size = 7
            other_tm.commit()
        calls.append(1)
        return resize(conn, target, body)
    actions.ACTIONS['resize'] = racing
    try:
        actions.perform(conn, 'resize', None, {
            'queue': '', 'dispatcher': str(WORKER), 'agent': 'main',
            'size': 2})
    finally:
        actions.ACTIONS['resize'] = resize
        other_tm.abort()
        other.close()
    assert len(calls) == 2
    conn.transaction_manager.begin()
    assert agent.size == 2
