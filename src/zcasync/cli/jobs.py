"""The ``zcasync`` commands that queue, inspect and manage jobs from a
shell: ``put``, ``jobs``, ``job``, ``cancel`` and ``retry`` (``status``
is in ``zcasync.cli.status``).

Each opens the database, works in one transaction (retried on conflicts
when it writes) and closes it.  Read-only commands never commit.  A job is
named by ``OID@DATABASE`` (or just ``OID``), as ``put`` and ``jobs`` print
it.  With ``--json`` each command prints one JSON document whose fields
are those of the dashboard's API (``zcasync.web.api``, ``docs/api.md``):
a job summary, a job's details, a list as ``{"items": [...]}``, an
action's answer.  Text output is a table: a header row and aligned
columns on a terminal, tab-separated lines without a header when piped.
"""
import datetime
import heapq
import importlib
import json
import math
import re
import shutil
import sys
import time

import transaction
import ZODB.POSException
import ZODB.utils

from zcasync.cli import db as cli_db
from zcasync.cli.common import (
    CommandError, firstLine, parseJobId, statusName, showValue, printJson,
    printTable, isTerminal, queueLabel, shortTime, warn, EXIT_OK,
    EXIT_FAILED, EXIT_USAGE, EXIT_IMPORT, EXIT_NOT_FOUND, EXIT_REFUSED,
    EXIT_TIMEOUT)
from zcasync.web import api

HELD = ('assigned', 'active', 'callbacks')
DONE = ('completed', 'succeeded', 'failed')
KINDS = ('pending', 'parked') + HELD + DONE

#: ApiError statuses as exit codes
_API_CODES = {400: EXIT_USAGE, 404: EXIT_NOT_FOUND, 409: EXIT_REFUSED}


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

    def queue(self, name, create=False, creatable=False):
        """The queue `name`; with `create`, made when missing.  The error
        for a missing queue suggests ``--create-queue`` only where the
        command has it (`creatable`)."""
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
        option = name if name else "''"
        if creatable:
            remedy = ('start a worker with --queue %s first (it creates the '
                      'queue), or pass --create-queue' % option)
        else:
            remedy = ('check the name; a worker started with --queue %s '
                      'creates it' % option)
        raise CommandError('no queue %r in this database (queues: %s); %s'
                           % (name, known, remedy), EXIT_NOT_FOUND)

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


def apiCall(function, *args):
    """Call a ``zcasync.web`` function; its ApiError becomes a
    CommandError with the matching exit code."""
    try:
        return function(*args)
    except api.ApiError as e:
        raise CommandError(e.message, _API_CODES.get(
            e.status, EXIT_REFUSED)) from None


# --- arguments ---------------------------------------------------------------

#: Text that is meant as JSON: a number, a string, a list, an object, a
#: literal.  Anything else is passed as a string.
_JSONISH = re.compile(r'''\s*([-+]?\.?\d|[\[{"]|(true|false|null|NaN|
                          [-+]?Infinity)\s*$)''', re.VERBOSE)
_KEYWORD = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z', re.DOTALL)


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError('%s is not a finite number' % text)
    return value


def _constant(text):
    raise ValueError('%s is not a number JSON allows' % text)


def parseValue(text, what):
    """A value given on the command line: JSON when it looks like JSON (it
    must then be valid, finite JSON), else the text itself as a string."""
    if not _JSONISH.match(text):
        return text
    try:
        return json.loads(text, parse_float=_finite,
                          parse_constant=_constant)
    except ValueError as e:
        raise CommandError(
            '%s %r is not valid JSON (%s); write JSON (42, 1.5, true, '
            '[1, 2], {"a": 1}), or quote a string as \'"text"\''
            % (what, text, e), EXIT_USAGE) from None


def parseArguments(texts, keywords=None):
    """(args, kwargs) from ``ARG`` and ``NAME=VALUE`` words (and the
    ``--kw NAME=JSON`` options in `keywords`)."""
    args, kwargs = [], {}
    for number, text in enumerate(texts, 1):
        match = _KEYWORD.match(text)
        if match is None:
            if kwargs:
                raise CommandError(
                    'argument %r comes after keyword argument(s) %s: put '
                    'positional arguments first' % (text, ', '.join(
                        kwargs)), EXIT_USAGE)
            args.append(parseValue(text, 'argument %d' % number))
            continue
        name, value = match.groups()
        if name in kwargs:
            raise CommandError('keyword argument %s is given twice' % name,
                               EXIT_USAGE)
        kwargs[name] = parseValue(value, 'keyword argument %s=' % name)
    from zcasync.cli.schedules import parseKeywords
    for name, value in parseKeywords(keywords).items():
        if name in kwargs:
            raise CommandError('keyword argument %s is given twice' % name,
                               EXIT_USAGE)
        kwargs[name] = value
    return args, kwargs


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


# --- who serves a queue --------------------------------------------------------

