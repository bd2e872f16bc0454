"""The JSON shapes of the dashboard API: the one place that turns queues,
dispatchers, agents, quotas and jobs into dicts (``docs/api.md``
documents every field).

Conventions: times are ISO 8601 UTC strings, durations are float
seconds, job ids are ``OID@DATABASE`` (as the ``zcasync`` command prints
them), statuses are names (``pending``, ``assigned``, ``active``,
``callbacks``, ``completed``; a status constant this module does not know
is shown as it is stored).  Values a job provides (arguments, results,
annotations) are made JSON-ready for display: numbers, strings, lists and
string-keyed dicts as they are, datetimes as ISO text, anything else as a
truncated repr.

Nothing here loads all jobs: counts come from lengths, lists are paged by
cursor (a queue key, a completion time) and a filtered walk stops after
``SCAN_LIMIT`` jobs or ``SCAN_SECONDS``, returning a cursor to go on.
"""
import base64
import datetime
import json
import math
import types

import ZODB.POSException
import ZODB.utils

from zcasync import interfaces
from zcasync import utils

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: A filtered list looks at most at this many jobs (or for this long) per
#: request, then answers with what it found and a cursor to go on.
SCAN_LIMIT = 2000
SCAN_SECONDS = 0.1
TEXT_LIMIT = 2000
TRACEBACK_LIMIT = 100000
ANNOTATION_LIMIT = 200
RUNNING_LIMIT = 50

#: The live annotations the pages show for a running job: ``progress`` is
#: a fraction in [0, 1], a ``(done, total)`` pair or ``{'done': d,
#: 'total': t}``; ``status`` is free text.
PROGRESS = 'progress'
STATUS_TEXT = 'status'

HELD = ('assigned', 'active', 'callbacks')
DONE = ('completed', 'succeeded', 'failed', 'cancelled')
LISTS = ('pending', 'running') + HELD + DONE

#: The methods of a job that recovery queues as jobs of their own (with a
#: run token as argument): internal work, hidden from lists by default.
RECOVERY = ('handleInterrupt', 'resumeCallbacks')
#: Annotations ``retry`` writes on the new job and on the failed one.
RETRY_OF = 'zcasync.retry_of'
RETRIED_AS = 'zcasync.retried_as'


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a one-line message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# --- small conversions -------------------------------------------------------

def statusName(status):
    """The API name of a status constant; unknown constants as stored."""
    names = {
        interfaces.NEW: 'new', interfaces.PENDING: 'pending',
        interfaces.ASSIGNED: 'assigned', interfaces.ACTIVE: 'active',
        interfaces.CALLBACKS: 'callbacks',
        interfaces.COMPLETED: 'completed',
    }
    parked = getattr(interfaces, 'PARKED', None)
    if parked is not None:
        names[parked] = 'parked'
    return names.get(status, str(status))


def iso(value):
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat()
    return value.astimezone(utils.UTC).isoformat()


def seconds(value):
    return None if value is None else value.total_seconds()


def parseTime(text, name):
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace(
            'Z', '+00:00'))
    except ValueError:
        raise ApiError(400, '%s=%r is not an ISO 8601 date-time (e.g. '
                            '2030-01-31T09:00:00Z)' % (name, text)) from None
    if value.tzinfo is None:
        raise ApiError(400, '%s=%r has no time zone; add Z for UTC or an '
                            'offset like +01:00' % (name, text))
    return value.astimezone(utils.UTC)


def firstLine(text, limit=300):
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ''


