"""The ``zcasync`` commands that queue, inspect and manage jobs from a
shell: ``put``, ``status``, ``jobs``, ``job``, ``cancel`` and ``retry``.

Each opens the database, works in one transaction (retried on conflicts
when it writes) and closes it.  Read-only commands never commit.  A job is
named by ``OID@DATABASE`` (or just ``OID``), as ``put`` and ``jobs`` print
it; every command has ``--json`` for scripts.
"""
import datetime
import heapq
import importlib
import json
import math
import sys
import time
import types

import transaction
import ZODB.POSException
import ZODB.utils

from zcasync import cli_db
from zcasync.cli_common import (
    CommandError, firstLine, formatJobId, parseJobId, statusName, isoTime,
    seconds, jsonable, showValue, printJson, EXIT_OK, EXIT_FAILED,
    EXIT_USAGE, EXIT_IMPORT, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_TIMEOUT)

HELD = ('assigned', 'active', 'callbacks')
DONE = ('completed', 'succeeded', 'failed')
KINDS = ('pending', 'parked') + HELD + DONE


class Session:
    """A database, a connection and its own transaction manager."""

    def __init__(self, args, create=False):
        self.db = cli_db.openDatabase(args.db, args.connect_timeout,
                                      create=create)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.tm.abort()
            self.conn.close()
        finally:
            self.db.close()

    def queues(self):
        from zcasync.interfaces import KEY
        return self.conn.root().get(KEY)

    def queue(self, name, create=False):
        from zcasync.interfaces import KEY
        from zcasync.queue import Queue, Queues
        queues = self.queues()
        queue = queues.get(name) if queues is not None else None
        if queue is not None:
            return queue
        if create:
            if queues is None:
                queues = self.conn.root()[KEY] = Queues()
            queues[name] = Queue()
            return queues[name]
        known = ', '.join(repr(n) for n in queues) if queues else 'none yet'
        raise CommandError(
            'no queue %r in this database (queues: %s); start a worker with '
            '--queue %s first (it creates the queue), or pass --create-queue'
            % (name, known, name or "''"), EXIT_NOT_FOUND)

    def job(self, text):
        from zcasync import interfaces
        oid, database = parseJobId(text)
        name = self.db.database_name
        if database is not None and database != name:
            raise CommandError(
                'job %s belongs to database %r, but --db opens database %r'
                % (text, database, name), EXIT_NOT_FOUND)
        try:
            ob = self.conn.get(ZODB.utils.p64(oid))
            ob._p_activate()
        except (ZODB.POSException.POSKeyError, KeyError, ValueError,
                OverflowError):
            ob = None
        except Exception as e:
            raise CommandError('cannot load object %s: %s: %s' % (
                text, type(e).__name__, firstLine(e)), EXIT_NOT_FOUND)
        if ob is None:
            raise CommandError(
                'no job %s in this database ("zcasync jobs" lists jobs)'
                % text, EXIT_NOT_FOUND)
        if not interfaces.IJob.providedBy(ob):
            raise CommandError('object %s is a %s, not a job' % (
                text, type(ob).__name__), EXIT_NOT_FOUND)
        return ob


# --- describing ------------------------------------------------------------

def _name(ob):
    module = getattr(ob, '__module__', None)
    qualname = getattr(ob, '__qualname__', None)
    if module and qualname:
        return '%s.%s' % (module, qualname)
    return None


def callText(job):
    """``module.function(arg, ...)``; a method of a stored object shows
    the object's class and oid."""
    from zcasync import utils
    try:
        func = job.callable
        owner = getattr(func, '__self__', None)
        if owner is not None and not isinstance(owner, types.ModuleType) \
                and not isinstance(owner, type):
            label = type(owner).__qualname__
            if getattr(owner, '_p_oid', None) is not None:
                label = '%s(oid %d)' % (label, ZODB.utils.u64(owner._p_oid))
            name = '%s.%s' % (label, getattr(func, '__name__', '?'))
        else:
            name = _name(func) or utils.shortRepr(func, 80)
        args = [utils.shortRepr(a, 60) for a in job.args]
        args += ['%s=%s' % (k, utils.shortRepr(v, 60))
                 for k, v in (job._kwargs or {}).items()]
        return '%s(%s)' % (name, ', '.join(args))
    except Exception:
        return repr(job)


