"""What the dashboard may change: retry a failed job, cancel a job, resize an agent, prune stopped dispatchers.

An action needs the dashboard's token (``--token`` or
``ZCASYNC_DASHBOARD_TOKEN``) in an ``Authorization: Bearer TOKEN``
header; without a configured token the dashboard is read-only.  The
token is checked before anything is read, so a refused action writes
nothing.  Each action runs in its own transaction, retried on conflicts;
an action the job's state does not allow raises ``ApiError`` (409) inside
that transaction, which is then aborted.
"""
import hmac

from zcasync import interfaces
from zcasync import utils
from zcasync.web import api
from zcasync.web.api import ApiError

MAX_AGENT_SIZE = 1000


def checkToken(expected, authorization):
    """Refuse (ApiError 403) unless `authorization` is ``Bearer
    <expected>``; the token itself never appears in a message."""
    if not expected:
        raise ApiError(403, 'this dashboard is read-only: start it with '
                            '--token or ZCASYNC_DASHBOARD_TOKEN to allow '
                            'actions')
    given = None
    if authorization and authorization[:7].lower() == 'bearer ':
        given = authorization[7:].strip()
    if not given:
        raise ApiError(403, 'actions need the dashboard token in an '
                            '"Authorization: Bearer TOKEN" header; nothing '
                            'was changed')
    if not hmac.compare_digest(given.encode('utf-8', 'replace'),
                               expected.encode('utf-8')):
        raise ApiError(403, 'wrong token; nothing was changed')


def _text(body, name, required=True):
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ApiError(400, '%r must be a string in the JSON body (got %r)'
                       % (name, value))
    return value


def retry(conn, job_id, body):
    """Queue a new job with the callable, arguments and policy of a
    failed job (not its callbacks)."""
    from zcasync.job import Job
    job = api.findJob(conn, job_id)
    status = api.statusName(job.status)
    if status != 'completed' or not utils.isFailure(job.result):
        raise ApiError(409, 'cannot retry job %s: it is %s%s; only a failed '
                            'job can be queued again' % (
                                job_id, status, ' and succeeded'
                                if status == 'completed' else ''))
    again = job.annotations.get(api.RETRIED_AS)
    if again is not None:
        raise ApiError(409, 'job %s was already retried as job %s; retry '
                            'that one if it failed too' % (job_id, again))
    queue = job.queue
    if queue is None:
        raise ApiError(409, 'cannot retry job %s: it belongs to no queue (a '
                            'callback runs with its parent job)' % job_id)
    try:
        positional, keywords = job.callArguments()
        new = Job(job.callable, *positional, **keywords)
    except (TypeError, ValueError) as e:
        raise ApiError(409, 'cannot retry job %s: its callable cannot be '
                            'stored again here (%s); start the dashboard '
                            'with --import for the module that defines it'
                       % (job_id, api.firstLine(e))) from None
    new.quota_names = [n for n in job.quota_names if n in queue.quotas]
    new.failure_log_level = job.failure_log_level
    new.annotations[api.RETRY_OF] = api.jobId(job)
    queue.put(new, begin_by=job.begin_by,
              retry_policy_factory=job.retry_policy_factory)
    job.annotations[api.RETRIED_AS] = api.jobId(new)
    return {'action': 'retry', 'job': api.jobId(job),
            'new_job': api.jobId(new), 'queue': queue.name}


