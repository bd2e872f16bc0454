"""The ``zcasync`` commands that inspect and manage jobs from a shell:
``jobs``, ``job``, ``cancel`` and ``retry`` (``put`` is in
``zcasync.cli.put``, ``status`` in ``zcasync.cli.status``), and what
they share: the database session and who serves a queue.

Each opens the database, works in one transaction (retried on conflicts
when it writes) and closes it.  Read-only commands never commit.  A job is
named by ``OID@DATABASE`` (or just ``OID``), as ``put`` and ``jobs`` print
it.  With ``--json`` each command prints one JSON document whose fields
are those of the dashboard's API (``zcasync.web.api``, ``docs/api.md``):
a job summary, a job's details, a list as ``{"items": [...]}``, an
action's answer.  Text output is a table: a header row and aligned
columns on a terminal, tab-separated lines without a header when piped.
"""
import heapq
import json

import transaction
import ZODB.POSException
import ZODB.utils

from zcasync.cli import db as cli_db
from zcasync.cli.common import (
    CommandError, firstLine, parseJobId, statusName, printJson, printTable,
    isTerminal, queueLabel, shortTime, EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND,
    EXIT_REFUSED)
from zcasync.web import api

HELD = ('assigned', 'active', 'callbacks')
DONE = ('completed', 'succeeded', 'failed', 'cancelled')
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
            from zcasync import stable
            stable.markFormat(self.conn.root())
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


# --- jobs ------------------------------------------------------------------

def _agentsOf(queue, agent_name):
    for agents in queue.dispatchers.values():
        for name, agent in agents.items():
            if agent_name is None or name == agent_name:
                yield agent


def iterJobs(queues, kind, queue_name=None, agent_name=None):
    """Jobs of one kind (all kinds for None): pending ones in claim
    order, parked ones, those agents hold, then completed ones newest
    first (with those cancelled before they started)."""
    from zcasync import interfaces, utils
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
        from zcasync import control
        collections = [agent.completed for queue in selected
                       for agent in _agentsOf(queue, agent_name)]
        if agent_name is None:  # jobs cancelled before they started
            collections.extend(filter(None, map(control.cancelledJobs,
                                                selected)))
        done = heapq.merge(
            *map(iter, collections),
            key=lambda j: j.active_end or utils.EPOCH, reverse=True)
        for job in done:
            failed = utils.isFailure(job.result)
            if kind == 'succeeded' and failed or kind == 'failed' and \
                    not failed:
                continue
            if kind == 'cancelled' and not (failed and job.result.check(
                    interfaces.CancelledError)):
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
    """The dashboard's cancel action (``zcasync.web.actions.cancel``)."""
    from zcasync import control
    from zcasync.web import actions
    grace = args.grace
    if grace is not None and (grace < 0 or grace != grace or
                              grace == float('inf')):
        raise CommandError('--grace must be a number of seconds >= 0, not '
                           '%r' % (grace,), EXIT_USAGE)
    with Session(args) as session:
        job = session.job(args.id)
        answer = apiCall(actions.cancel, session.conn, api.jobId(job),
                         {'grace': grace})
    if args.json:
        printJson(answer)
    elif answer['outcome'] == control.CANCELLED:
        print('cancelled job %s: it had not started; it completed with '
              'CancelledError and will not run' % answer['job'])
    elif answer['outcome'] == control.STOPPING:
        print('job %s is running: asked it to stop; its worker completes it '
              'with CancelledError within %g s' % (answer['job'],
                                                    answer['grace']))
    else:
        print('cancelled job %s: removed from queue %s (parked, its module '
              'cannot be imported here, so it is not marked); it will not '
              'run' % (answer['job'], queueLabel(answer['queue'])))
    return EXIT_OK


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