def display(value, limit=TEXT_LIMIT, _depth=0):
    """`value` made JSON-ready for display (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2 ** 53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + '...'
    if isinstance(value, datetime.datetime):
        return iso(value)
    if _depth < 4 and isinstance(value, (list, tuple)) and len(value) <= 100:
        return [display(v, limit, _depth + 1) for v in value]
    if _depth < 4 and isinstance(value, dict) and len(value) <= 100 and \
            all(isinstance(k, str) for k in value):
        return {k: display(v, limit, _depth + 1) for k, v in value.items()}
    return utils.shortRepr(value, limit)


def progressOf(value):
    """``{'fraction', 'done', 'total'}`` from a ``progress`` annotation, or
    None when it follows none of the conventions."""
    done = total = None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        fraction = float(value)
    else:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            done, total = value
        elif isinstance(value, dict):
            done, total = value.get('done'), value.get('total')
        else:
            return None
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                   for x in (done, total)) or total <= 0:
            return None
        fraction = float(done) / float(total)
    if not math.isfinite(fraction):
        return None
    return {'fraction': round(min(max(fraction, 0.0), 1.0), 4),
            'done': done, 'total': total}


def encodeCursor(value):
    raw = json.dumps(value, separators=(',', ':')).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip('=')


def decodeCursor(text):
    try:
        raw = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))
        return json.loads(raw)
    except (ValueError, TypeError):
        raise ApiError(400, 'cursor %r is not valid; start again without '
                            'it' % (text[:80],)) from None


# --- jobs --------------------------------------------------------------------

def jobId(job):
    return '%d@%s' % (ZODB.utils.u64(job._p_oid),
                      job._p_jar.db().database_name)


def findJob(conn, text):
    """The job named ``OID@DATABASE`` (or ``OID``); ApiError otherwise."""
    oid, _, database = str(text).partition('@')
    try:
        number = int(oid)
    except ValueError:
        number = -1
    if not 0 <= number < 2 ** 64:
        raise ApiError(400, 'job id %r is not valid: give OID@DATABASE as '
                            'the API lists it (e.g. 42@unnamed)' % (text,))
    name = conn.db().database_name
    if database and database != name:
        raise ApiError(404, 'job %s belongs to database %r; this dashboard '
                            'serves database %r' % (text, database, name))
    try:
        ob = conn.get(ZODB.utils.p64(number))
        ob._p_activate()
    except (ZODB.POSException.POSKeyError, KeyError):
        raise ApiError(404, 'no job %s in this database' % (text,)) from None
    if not interfaces.IJob.providedBy(ob):
        raise ApiError(404, 'object %s is a %s, not a job' % (
            text, type(ob).__name__))
    return ob


def isRecovery(job):
    """Whether `job` is recovery's own (it calls ``handleInterrupt`` or
    ``resumeCallbacks`` of another job)."""
    func = job.callable
    return getattr(func, '__name__', None) in RECOVERY and \
        interfaces.IJob.providedBy(getattr(func, '__self__', None))


def parkedEntry(job):
    """(reason, when) for a parked job, else None."""
    queue = job.queue
    for parked, reason, when in (queue.parked() if queue is not None
                                 else ()):
        if parked is job:
            return reason, when
    return None


def callableName(job):
    func = job.callable
    owner = getattr(func, '__self__', None)
    if owner is not None and not isinstance(owner, (types.ModuleType, type)):
        label = '%s.%s' % (type(owner).__module__, type(owner).__qualname__)
        if getattr(owner, '_p_oid', None) is not None:
            label += '(oid %d)' % ZODB.utils.u64(owner._p_oid)
        return '%s.%s' % (label, getattr(func, '__name__', '?'))
    module = getattr(func, '__module__', None)
    qualname = getattr(func, '__qualname__', None)
    if module and qualname:
        return '%s.%s' % (module, qualname)
    return utils.shortRepr(func, 200)


def callText(job):
    args = [utils.shortRepr(a, 60) for a in job.args]
    args += ['%s=%s' % (k, utils.shortRepr(v, 60))
             for k, v in job.kwargs.items()]
    return '%s(%s)' % (callableName(job), ', '.join(args))


def _safeId(job):
    try:
        return jobId(job)
    except Exception:
        return None


def _errorText(failure):
    return firstLine('%s: %s' % (utils.exceptionClassName(failure),
                                 failure.getErrorMessage()))


def jobSummary(job, now=None):
    """A list row; ``status: 'unreadable'`` for a job that cannot be
    loaded (e.g. its class is gone)."""
    try:
        return _summary(job, now or utils.now())
    except Exception as e:
        return {'id': _safeId(job), 'status': 'unreadable',
                'error': firstLine('%s: %s' % (type(e).__name__, e))}


def _summary(job, now):
    status = statusName(job.status)
    agent = job.agent
    queue = job.queue
    registration = agent.parent if agent is not None else None
    begin, start, end = job.begin_after, job.active_start, job.active_end
    wait = None
    if start is not None and begin is not None:
        wait = seconds(start - begin)
    elif status == 'pending' and begin is not None and begin <= now:
        wait = seconds(now - begin)
    duration = None
    if start is not None:
        duration = seconds((end or now) - start)
    info = {
        'id': jobId(job),
        'oid': ZODB.utils.u64(job._p_oid),
        'database': job._p_jar.db().database_name,
        'status': status,
        'state': status,
        'failed': None,
        'callable': callableName(job),
        'call': callText(job),
        'queue': queue.name if queue is not None else None,
        'agent': agent.name if agent is not None else None,
        'dispatcher': str(registration.UUID)
        if registration is not None else None,
        'begin_after': iso(begin),
        'active_start': iso(start),
        'active_end': iso(end),
        'wait_seconds': wait,
        'duration_seconds': duration,
        'progress': None,
        'status_text': None,
        'error': None,
        'retried_as': None,
        'internal': isRecovery(job),
    }
    if status == 'completed':
        result = job.result
        info['failed'] = utils.isFailure(result)
        info['state'] = 'failed' if info['failed'] else 'succeeded'
        if info['failed']:
            info['error'] = _errorText(result)
            info['retried_as'] = job.annotations.get(RETRIED_AS)
    elif status == 'parked':
        entry = parkedEntry(job)
        if entry is not None:
            info['error'] = firstLine(entry[0])
    elif status in HELD:
        annotations = job.peekAnnotations()
        info['progress'] = progressOf(annotations.get(PROGRESS))
        text = annotations.get(STATUS_TEXT)
        if text is not None:
            info['status_text'] = display(text, 300) if isinstance(
                text, str) else utils.shortRepr(text, 300)
    return info


def _policyName(job):
    factory = job.retry_policy_factory
    if factory is None:
        return None
    if isinstance(factory, str):
        return factory
    return '%s:%s' % (getattr(factory, '__module__', '?'),
                      getattr(factory, '__qualname__', repr(factory)))


def _retryCounts(job, annotations):
    """The counters of the job's retry policy (interruptions, transaction
    errors, disconnects), as it keeps them in the annotations."""
    try:
        key = job.getRetryPolicy().key
    except Exception:
        key = None
    counts = annotations.get(key) if key is not None else None
    if isinstance(counts, dict):
        return {str(k): display(v) for k, v in counts.items()}
    return {}


def _jobsIn(values):
    return [v for v in values if interfaces.IJob.providedBy(v)]


def jobDetail(job, now=None):
    """Everything the job page shows."""
    now = now or utils.now()
    info = _summary(job, now)
    annotations = job.peekAnnotations()
    shown = {}
    for i, (key, value) in enumerate(annotations.items()):
        if i >= ANNOTATION_LIMIT:
            break
        shown[str(key)] = display(value)
    info['progress'] = progressOf(annotations.get(PROGRESS))
    positional, kwargs = job.callArguments()
    info.update({
        'repr': repr(job),
        'args': [display(a) for a in positional],
        'kwargs': {str(k): display(v) for k, v in kwargs.items()},
        'begin_by_seconds': seconds(job.begin_by),
        'priority': job.priority,
        'unique_key': display(job.unique_key),
        'parked_at': None,
        'quota_names': list(job.quota_names),
        'retry_policy': _policyName(job),
        'retry_counts': _retryCounts(job, annotations),
        'assigner': str(job.assignerUUID) if job.assignerUUID else None,
        'annotations': shown,
        'result': None,
        'traceback': None,
    })
    if info['status'] == 'parked':
        entry = parkedEntry(job)
        if entry is not None:
            info['error'] = display(entry[0])
            info['parked_at'] = iso(entry[1])
    result = job.result
    if utils.isFailure(result):
        info['traceback'] = result.getTraceback()[:TRACEBACK_LIMIT]
    elif info['status'] == 'completed' or result is not None:
        info['result'] = display(result, TRACEBACK_LIMIT)
    parent = job.parent
    info['parent'] = jobSummary(parent, now) \
        if interfaces.IJob.providedBy(parent) else None
    callbacks = []
    for callback in job.callbacks:
        if interfaces.ICallbackProxy.providedBy(callback):
            # addCallbacks(success, failure): both jobs of the proxy
            callbacks.extend((callback.success, callback.failure))
        else:
            callbacks.append(callback)
    info['callbacks'] = [jobSummary(c, now) for c in callbacks]
    info['children'] = [jobSummary(c, now) for c in
                        _jobsIn(list(positional) + list(kwargs.values()))]
    reports = []
    for callback in callbacks:
        for other in _jobsIn(callback.callArguments()[0]):
            if other is not job and other not in reports:
                reports.append(other)
    info['reports_to'] = [jobSummary(o, now) for o in reports]
    return info


# --- queues, dispatchers, quotas ---------------------------------------------

def queuesOf(root):
    queues = root.get(interfaces.KEY)
    return sorted(queues.items()) if queues is not None else []


def registrationState(agents):
    if not agents.activated:
        return 'stopped'
    return 'dead' if agents.dead else 'alive'


def agentInfo(agent, now, jobs=True):
    held = len(agent)
    size = agent.size
    info = {'name': agent.name, 'size': size, 'held': held,
            'occupancy': round(held / size, 4) if size else None,
            'completed': len(agent.completed)}
    if jobs:
        info['jobs'] = [jobSummary(j, now) for j in agent]
    return info


def dispatcherInfo(queue_name, agents, now, jobs=True):
    last = agents.last_ping.value
    return {
        'queue': queue_name,
        'uuid': str(agents.UUID),
        'state': registrationState(agents),
        'activated': iso(agents.activated),
        'last_ping': iso(last),
        'last_ping_age_seconds': seconds(now - last) if last else None,
        'ping_interval_seconds': seconds(agents.ping_interval),
        'ping_death_interval_seconds': seconds(agents.ping_death_interval),
        'agents': [agentInfo(a, now, jobs) for n, a in agents.items()],
    }


def dispatchers(root, now=None, queue=None):
    now = now or utils.now()
    items = []
    for name, q in queuesOf(root):
        if queue is not None and name != queue:
            continue
        for uuid, agents in q.dispatchers.items():
            items.append(dispatcherInfo(name, agents, now))
    return {'items': items}


def quotas(root, now=None):
    items = []
    for name, queue in queuesOf(root):
        for quota in queue.quotas.values():
            holding = [j for j in quota if j.status in (
                interfaces.ASSIGNED, interfaces.ACTIVE, interfaces.CALLBACKS)]
            items.append({
                'queue': name, 'name': quota.name, 'size': quota.size,
                'held': len(holding),
                'fill': round(len(holding) / quota.size, 4)
                if quota.size else None,
                'jobs': [_safeId(j) for j in holding],
            })
    return {'items': items}


def queueInfo(name, queue, now, stats=None):
    counts = {'alive': 0, 'dead': 0, 'stopped': 0}
    running = capacity = 0
    for uuid, agents in queue.dispatchers.items():
        state = registrationState(agents)
        counts[state] += 1
        for agent in agents.values():
            running += len(agent)
            if state == 'alive':
                capacity += agent.size
    first = next(iter(queue), None)
    oldest = None
    if first is not None and first.begin_after is not None and \
            first.begin_after <= now:
        oldest = seconds(now - first.begin_after)
    info = {
        'name': name,
        'paused': bool(queue.paused),
        'schedules': len(queue.existingSchedules() or ()),
        'pending': len(queue),
        'oldest_wait_seconds': oldest,
        'next_due': iso(queue.nextDue()),
        'running': running,
        'capacity': capacity,
        'dispatchers': counts,
        'quotas': len(queue.quotas),
        'completed_last_hour': None,
        'failed_last_hour': None,
        'throughput_per_minute': None,
    }
    if stats is not None:
        info.update(stats.queueSummary(name, now))
    return info


def heldJobs(root, queue=None):
    for name, q in queuesOf(root):
        if queue is not None and name != queue:
            continue
        for uuid, agents in q.dispatchers.items():
            for agent_name, agent in agents.items():
                yield from agent


def overview(root, now=None, stats=None):
    now = now or utils.now()
    queues = [queueInfo(n, q, now, stats) for n, q in queuesOf(root)]
    totals = {}
    for key in ('pending', 'running', 'capacity', 'completed_last_hour',
                'failed_last_hour', 'throughput_per_minute'):
        values = [q[key] for q in queues if q[key] is not None]
        totals[key] = sum(values) if values else None
    running = []
    for job in heldJobs(root):
        if len(running) >= RUNNING_LIMIT:
            break
        running.append(jobSummary(job, now))
    return {
        'database': root._p_jar.db().database_name,
        'now': iso(now),
        'stats_since': iso(stats.since()) if stats is not None else None,
        'queues': queues,
        'totals': totals,
        'running': running,
    }