def servingProblem(name, queue):
    """Why no job of the queue would start now, or None: it is paused, or
    no live dispatcher has an agent (with room) in it."""
    if queue.paused:
        return ('queue %r is paused: it hands out no job until "zcasync '
                'queue resume %s"' % (name, name or "''"))
    alive = serving = 0
    for agents in queue.dispatchers.values():
        if api.registrationState(agents) != 'alive':
            continue
        alive += 1
        if any(agent.size > 0 for agent in agents.values()):
            serving += 1
    if serving:
        return None
    who = ('%d live dispatcher(s) are registered there, but none has an '
           'agent' % alive) if alive else 'no live worker serves it'
    return ('no worker runs jobs of queue %r (%s): its jobs wait until one '
            'does; start a worker with --queue %s' % (
                name, who, name or "''"))


# --- put -------------------------------------------------------------------

def runPut(args):
    from zcasync import utils
    from zcasync.job import Job
    from zcasync.cli.schedules import parseDuration
    func = importCallable(args.callable)
    values, kwargs = parseArguments(args.args, args.kw)
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
                queue = session.queue(args.queue, create=args.create_queue,
                                      creatable=True)
                new = Job(func, *values, **kwargs)
                try:
                    job = queue.put(
                        new, begin_after=begin_after, begin_by=begin_by,
                        retry_policy_factory=policy, priority=args.priority,
                        unique_key=args.unique, unique_for=unique_for)
                except (TypeError, ValueError) as e:
                    session.tm.abort()
                    raise CommandError(firstLine(e), EXIT_USAGE) from None
                problem = servingProblem(args.queue, queue)
        info = api.jobSummary(job)
        job_id = info['id']
        warnings = []
        if job is not new:
            warnings.append('unique key %r is held by job %s: not queued '
                            'again' % (args.unique, job_id))
        if problem:
            warnings.append(problem)
        for text in warnings:
            warn('zcasync put', text)
        if wait is None:
            if args.json:
                printJson(dict(info, existing=job is not new,
                               warnings=warnings))
            else:
                print(job_id, flush=True)
            return EXIT_OK
        if not args.json:
            print(job_id, flush=True)
        code, job = waitForJob(session, job._p_oid, job_id, wait,
                               show=not args.json and isTerminal(
                                   sys.stderr))
        if args.json:
            printJson(dict(api.jobDetail(job), existing=job is not new,
                           warnings=warnings))
        elif code == EXIT_FAILED:
            print(job.result.getTraceback().rstrip())
        elif code == EXIT_OK:
            print(showValue(job.result))
        session.tm.abort()
        if code == EXIT_TIMEOUT:
            raise CommandError(
                'job %s is still %s after %g s; it stays queued ("zcasync '
                'job %s" shows it later)' % (job_id, statusName(job), wait,
                                              job_id), EXIT_TIMEOUT)
        return code


def progressLine(job):
    """``job ID: active 38% (3/8) rendering page 4`` from the live
    annotations ``progress`` and ``status``."""
    info = api.jobSummary(job)
    parts = ['job %s: %s' % (info['id'], info['status'])]
    progress = info.get('progress')
    if progress:
        parts.append('%d%%' % round(progress['fraction'] * 100))
        if progress['total'] is not None:
            parts.append('(%s/%s)' % (progress['done'], progress['total']))
    if info.get('status_text'):
        parts.append(info['status_text'])
    if info['status'] == 'pending':
        parts.append('(waiting for a worker)')
    return ' '.join(parts)


def waitForJob(session, oid, job_id, timeout, show=False, interval=0.1):
    """Wait until the job completes, at most `timeout` seconds; returns
    (exit code, job).  With `show`, its progress is kept up to date on one
    line of stderr (a terminal)."""
    from zcasync import interfaces, utils
    deadline = time.monotonic() + timeout
    width = shutil.get_terminal_size((80, 24)).columns - 1
    shown, drawn = '', 0  # the line shown, the widest one drawn
    try:
        while True:
            session.tm.begin()
            job = session.conn.get(oid)
            if job.status == interfaces.COMPLETED:
                failed = utils.isFailure(job.result)
                return (EXIT_FAILED if failed else EXIT_OK), job
            if time.monotonic() >= deadline:
                return EXIT_TIMEOUT, job
            if show:
                line = progressLine(job)[:width]
                if line != shown:
                    sys.stderr.write('\r' + line.ljust(drawn))
                    sys.stderr.flush()
                    shown, drawn = line, max(drawn, len(line))
            session.tm.abort()
            time.sleep(interval)
    finally:
        if drawn:
            sys.stderr.write('\r' + ' ' * drawn + '\r')
            sys.stderr.flush()


# --- jobs ------------------------------------------------------------------

def _agentsOf(queue, agent_name):
    for agents in queue.dispatchers.values():
        for name, agent in agents.items():
            if agent_name is None or name == agent_name:
                yield agent


