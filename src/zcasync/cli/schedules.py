"""The ``zcasync`` commands for periodic jobs and queue administration:
``schedules`` (list with next runs, add, pause, resume, remove), ``queue
pause|resume`` and ``prune`` (completed jobs, in bounded batches), and
the argument parsing shared with ``put`` (``--kw NAME=JSON``, durations
such as ``3d``).

Each command works in short transactions retried on conflicts, so that
workers are never held up: ``prune`` commits one batch at a time.
"""
import datetime
import json
import re

from zcasync.cli.common import (
    CommandError, firstLine, isoTime, seconds, printJson, printTable,
    isTerminal, queueLabel, shortTime, EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND)

_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$')
_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}


def parseDuration(text, option):
    """``90``, ``45s``, ``30m``, ``12h``, ``3d`` or ``2w`` -> timedelta."""
    match = _DURATION.match(str(text))
    if match is None:
        raise CommandError(
            '%s %r is not a duration: write a number with an optional unit '
            's, m, h, d or w (e.g. 3d, 12h, 90)' % (option, text), EXIT_USAGE)
    return datetime.timedelta(
        seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parseKeywords(items):
    """``NAME=JSON`` options -> dict; malformed JSON is an error (unlike
    positional arguments, which fall back to strings)."""
    kwargs = {}
    for item in items or ():
        name, sep, text = item.partition('=')
        if not sep or not name.isidentifier():
            raise CommandError(
                '--kw %r: write NAME=JSON with a Python identifier as NAME '
                '(e.g. --kw retries=3 or --kw title=\'"weekly"\')' % (item,),
                EXIT_USAGE)
        if name in kwargs:
            raise CommandError('--kw %s is given twice' % name, EXIT_USAGE)
        try:
            kwargs[name] = json.loads(text)
        except ValueError as e:
            raise CommandError(
                '--kw %s: %r is not valid JSON (%s); quote strings as '
                '\'"text"\'' % (name, text, e), EXIT_USAGE) from None
    return kwargs


# --- schedules ---------------------------------------------------------------

def describeSchedule(name, schedule):
    return {
        'name': name,
        'call': schedule.describeCall(),
        'cron': schedule.cron,
        'every': seconds(schedule.every),
        'timezone': schedule.timezone,
        'catch_up': schedule.catch_up,
        'grace': seconds(schedule.grace),
        'paused': schedule.paused,
        'last_tick': isoTime(schedule.last_tick),
        'fired': schedule.fired,
        'next_runs': [isoTime(t) for t in schedule.nextRuns(3)],
    }


SCHEDULE_HEADERS = ('NAME', 'WHEN', 'FIRED', 'NEXT RUN (UTC)', 'CALL')


def _scheduleRow(info):
    when = 'cron %s %s' % (info['cron'], info['timezone']) \
        if info['cron'] is not None else 'every %g s' % info['every']
    following = 'paused' if info['paused'] else (
        shortTime(info['next_runs'][0]) if info['next_runs'] else '-')
    return [info['name'], when, info['fired'], following, info['call']]


def runSchedules(args):
    from zcasync.cli.jobs import Session
    action = args.action
    if action != 'add':
        for option in ('cron', 'every', 'timezone', 'grace', 'kw'):
            if getattr(args, option):
                raise CommandError('--%s only goes with "schedules add"'
                                   % option.replace('_', '-'), EXIT_USAGE)
        if args.catch_up or args.callable or args.args:
            raise CommandError(
                '"schedules %s" takes %s' % (action, 'no arguments' if
                                            action == 'list' else
                                            'only a schedule NAME'),
                EXIT_USAGE)
    if action != 'list' and not args.name:
        raise CommandError('"schedules %s" needs a schedule NAME' % action,
                           EXIT_USAGE)
    if action == 'list' and args.name:
        raise CommandError('"schedules" lists all schedules; use '
                           '"schedules add|pause|resume|remove NAME"',
                           EXIT_USAGE)
    if action == 'add':
        return _addSchedule(args)
    with Session(args) as session:
        if action == 'list':
            queue = session.queue(args.queue)
            schedules = queue.existingSchedules() or {}
            found = [describeSchedule(name, schedules[name])
                     for name in schedules]
            if args.json:
                printJson({'queue': args.queue, 'items': found})
            else:
                printTable(SCHEDULE_HEADERS, [_scheduleRow(info)
                                              for info in found])
                if not found and isTerminal():
                    print('no schedules in queue %s'
                          % queueLabel(args.queue))
            return EXIT_OK
        for attempt in session.tm.attempts(10):
            with attempt:
                queue = session.queue(args.queue)
                schedules = queue.existingSchedules() or {}
                if args.name not in schedules:
                    session.tm.abort()
                    raise CommandError(
                        'no schedule %r in queue %r ("zcasync schedules" '
                        'lists them)' % (args.name, args.queue),
                        EXIT_NOT_FOUND)
                if action == 'remove':
                    schedules.remove(args.name)
                    info = None
                else:
                    getattr(schedules[args.name], action)()
                    info = describeSchedule(args.name, schedules[args.name])
    if args.json:
        printJson({'name': args.name, 'action': action, 'schedule': info})
    else:
        print('schedule %r in queue %s: %s' % (
            args.name, queueLabel(args.queue), {
                'pause': 'paused', 'resume': 'resumed',
                'remove': 'removed'}[action]))
    return EXIT_OK


def _addSchedule(args):
    from zcasync.cli.jobs import Session
    from zcasync.cli.put import importCallable, parseArguments
    if not args.callable:
        raise CommandError('"schedules add NAME module:function [ARG...]" '
                           'needs the function to call', EXIT_USAGE)
    if (args.cron is None) == (args.every is None):
        raise CommandError('give "schedules add" either --cron EXPR or '
                           '--every DURATION', EXIT_USAGE)
    func = importCallable(args.callable)
    values, kwargs = parseArguments(args.args, args.kw)
    options = {
        'cron': args.cron, 'timezone': args.timezone or 'UTC',
        'catch_up': bool(args.catch_up),
        'every': parseDuration(args.every, '--every')
        if args.every is not None else None,
        'grace': parseDuration(args.grace, '--grace')
        if args.grace is not None else None,
    }
    clash = set(kwargs) & {'cron', 'every', 'timezone', 'catch_up', 'grace'}
    if clash:
        raise CommandError('--kw %s: that name is an option of the schedule '
                           'itself' % sorted(clash)[0], EXIT_USAGE)
    with Session(args, create=args.create_queue) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                queue = session.queue(args.queue, create=args.create_queue,
                                      creatable=True)
                try:
                    schedule = queue.schedule(args.name, func, *values,
                                              **options, **kwargs)
                except (TypeError, ValueError) as e:
                    session.tm.abort()
                    raise CommandError(firstLine(e), EXIT_USAGE) from None
        info = describeSchedule(args.name, schedule)
    if args.json:
        printJson(info)
    else:
        printTable(SCHEDULE_HEADERS, [_scheduleRow(info)])
    return EXIT_OK


# --- queue pause|resume -------------------------------------------------------

def runQueue(args):
    from zcasync.cli.jobs import Session
    with Session(args) as session:
        for attempt in session.tm.attempts(10):
            with attempt:
                queue = session.queue(args.name)
                getattr(queue, args.action)()
                pending = len(queue)
    if args.json:
        printJson({'queue': args.name, 'paused': args.action == 'pause',
                   'pending': pending})
    else:
        print('queue %s %s (%d pending)' % (
            queueLabel(args.name), 'paused: no job will be handed out '
            'until "zcasync queue resume"' if args.action == 'pause'
            else 'resumed', pending))
    return EXIT_OK


# --- prune -------------------------------------------------------------------

def runPrune(args):
    from zcasync.cli.jobs import Session
    if args.older_than is None and not args.dispatchers:
        raise CommandError('give --older-than DURATION (completed jobs), '
                           '--dispatchers (stopped dispatchers), or both',
                           EXIT_USAGE)
    older = parseDuration(args.older_than, '--older-than') \
        if args.older_than is not None else None
    if args.batch < 1:
        raise CommandError('--batch must be >= 1', EXIT_USAGE)
    data = {}
    with Session(args) as session:
        session.tm.begin()
        if args.queue is not None:
            session.queue(args.queue)  # an unknown queue: a clear error
        session.tm.abort()
        if older is not None:
            data.update(_pruneJobs(session, args, older))
        if args.dispatchers:
            data['dispatchers'] = _pruneDispatchers(session, args)
    if args.json:
        printJson(data)
        return EXIT_OK
    if older is not None:
        print('removed %d completed job(s) older than %s%s; freed %d stale '
              'unique key(s)' % (data['removed'], data['before'],
                                 '' if args.failed_too else
                                 ' (failed ones kept: --failed-too)',
                                 data['unique_keys_freed']))
    if args.dispatchers:
        found = data['dispatchers']
        print('unregistered %d stopped dispatcher registration(s)%s' % (
            len(found['pruned']), '; kept %d whose agents hold jobs'
            % len(found['kept']) if found['kept'] else ''))
    return EXIT_OK


def _pruneJobs(session, args, older):
    from zcasync import utils
    removed = unique = 0
    before = utils.now() - older
    session.tm.begin()
    queues = session.queues() or {}
    names = [n for n in queues if args.queue is None or n == args.queue]
    collections = [
        (name, uuid, agent_name)
        for name in names
        for uuid, agents in queues[name].dispatchers.items()
        for agent_name in agents]
    session.tm.abort()
    for name, uuid, agent_name in collections:
        resume = {}
        while resume is not None:
            # one short transaction per batch: workers completing jobs
            # meanwhile conflict with a batch at most, which is retried
            for attempt in session.tm.attempts(10):
                with attempt:
                    agents = session.queues()[name].dispatchers[uuid]
                    count, following = agents[agent_name].completed.prune(
                        before, args.failed_too, args.batch, resume)
            removed += count
            resume = following
    for name in names:
        count = args.batch
        while count == args.batch:
            for attempt in session.tm.attempts(10):
                with attempt:
                    count = session.queues()[name].pruneUnique(args.batch)
            unique += count
    return {'removed': removed, 'unique_keys_freed': unique,
            'before': isoTime(before)}


def _pruneDispatchers(session, args):
    """The dashboard's prune action (``zcasync.web.actions.prune``):
    ``{"action": "prune", "pruned": [...], "kept": [...]}``."""
    from zcasync.cli.jobs import apiCall
    from zcasync.web import actions
    body = {} if args.queue is None else {'queue': args.queue}
    for attempt in session.tm.attempts(10):
        with attempt:
            answer = apiCall(actions.prune, session.conn, None, body)
    return answer