def cancel(conn, job_id, body):
    """Cancel a job (``job.cancel``, see ``zcasync.control``): one that
    has not started completes with CancelledError; a running one is asked
    to stop and completed with CancelledError after ``grace`` seconds (in
    the body; default ``control.DEFAULT_GRACE``).  ``outcome`` in the
    answer: 'cancelled', 'stopping', or 'removed' (a parked job whose
    module cannot be imported here: only taken out of its queue)."""
    from zcasync import control
    job = api.findJob(conn, job_id)
    grace = body.get('grace')
    try:
        if grace is not None:
            control.seconds(grace, 'grace', 'give the seconds a running job '
                            'has to stop before it is completed anyway')
    except (TypeError, ValueError) as e:
        raise ApiError(400, str(e)) from None
    queue = job.queue
    try:
        outcome = job.cancel(grace=grace)
    except interfaces.BadStatusError as e:
        raise ApiError(409, 'cannot cancel job %s: it is %s; only a job '
                            'that has not completed can be cancelled (%s)'
                       % (job_id, api.statusName(job.status), e)) from None
    answer = {'action': 'cancel', 'job': api.jobId(job),
              'queue': queue.name if queue is not None else None,
              'outcome': outcome}
    if outcome == control.STOPPING:
        answer['grace'] = control.DEFAULT_GRACE if grace is None else grace
    return answer


def _queue(conn, name):
    queues = conn.root().get(interfaces.KEY)
    queue = queues.get(name) if queues is not None else None
    if queue is None:
        raise ApiError(404, 'no queue %r' % (name,))
    return queue


def _registration(queue, uuid_text):
    for uuid, agents in queue.dispatchers.items():
        if str(uuid) == uuid_text:
            return agents
    raise ApiError(404, 'no dispatcher %s in queue %r' % (uuid_text,
                                                          queue.name))


def resize(conn, target, body):
    """Set an agent's size: ``{"queue", "dispatcher", "agent", "size"}``."""
    size = body.get('size')
    if not isinstance(size, int) or isinstance(size, bool) or \
            not 0 <= size <= MAX_AGENT_SIZE:
        raise ApiError(400, '"size" must be an integer from 0 to %d, not %r'
                       % (MAX_AGENT_SIZE, size))
    queue = _queue(conn, _text(body, 'queue'))
    agents = _registration(queue, _text(body, 'dispatcher'))
    name = _text(body, 'agent')
    agent = agents.get(name)
    if agent is None:
        raise ApiError(404, 'dispatcher %s has no agent %r in queue %r'
                       % (agents.UUID, name, queue.name))
    previous = agent.size
    if previous != size:
        agent.size = size
    return {'action': 'resize', 'queue': queue.name,
            'dispatcher': str(agents.UUID), 'agent': name, 'size': size,
            'previous_size': previous}


def prune(conn, target, body):
    """Unregister stopped dispatchers (optionally of one queue, or one
    dispatcher); their agents' completed-job lists go with them."""
    queue_name = _text(body, 'queue', required=False)
    wanted = _text(body, 'dispatcher', required=False)
    queues = api.queuesOf(conn.root())
    if queue_name is not None:
        queues = [(queue_name, _queue(conn, queue_name))]
    pruned, kept, found = [], [], False
    for name, queue in queues:
        for uuid, agents in list(queue.dispatchers.items()):
            if wanted is not None and str(uuid) != wanted:
                continue
            found = True
            entry = {'queue': name, 'uuid': str(uuid)}
            if agents.activated:
                if wanted is not None:
                    raise ApiError(409, 'dispatcher %s is %s in queue %r; '
                                        'only stopped dispatchers can be '
                                        'pruned' % (wanted, api.
                                                    registrationState(agents),
                                                    name))
                continue
            if any(len(agent) for agent in agents.values()):
                kept.append(dict(entry, reason='its agents hold jobs'))
                continue
            queue.dispatchers.unregister(uuid)
            pruned.append(entry)
    if wanted is not None and not found:
        raise ApiError(404, 'no dispatcher %s' % wanted)
    return {'action': 'prune', 'pruned': pruned, 'kept': kept}


ACTIONS = {'retry': retry, 'cancel': cancel, 'resize': resize,
           'prune': prune}


def perform(conn, name, target, body):
    """Run action `name` in its own transaction, retried on conflicts."""
    action = ACTIONS[name]
    tm = conn.transaction_manager
    for attempt in tm.attempts(10):
        with attempt:
            result = action(conn, target, body)
    return result