def iterJobs(queues, kind, queue_name=None, agent_name=None):
    """Jobs of one kind (all kinds for None): pending ones in claim
    order, parked ones, those agents hold, then completed ones newest
    first."""
    from zcasync import utils
    selected = [q for n, q in sorted(queues.items())
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


def _isRecovery(job):
    try:
        return api.isRecovery(job)
    except Exception:
        return False  # unreadable: listed, as such


def _agentLabel(info):
    if not info.get('agent'):
        return '-'
    return '%s@%s' % (info['agent'], info['dispatcher'].replace('-', '')[:8])


def _when(info):
    state = info['status']
    if state == 'completed':
        return 'ended %s' % shortTime(info['active_end'])
    if info.get('active_start'):
        return 'started %s' % shortTime(info['active_start'])
    if info.get('begin_after'):
        return 'due %s' % shortTime(info['begin_after'])
    return '-'


JOB_HEADERS = ('ID', 'STATE', 'QUEUE', 'AGENT', 'WHEN (UTC)', 'CALL')


def jobRow(info, terminal=True):
    """A table row for a job summary (see ``JOB_HEADERS``)."""
    if info['status'] == 'unreadable':
        return [info['id'], 'unreadable', '', '', '', info['error']]
    call = info['call']
    if info.get('retried_as'):
        call += ' [retried as %s]' % info['retried_as']
    if info.get('internal'):
        call += ' [recovery]'
    return [info['id'], info['state'], queueLabel(info['queue'], terminal)
            if info['queue'] is not None else '-', _agentLabel(info),
            _when(info), call]


def runJobs(args):
    if args.limit < 0:
        raise CommandError('--limit must be >= 0 (0: no limit)', EXIT_USAGE)
    hidden = 0
    more = False
    with Session(args) as session:
        queues = session.queues() or {}
        if args.queue is not None:
            session.queue(args.queue)  # unknown queue: a clear error
        found = []
        now = None
        for job in iterJobs(queues, args.kind, args.queue, args.agent):
            if not args.internal and _isRecovery(job):
                hidden += 1
                continue
            if args.limit and len(found) >= args.limit:
                more = True
                break
            found.append(api.jobSummary(job, now))
    if args.json:
        printJson({'state': args.kind, 'items': found, 'limit': args.limit,
                   'more': more})
        return EXIT_OK
    terminal = isTerminal()
    printTable(JOB_HEADERS, [jobRow(info, terminal) for info in found])
    if terminal:
        if not found:
            print('no %sjobs' % (args.kind + ' ' if args.kind else ''))
        if more:
            print('(more than %d: --limit N shows more, 0 all)'
                  % args.limit)
        if hidden:
            print('(%d internal recovery job(s) not shown: --internal)'
                  % hidden)
    return EXIT_OK


# --- job -------------------------------------------------------------------

def runJob(args):
    with Session(args) as session:
        info = api.jobDetail(session.job(args.id))
    if args.json:
        printJson(info)
        return EXIT_OK
    lines = []
    for key in ('id', 'repr', 'status', 'state', 'queue', 'dispatcher',
                'agent', 'begin_after', 'begin_by_seconds', 'active_start',
                'active_end', 'retry_policy', 'quota_names', 'priority',
                'unique_key', 'assigner', 'parked_at', 'retried_as'):
        value = info.get(key)
        if key == 'queue' and value is not None:
            value = '%s (%r)' % (queueLabel(value), value) if value == '' \
                else value
        if key == 'begin_by_seconds':
            key = 'begin_by'
            if value is not None:
                value = '%g s after begin_after' % value
        if value in (None, []) and key in ('parked_at', 'retried_as'):
            continue
        lines.append('%-13s %s' % (key + ':', '-' if value in (None, [])
                                   else value))
    lines.append('%-13s %d' % ('callbacks:', len(info['callbacks'])))
    print('\n'.join(lines))
    if info['traceback']:
        print('failed:       %s' % info['error'])
        print(info['traceback'].rstrip())
    elif info['status'] == 'parked':
        print('parked:       %s' % info['error'])
    elif info['status'] == 'completed':
        print('result:       %s' % json.dumps(info['result']))
    for key, value in sorted(info['annotations'].items()):
        print('annotation %r: %s' % (key, json.dumps(value)))
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
                # a parked job, or one whose module cannot be imported
                # here, is removed without being written
                parent.remove(job)
                job.annotations['zcasync.cancelled'] = api.iso(utils.now())
                answer = {'action': 'cancel', 'job': api.jobId(job),
                          'queue': parent.name}
    if args.json:
        printJson(answer)
    else:
        print('cancelled job %s: removed from queue %s; it will not run'
              % (answer['job'], queueLabel(answer['queue'])))
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
    """A failed job: a new job with its call (the dashboard's retry
    action, ``zcasync.web.actions.retry``); a parked job: back in its
    queue."""
    from zcasync.web import actions
    with Session(args) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                job = session.job(args.id)
                if statusName(job) == 'parked':
                    # back in its queue, where it was (its module must be
                    # importable by the workers now)
                    job.queue.unpark(job)
                    answer = {'action': 'unpark', 'job': api.jobId(job),
                              'queue': job.queue.name}
                else:
                    answer = apiCall(actions.retry, session.conn,
                                     api.jobId(job), {})
    if args.json:
        printJson(answer)
    elif answer['action'] == 'unpark':
        print('%s: back in queue %s, where it was' % (
            answer['job'], queueLabel(answer['queue'])))
    else:
        print(answer['new_job'])
    return EXIT_OK