def describe(job, full=False):
    from zcasync import utils
    agent = job.agent
    queue = job.queue
    info = {
        'id': formatJobId(job),
        'oid': ZODB.utils.u64(job._p_oid),
        'database': job._p_jar.db().database_name,
        'status': statusName(job),
        'call': callText(job),
        'queue': queue.name if queue is not None else None,
        'agent': agent.name if agent is not None else None,
        'dispatcher': str(agent.parent.UUID)
        if agent is not None and agent.parent is not None else None,
        'begin_after': isoTime(job.begin_after),
        'active_start': isoTime(job.active_start),
        'active_end': isoTime(job.active_end),
    }
    if info['status'] == 'completed':
        info['failed'] = utils.isFailure(job.result)
    if info['status'] == 'parked':
        for parked, reason, when in queue.parked():
            if parked is job:
                info['parked_reason'] = reason
                info['parked_at'] = isoTime(when)
    if not full:
        return info
    result = job.result
    info.update({
        'repr': repr(job),
        'begin_by': seconds(job.begin_by),
        'quota_names': list(job.quota_names),
        'priority': job.priority,
        'unique_key': job.unique_key,
        'retry_policy': _policyName(job.retry_policy_factory),
        'assigner': str(job.assignerUUID) if job.assignerUUID else None,
        'callbacks': len(job.callbacks),
        'annotations': {str(k): jsonable(v)
                        for k, v in job.annotations.items()},
    })
    if utils.isFailure(result):
        info['result'] = None
        info['error'] = '%s: %s' % (utils.exceptionClassName(result),
                                    result.getErrorMessage())
        info['traceback'] = result.getTraceback()
    else:
        info['result'] = jsonable(result)
    return info


def _policyName(factory):
    if factory is None or isinstance(factory, str):
        return factory
    return '%s:%s' % (getattr(factory, '__module__', '?'),
                      getattr(factory, '__qualname__', repr(factory)))


def _agentLabel(info):
    if not info['agent']:
        return '-'
    return '%s@%s' % (info['agent'], info['dispatcher'].replace('-', '')[:8])


def _timeLabel(info):
    if info['status'] == 'completed':
        return info['active_end'] or '-'
    if info['status'] in ('active', 'callbacks'):
        return info['active_start'] or '-'
    return info['begin_after'] or '-'


def jobLine(info):
    status = info['status']
    if status == 'completed':
        status = 'failed' if info.get('failed') else 'succeeded'
    return '%-14s %-9s %-10s %-16s %-32s %s' % (
        info['id'], status, repr(info['queue']), _agentLabel(info),
        _timeLabel(info), info['call'])


# --- put -------------------------------------------------------------------

def importCallable(spec, what='the job'):
    module_name, sep, attribute = str(spec).partition(':')
    if not sep or not module_name or not attribute:
        raise CommandError(
            '%r is not module:function (e.g. mypackage.tasks:send_report) '
            'for %s' % (spec, what), EXIT_IMPORT)
    try:
        ob = importlib.import_module(module_name)
    except Exception as e:
        raise CommandError(
            'cannot import module %r for %s (%s: %s); check the name and '
            'PYTHONPATH (workers need to import it too)'
            % (module_name, what, type(e).__name__, firstLine(e)),
            EXIT_IMPORT) from None
    for part in attribute.split('.'):
        try:
            ob = getattr(ob, part)
        except AttributeError:
            raise CommandError('module %r has no %r (for %s)' % (
                module_name, attribute, what), EXIT_IMPORT) from None
    if not callable(ob):
        raise CommandError('%s is not callable (it is a %s)' % (
            spec, type(ob).__name__), EXIT_IMPORT)
    return ob


