"""``zcasync status``: the database at a glance.

One row per queue (pending jobs, how long the first due one has waited,
running jobs against the capacity of live agents, dispatchers alive, dead
and stopped) and one per dispatcher registration (state, last ping,
agents).  Stopped registrations are counted, not listed, unless ``--all``
(``zcasync prune --dispatchers`` removes them).  Each queue whose jobs
would not start now -- it is paused, or no live dispatcher has an agent
in it -- gets a warning on stderr.

``--json`` prints one document: the queues as in the dashboard's
``GET /api/overview``, every registration as in ``GET /api/dispatchers``
(stopped ones included), and the warnings.
"""
import sys

from zcasync.cli.common import (
    printJson, printTable, isTerminal, queueLabel, shortTime, warn, EXIT_OK)
from zcasync.cli.jobs import Session, servingProblem
from zcasync.web import api

QUEUE_HEADERS = ('QUEUE', 'PENDING', 'OLDEST WAIT', 'RUNNING',
                 'CAPACITY', 'DISPATCHERS', 'NOTE')
DISPATCHER_HEADERS = ('DISPATCHER', 'QUEUE', 'STATE', 'LAST PING (UTC)',
                      'AGENTS (held/size)')


def report(root, now=None):
    from zcasync import utils
    now = now or utils.now()
    data = {'database': root._p_jar.db().database_name, 'now': api.iso(now),
            'queues': [], 'dispatchers': [], 'warnings': []}
    for name, queue in api.queuesOf(root):
        data['queues'].append(api.queueInfo(name, queue, now))
        for uuid, agents in queue.dispatchers.items():
            data['dispatchers'].append(
                api.dispatcherInfo(name, agents, now))
        if len(queue):
            problem = servingProblem(name, queue)
            if problem:
                data['warnings'].append('%d pending job(s): %s' % (
                    len(queue), problem))
    return data


def _seconds(value):
    if value is None:
        return '-'
    return '%.1f s' % value


def _queueRow(info, terminal):
    counts = info['dispatchers']
    parts = ['%d %s' % (counts[state], state)
             for state in ('alive', 'dead', 'stopped') if counts[state]]
    notes = []
    if info['paused']:
        notes.append('PAUSED')
    if info['schedules']:
        notes.append('%d schedule(s)' % info['schedules'])
    if info['next_due']:
        notes.append('next scheduled %s' % shortTime(info['next_due']))
    return [queueLabel(info['name'], terminal), info['pending'],
            _seconds(info['oldest_wait_seconds']), info['running'],
            info['capacity'], ', '.join(parts) or 'none',
            ', '.join(notes)]


def _dispatcherRow(info, terminal):
    ping = '-'
    if info['last_ping']:
        ping = '%s (%.1f s ago)' % (shortTime(info['last_ping']),
                                    info['last_ping_age_seconds'])
    agents = ', '.join('%s %d/%d' % (a['name'], a['held'], a['size'])
                       for a in info['agents']) or 'no agent'
    return [info['uuid'], queueLabel(info['queue'], terminal),
            info['state'], ping,
            agents]


def runStatus(args):
    with Session(args) as session:
        data = report(session.conn.root())
    if args.json:
        printJson(data)
        return EXIT_OK
    for text in data['warnings']:
        warn('zcasync status', text)
    terminal = isTerminal()
    if not data['queues']:
        if terminal:
            print('no zcasync queues in database %r yet (a worker creates '
                  'them when it starts)' % data['database'])
        return EXIT_OK
    shown = [d for d in data['dispatchers']
             if args.all or d['state'] != 'stopped']
    stopped = len(data['dispatchers']) - len(shown)
    if terminal:
        printTable(QUEUE_HEADERS, [_queueRow(q, True)
                                   for q in data['queues']])
        print()
        if shown:
            printTable(DISPATCHER_HEADERS, [_dispatcherRow(d, True)
                                            for d in shown])
        if stopped:
            print('(%d stopped dispatcher registration(s) not shown: '
                  '--all shows them, "zcasync prune --dispatchers" removes '
                  'them)' % stopped)
    else:
        printTable(QUEUE_HEADERS, [['queue'] + _queueRow(q, False)
                                   for q in data['queues']])
        printTable(DISPATCHER_HEADERS, [['dispatcher'] +
                                        _dispatcherRow(d, False)
                                        for d in shown])
    sys.stdout.flush()
    return EXIT_OK