def parseArgument(text):
    """JSON when it parses, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parseBeginAfter(text):
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            '--begin-after %r is not an ISO 8601 date-time; write e.g. '
            '2030-01-31T09:00:00Z or 2030-01-31T10:00:00+01:00' % (text,),
            EXIT_USAGE) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise CommandError(
            '--begin-after %r has no time zone; add Z for UTC or an offset '
            'like +01:00' % (text,), EXIT_USAGE)
    return value.astimezone(datetime.timezone.utc)


def _nonNegative(value, option):
    if value is not None and (value < 0 or not math.isfinite(value)):
        raise CommandError('%s must be a number of seconds >= 0, not %r'
                           % (option, value), EXIT_USAGE)


def retryPolicy(spec):
    if not spec:
        return None
    if ':' in spec:
        return importCallable(spec, 'the retry policy')
    from zcasync import retry
    try:
        retry.lookup(spec)
    except LookupError as e:
        raise CommandError(firstLine(e), EXIT_USAGE) from None
    return spec


def runPut(args):
    from zcasync import utils
    from zcasync.job import Job
    from zcasync.cli_schedules import parseKeywords, parseDuration
    func = importCallable(args.callable)
    values = [parseArgument(a) for a in args.args]
    kwargs = parseKeywords(args.kw)
    unique_for = None
    if args.unique_for is not None:
        if args.unique is None:
            raise CommandError('--unique-for goes with --unique KEY',
                               EXIT_USAGE)
        unique_for = parseDuration(args.unique_for, '--unique-for')
    _nonNegative(args.begin_in, '--in')
    _nonNegative(args.begin_by, '--begin-by')
    begin_after = None
    if args.begin_after is not None:
        begin_after = parseBeginAfter(args.begin_after)
    elif args.begin_in is not None:
        begin_after = utils.now() + datetime.timedelta(seconds=args.begin_in)
    begin_by = None
    if args.begin_by is not None:
        begin_by = datetime.timedelta(seconds=args.begin_by)
    policy = retryPolicy(args.retry_policy)
    wait = args.wait
    if wait is not None:
        if wait < 0 or math.isnan(wait):
            raise CommandError('--wait takes a number of seconds >= 0',
                               EXIT_USAGE)
        if cli_db.scheme(args.db) in ('file', 'memory'):
            raise CommandError(
                '--wait needs a database that workers share (zeo:// or '
                'postgres://): no worker can run the job while this command '
                'holds %s' % cli_db.redact(args.db), EXIT_USAGE)
    try:
        Job(func, *values, **kwargs)
    except (TypeError, ValueError) as e:
        raise CommandError(firstLine(e), EXIT_IMPORT) from None
    with Session(args, create=args.create_queue) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                queue = session.queue(args.queue, create=args.create_queue)
                new = Job(func, *values, **kwargs)
                try:
                    job = queue.put(
                        new, begin_after=begin_after, begin_by=begin_by,
                        retry_policy_factory=policy, priority=args.priority,
                        unique_key=args.unique, unique_for=unique_for)
                except (TypeError, ValueError) as e:
                    session.tm.abort()
                    raise CommandError(firstLine(e), EXIT_USAGE) from None
        info = describe(job)
        if job is not new:
            info['existing'] = True  # the unique key was held
        if args.json and wait is None:
            printJson(info)
        else:
            if info.get('existing'):
                sys.stderr.write('unique key %r is held by job %s: not '
                                 'queued again\n' % (args.unique,
                                                      info['id']))
            print(info['id'], flush=True)
        if wait is None:
            return EXIT_OK
        return waitForJob(session, job._p_oid, info['id'], wait, args.json)


def waitForJob(session, oid, job_id, timeout, as_json):
    from zcasync import interfaces, utils
    deadline = time.monotonic() + timeout
    while True:
        session.tm.begin()
        job = session.conn.get(oid)
        if job.status == interfaces.COMPLETED:
            break
        if time.monotonic() >= deadline:
            status = statusName(job)
            session.tm.abort()
            raise CommandError(
                'job %s is still %s after %g s; it stays queued ("zcasync '
                'job %s" shows it later)' % (job_id, status, timeout, job_id),
                EXIT_TIMEOUT)
        session.tm.abort()
        time.sleep(0.1)
    failed = utils.isFailure(job.result)
    if as_json:
        printJson(describe(job, full=True))
    elif failed:
        print(job.result.getTraceback().rstrip())
    else:
        print(showValue(job.result))
    session.tm.abort()
    return EXIT_FAILED if failed else EXIT_OK


# --- views -----------------------------------------------------------------

def runStatus(args):
    from zcasync import utils
    with Session(args) as session:
        queues = session.queues()
        data = {'database': session.db.database_name, 'queues': []}
        now = utils.now()
        for name, queue in (queues.items() if queues is not None else ()):
            entry = {'name': name, 'pending': len(queue), 'dispatchers': [],
                     'paused': queue.paused,
                     'schedules': len(queue.existingSchedules() or ())}
            for uuid, agents in queue.dispatchers.items():
                last = agents.last_ping.value
                entry['dispatchers'].append({
                    'uuid': str(uuid),
                    'activated': isoTime(agents.activated),
                    'last_ping': isoTime(last),
                    'since_last_ping': seconds(now - last) if last else None,
                    'dead': bool(agents.activated and agents.dead),
                    'ping_interval': seconds(agents.ping_interval),
                    'ping_death_interval': seconds(
                        agents.ping_death_interval),
                    'agents': [{'name': agent_name, 'size': agent.size,
                                'held': len(agent),
                                'completed': len(agent.completed)}
                               for agent_name, agent in agents.items()],
                })
            data['queues'].append(entry)
    if args.json:
        printJson(data)
        return EXIT_OK
    if not data['queues']:
        print('no zcasync queues in database %r yet (a worker creates them '
              'when it starts)' % data['database'])
    for entry in data['queues']:
        print('queue %r: %d pending, %d dispatcher(s)%s%s' % (
            entry['name'], entry['pending'], len(entry['dispatchers']),
            ', %d schedule(s)' % entry['schedules'] if entry['schedules']
            else '', ' (PAUSED: no job is handed out)' if entry['paused']
            else ''))
        for d in entry['dispatchers']:
            if not d['activated']:
                state = 'stopped'
            elif d['dead']:
                state = 'DEAD'
            else:
                state = 'alive'
            ago = d['since_last_ping']
            print('  dispatcher %s: %s, activated %s, last ping %s%s, ping '
                  'every %g s, dead after %g s' % (
                      d['uuid'], state, d['activated'] or '-',
                      d['last_ping'] or '-',
                      ' (%.1f s ago)' % ago if ago is not None else '',
                      d['ping_interval'], d['ping_death_interval']))
            for a in d['agents']:
                print('    agent %r: size %d, holding %d, completed %d' % (
                    a['name'], a['size'], a['held'], a['completed']))
    return EXIT_OK


def _agentsOf(queue, agent_name):
    for agents in queue.dispatchers.values():
        for name, agent in agents.items():
            if agent_name is None or name == agent_name:
                yield agent


def iterJobs(queues, kind, queue_name=None, agent_name=None):
    from zcasync import utils
    selected = [q for n, q in queues.items()
                if queue_name is None or n == queue_name]
    kinds = (kind,) if kind else KINDS
    if 'pending' in kinds and agent_name is None:
        for queue in selected:
            yield from queue
    if 'parked' in kinds and agent_name is None:
        for queue in selected:
            for job, reason, when in queue.parked():
                yield job
    held = [k for k in kinds if k in HELD]
    if held:
        for queue in selected:
            for agent in _agentsOf(queue, agent_name):
                for job in agent:
                    if statusName(job) in held:
                        yield job
    if any(k in DONE for k in kinds):
        done = heapq.merge(
            *[iter(agent.completed) for queue in selected
              for agent in _agentsOf(queue, agent_name)],
            key=lambda j: j.active_end or utils.EPOCH, reverse=True)
        for job in done:
            failed = utils.isFailure(job.result)
            if kind == 'succeeded' and failed or kind == 'failed' and \
                    not failed:
                continue
            yield job


def runJobs(args):
    if args.limit < 0:
        raise CommandError('--limit must be >= 0 (0: no limit)', EXIT_USAGE)
    with Session(args) as session:
        queues = session.queues() or {}
        if args.queue is not None:
            session.queue(args.queue)  # unknown queue: a clear error
        found = []
        for job in iterJobs(queues, args.kind, args.queue, args.agent):
            found.append(describe(job))
            if args.limit and len(found) >= args.limit:
                break
    if args.json:
        printJson(found)
    else:
        for info in found:
            print(jobLine(info))
        if not found:
            print('no %sjobs' % (args.kind + ' ' if args.kind else ''))
    return EXIT_OK


def runJob(args):
    with Session(args) as session:
        info = describe(session.job(args.id), full=True)
    if args.json:
        printJson(info)
        return EXIT_OK
    for key in ('id', 'repr', 'status', 'queue', 'dispatcher', 'agent',
                'begin_after', 'begin_by', 'active_start', 'active_end',
                'retry_policy', 'quota_names', 'priority', 'unique_key',
                'assigner', 'callbacks'):
        value = info[key]
        if key == 'begin_by' and value is not None:
            value = '%g s after begin_after' % value
        print('%-13s %s' % (key + ':', '-' if value in (None, [])
                            else value))
    if 'traceback' in info:
        print('failed:       %s' % info['error'])
        print(info['traceback'].rstrip())
    elif info['status'] == 'completed':
        print('result:       %s' % showValue(info['result']))
    for key, value in sorted(info['annotations'].items()):
        print('annotation %r: %s' % (key, showValue(value)))
    return EXIT_OK


# --- cancel and retry ------------------------------------------------------

def runCancel(args):
    from zcasync import interfaces, utils
    with Session(args) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                job = session.job(args.id)
                parent = job.parent
                status = statusName(job)
                if not interfaces.IQueue.providedBy(parent) or \
                        status not in ('pending', 'parked'):
                    session.tm.abort()
                    raise CommandError(_cannotCancel(args.id, status),
                                       EXIT_REFUSED)
                info = describe(job)
                # a parked job, or one whose module cannot be imported
                # here, is removed without being written
                parent.remove(job)
                job.annotations['zcasync.cancelled'] = isoTime(utils.now())
                info['status'] = statusName(job)
                info['cancelled_from'] = parent.name
    if args.json:
        printJson(info)
    else:
        print('cancelled job %s: removed from queue %r; it will not run'
              % (info['id'], info['cancelled_from']))
    return EXIT_OK


def _cannotCancel(job_id, status):
    reason = {
        'assigned': 'a worker has claimed it and is about to run it',
        'active': 'it is running in a worker',
        'callbacks': 'it ran and its callbacks are running',
        'completed': 'it has already completed',
    }.get(status, 'it waits for another job, not in a queue')
    return ('cannot cancel job %s: it is %s (%s); only a pending job that '
            'no worker claimed yet can be cancelled' % (job_id, status,
                                                       reason))


def runRetry(args):
    from zcasync import utils
    from zcasync.job import Job
    with Session(args) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                job = session.job(args.id)
                status = statusName(job)
                if status == 'parked':
                    # back in its queue, where it was (its module must be
                    # importable by the workers now)
                    job.queue.unpark(job)
                    new = job
                    break
                if status != 'completed' or not utils.isFailure(job.result):
                    session.tm.abort()
                    raise CommandError(
                        'cannot retry job %s: it is %s%s; only a failed job '
                        'can be queued again' % (
                            args.id, status, ' and succeeded'
                            if status == 'completed' else ''), EXIT_REFUSED)
                queue = job.queue
                if queue is None:
                    session.tm.abort()
                    raise CommandError(
                        'cannot retry job %s: it belongs to no queue (a '
                        'callback runs with its parent job)' % args.id,
                        EXIT_REFUSED)
                new = Job(job.callable, *job.args, **dict(job._kwargs or {}))
                new.quota_names = [n for n in job.quota_names
                                   if n in queue.quotas]
                new.failure_log_level = job.failure_log_level
                new.annotations['zcasync.retry_of'] = formatJobId(job)
                queue.put(new, begin_by=job.begin_by,
                          retry_policy_factory=job.retry_policy_factory)
        info = describe(new)
    if args.json:
        if new is job:
            info['unparked'] = True
        else:
            info['retry_of'] = formatJobId(job)
        printJson(info)
    elif new is job:
        print('%s: back in queue %r, where it was' % (info['id'],
                                                     info['queue']))
    else:
        print(info['id'])
    return EXIT_OK
