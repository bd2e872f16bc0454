"""The ``zcasync`` command (also ``python -m zcasync``).

Sub-commands: ``worker`` (run a dispatcher in the foreground), ``server``
(a ZEO server on a FileStorage), ``dashboard`` (the web pages, API and
metrics, in ``zcasync.web``), ``put`` (queue a job), ``status``,
``jobs``, ``job``, ``cancel``, ``retry``, ``schedules``, ``queue``,
``prune``, ``migrate`` and ``pg-notify``.  The work is done by the modules of this
package: ``worker``, ``server``, ``dashboard``, ``put``, ``jobs`` (jobs,
job, cancel, retry), ``status``, ``schedules`` (schedules, queue, prune)
and ``db`` (database URIs, pg-notify); ``common`` holds the exit codes,
errors and output helpers.  This module builds the argument parser, reads
``ZCASYNC_*`` environment variables and turns every problem into a
one-line error and a distinct exit code.

Every option can also come from the environment: ``--poll-interval`` from
``ZCASYNC_POLL_INTERVAL``, ``--db`` from ``ZCASYNC_DB`` and so on (options
that may be repeated take a comma-separated list; flags take 1/0,
true/false, yes/no).  The command line wins over the environment.
"""
import argparse
import logging
import math
import os
import sys

from zcasync.cli import common as cli_common
from zcasync.cli.common import CommandError, EXIT_USAGE, EXIT_INTERNAL

DESCRIPTION = """\
zcasync: a durable, transactional job queue on ZODB.

Run workers against a shared database (a ZEO server or PostgreSQL), queue
jobs from any process, and inspect or manage them from a shell.
"""

EXAMPLES = """\
examples:
  zcasync server --db file:///var/zcasync/Data.fs --address 127.0.0.1:8100
  zcasync worker --db zeo://127.0.0.1:8100 --uuid-file w1.uuid \\
      --import myapp.tasks --size 4
  zcasync put --db zeo://127.0.0.1:8100 myapp.tasks:send_report 42 '"weekly"'
  zcasync put --db zeo://127.0.0.1:8100 --wait myapp.tasks:f 1 title=draft
  zcasync put --db zeo://127.0.0.1:8100 --in 3600 --wait 4000 myapp.tasks:f
  zcasync put --db zeo://127.0.0.1:8100 --priority 5 --unique report-42 \\
      --kw title='"weekly"' myapp.tasks:send_report 42
  zcasync schedules add nightly myapp.tasks:cleanup --cron "30 2 * * *" \\
      --timezone Europe/Berlin --db zeo://127.0.0.1:8100
  zcasync queue pause reports --db zeo://127.0.0.1:8100
  zcasync prune --older-than 3d --db zeo://127.0.0.1:8100
  zcasync status --db zeo://127.0.0.1:8100
  zcasync jobs failed --db zeo://127.0.0.1:8100 --limit 20
  zcasync job 1234@unnamed --db zeo://127.0.0.1:8100 --json
  zcasync dashboard --db zeo://127.0.0.1:8100 --address 127.0.0.1:8080
  zcasync migrate --db file:///var/zc.async/Data.fs --import myapp.tasks
  export ZCASYNC_DB=postgres://postgres@db.example:5432/zcasync
  zcasync worker --queue reports --uuid-file /var/lib/zcasync/w1.uuid

database URIs (--db, through zodburi):
  file:///path/Data.fs     one process only (use "zcasync server" to share)
  zeo://HOST:PORT          a ZEO server; ?wait_timeout=S for outages
  postgres://USER@HOST:PORT/DBNAME?keep_history=false   RelStorage
                           (postgresql:// works too)
  memory://                an in-memory database (tests)
  database options take the connection_ prefix: ?connection_pool_size=10

exit codes:
""" + '\n'.join('  %-3d %s' % pair for pair in cli_common.EXIT_CODES)

LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off', '')


class Parser(argparse.ArgumentParser):
    """Errors become CommandError: one line, exit code 2."""

    def error(self, message):
        raise CommandError('%s (see "%s --help")' % (message, self.prog),
                           EXIT_USAGE, prog=self.prog)


class Options:
    """Adds options to a parser, taking defaults from ZCASYNC_* variables."""

    def __init__(self, parser, environ):
        self.parser = parser
        self.environ = environ

    def add(self, *flags, env=None, **kw):
        long_flag = [f for f in flags if f.startswith('--')][0]
        name = env or 'ZCASYNC_' + long_flag[2:].upper().replace('-', '_')
        kw['help'] = '%s [env %s]' % (kw.get('help', ''), name)
        raw = self.environ.get(name)
        if raw is not None:
            kw['default'] = self._convert(name, raw, dict(kw, _flag=long_flag))
            kw.pop('required', None)
        return self.parser.add_argument(*flags, **kw)

    def _convert(self, name, raw, kw):
        action = kw.get('action')
        if action == 'store_true':
            if raw.strip().lower() in _TRUE:
                return True
            if raw.strip().lower() in _FALSE:
                return False
            raise CommandError('%s=%r (for %s): expected 1/0, true/false or '
                               'yes/no' % (name, raw, self._flag(kw)),
                               EXIT_USAGE)
        convert = kw.get('type') or str
        values = raw.split(',') if action == 'append' else [raw]
        try:
            converted = [convert(v.strip() if convert is not str else v)
                         for v in values]
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise CommandError('%s=%r (for %s): %s' % (
                name, raw, self._flag(kw), e), EXIT_USAGE) from None
        choices = kw.get('choices')
        for value in converted:
            if choices is not None and value not in choices:
                raise CommandError('%s=%r (for %s): choose from %s' % (
                    name, raw, self._flag(kw), ', '.join(
                        map(str, choices))), EXIT_USAGE)
        return converted if action == 'append' else converted[0]

    def _flag(self, kw):
        return kw.get('_flag', 'an option')


def version():
    """``zcasync 0.1.0 (Python 3.11.7)``."""
    from importlib.metadata import PackageNotFoundError, version as found
    try:
        number = found('zcasync')
    except PackageNotFoundError:  # run from a source tree
        number = 'unknown (not installed)'
    return 'zcasync %s (Python %s)' % (number, sys.version.split()[0])


def _level(text):
    value = text.upper()
    if value not in LEVELS:
        raise argparse.ArgumentTypeError(
            'invalid log level %r (choose from %s)' % (text, ', '.join(
                LEVELS)))
    return getattr(logging, value)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'invalid number of seconds: %r' % (text,)) from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(
            'seconds must be >= 0, not %r' % (text,))
    return value


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'invalid integer: %r' % (text,)) from None


def _common(options, db_help='database URI (see "zcasync --help")',
            log_default=None, connect_timeout=0.0):
    options.add('--db', required=True, metavar='URI', help=db_help)
    options.add('--connect-timeout', type=_seconds, default=connect_timeout,
                metavar='S', help='how long to wait for a ZEO or PostgreSQL '
                'server that does not accept connections yet (default '
                '%(default)g: ' + ('wait for a server that is starting)'
                                   if connect_timeout else 'fail at once)'))
    options.add('--log-level', type=_level, default=log_default,
                metavar='LEVEL', help='DEBUG, INFO, WARNING, ERROR or '
                'CRITICAL (default %s)' % (
                    logging.getLevelName(log_default) if log_default
                    else 'no log output'))


def _sub(subparsers, name, help, description=None):
    return subparsers.add_parser(name, help=help,
                                 description=description or help)


def buildParser(environ):
    parser = Parser(prog='zcasync', description=DESCRIPTION, epilog=EXAMPLES,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--version', action='version', version=version(),
                        help='print the versions of zcasync and Python')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')

    p = _sub(sub, 'worker', 'run a worker (a dispatcher) in the foreground',
             'Run a dispatcher with a Twisted reactor until SIGTERM/SIGINT. '
             'On first use it creates the queues, its registration and its '
             'agent. SIGTERM: no new claims, running jobs get --grace '
             'seconds, then unfinished work is left to recovery; exit 0.')
    o = Options(p, environ)
    _common(o, log_default=logging.INFO, connect_timeout=10.0)
    o.add('--queue', action='append', metavar='NAME',
          help="a queue to serve (repeatable; default: the primary queue '')")
    o.add('--agent', default='main', metavar='NAME',
          help="this worker's agent name in each queue (default "
          "%(default)s)")
    o.add('--size', type=_integer, default=3, metavar='N',
          help='jobs run at once per queue (default %(default)s)')
    o.add('--poll-interval', type=_seconds, default=5.0, metavar='S',
          help='seconds between polls (default %(default)s)')
    o.add('--ping-interval', type=_seconds, default=30.0, metavar='S',
          help='seconds between pings (default %(default)s)')
    o.add('--ping-death-interval', type=_seconds, default=60.0, metavar='S',
          help='seconds without a ping after which siblings recover this '
          "worker's jobs (default %(default)s)")
    o.add('--grace', type=_seconds, default=30.0, metavar='S',
          help='on SIGTERM/SIGINT, seconds running jobs get to finish '
          '(default %(default)s)')
    o.add('--import', dest='imports', action='append', metavar='MODULE',
          help='a module to import first, e.g. the one defining the job '
          'functions (repeatable)')
    o.add('--uuid-file', metavar='PATH',
          help='file holding this worker\'s UUID, created if missing; one '
          'per worker (default: $ZC_ASYNC_UUID, else ./uuid.txt)')
    o.add('--http', metavar='HOST:PORT', help='also serve the dashboard '
          '(pages, /api, /metrics) here; actions need '
          'ZCASYNC_DASHBOARD_TOKEN')
    p.set_defaults(run='worker')

    p = _sub(sub, 'dashboard', 'serve the web dashboard, JSON API and '
             'Prometheus metrics', 'Serve live pages, /api/... and /metrics '
             'until SIGTERM/SIGINT. Read-only unless a token is given; '
             'actions (retry, cancel, resize, prune) need it in an '
             '"Authorization: Bearer TOKEN" header.')
    o = Options(p, environ)
    _common(o, log_default=logging.INFO, connect_timeout=10.0)
    o.add('--address', default='127.0.0.1:8080', metavar='HOST:PORT',
          help='where to listen (default %(default)s; port 0 picks one and '
          'prints it)')
    o.add('--token', env='ZCASYNC_DASHBOARD_TOKEN', metavar='TOKEN',
          help='allow actions to requests that send this token')
    o.add('--import', dest='imports', action='append', metavar='MODULE',
          help='a module to import first, e.g. the one defining the job '
          'functions (repeatable)')
    p.set_defaults(run='dashboard')

    p = _sub(sub, 'server', 'run a ZEO server on a FileStorage',
             'Serve a FileStorage over ZEO in the foreground until '
             'SIGTERM/SIGINT; workers and other commands then use '
             '--db zeo://HOST:PORT.')
    o = Options(p, environ)
    o.add('--db', required=True, metavar='file://PATH',
          help='the FileStorage to serve, e.g. file:///var/zcasync/Data.fs '
          '(created if missing)')
    o.add('--address', default='127.0.0.1:8100', metavar='HOST:PORT',
          help='where to listen (default %(default)s; port 0 picks one and '
          'prints it)')
    o.add('--log-level', type=_level, default='INFO', metavar='LEVEL',
          help='DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)')
    p.set_defaults(run='server')

    p = _sub(sub, 'put', 'queue a job and print its id',
             'Queue module:function(ARG..., NAME=VALUE...) in its own '
             'transaction and print its id (OID@DATABASE). NAME=VALUE is a '
             'keyword argument. A value that looks like JSON (a number, '
             '"text", [1, 2], {"a": 1}, true, false, null) must be valid '
             'JSON with finite numbers; any other word is passed as a '
             'string (quote strings that look like JSON or contain "=" as '
             '\'"text"\'). Put "--" before arguments that start with "--". '
             'A warning says when no live worker serves the queue.')
    o = Options(p, environ)
    _common(o)
    o.add('--queue', default='', metavar='NAME',
          help="the queue (default: the primary queue '')")
    o.add('--create-queue', action='store_true',
          help='create the queue if it does not exist')
    when = p.add_mutually_exclusive_group()
    Options(when, environ).add(
        '--begin-after', metavar='ISO8601',
        help='start no earlier than this (e.g. 2030-01-31T09:00:00Z)')
    Options(when, environ).add(
        '--in', dest='begin_in', type=_seconds, metavar='SECONDS',
        help='start no earlier than this many seconds from now')
    o.add('--begin-by', type=_seconds, metavar='SECONDS',
          help='fail with TimeoutError if not started this many seconds '
          'after its begin time')
    o.add('--retry-policy', metavar='NAME',
          help='NeverRetry, RetryCommonForever, RetryCommonFourTimes (the '
          'default), a registered name, or module:factory')
    o.add('--timeout', type=_seconds, metavar='SECONDS',
          help='time limit of each run: a longer run is stopped and fails '
          'with TimeLimitError (its retry policy decides what follows)')
    o.add('--priority', type=_integer, metavar='N',
          help='due jobs are claimed highest priority first (default 0)')
    o.add('--unique', metavar='KEY',
          help='while a job put with KEY is pending or running in the '
          'queue, print its id instead of queueing another')
    o.add('--unique-for', metavar='DURATION',
          help='with --unique: hold KEY this long after the put (e.g. 10m, '
          '1h) instead of until the job completes')
    o.add('--kw', action='append', metavar='NAME=JSON',
          help='a keyword argument, its value in JSON (repeatable), e.g. '
          '--kw retries=3 --kw title=\'"weekly"\'')
    o.add('--wait', nargs='?', type=_seconds, const=math.inf,
          metavar='TIMEOUT', help='wait for the job and print its result '
          'as JSON (its traceback and exit 1 if it failed), showing its '
          'progress on a terminal; TIMEOUT in seconds, none: no limit')
    o.add('--json', action='store_true', help='print one JSON document: '
          'the job (with --wait: once it completed)')
    p.add_argument('callable', metavar='module:function')
    p.add_argument('args', nargs='*', metavar='ARG')
    p.set_defaults(run='put')

    p = _sub(sub, 'schedules', 'list, add, pause, resume or remove '
             'periodic jobs',
             'Periodic jobs of a queue. "schedules" lists them with their '
             'next runs; "schedules add NAME module:function [ARG...] "'
             '--cron EXPR | --every DURATION" adds (or replaces) one; '
             '"schedules pause|resume|remove NAME". ARGs as for put.')
    o = Options(p, environ)
    _common(o)
    p.add_argument('action', nargs='?', default='list', choices=(
        'list', 'add', 'pause', 'resume', 'remove'), metavar='ACTION',
        help='list (default), add, pause, resume or remove')
    p.add_argument('name', nargs='?', metavar='NAME')
    p.add_argument('callable', nargs='?', metavar='module:function')
    p.add_argument('args', nargs='*', metavar='ARG')
    o.add('--queue', default='', metavar='NAME',
          help="the queue (default: the primary queue '')")
    o.add('--create-queue', action='store_true',
          help='add: create the queue if it does not exist')
    o.add('--cron', metavar='EXPR',
          help='add: a five-field cron expression, e.g. "*/5 * * * *"')
    o.add('--every', metavar='DURATION',
          help='add: an interval, e.g. 30s, 5m, 1h (ticks aligned on the '
          'epoch)')
    o.add('--timezone', metavar='TZ',
          help='add: the IANA time zone of --cron (default UTC)')
    o.add('--catch-up', action='store_true',
          help='add: after an outage, run the last missed tick once')
    o.add('--grace', metavar='DURATION',
          help='add: how late a tick may still fire (default 30s)')
    o.add('--kw', action='append', metavar='NAME=JSON',
          help='add: a keyword argument for the job (repeatable)')
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='schedules')

    p = _sub(sub, 'queue', 'pause or resume a queue',
             'A paused queue accepts puts and hands out no jobs (running '
             'jobs finish); resume hands them out again.')
    o = Options(p, environ)
    _common(o)
    p.add_argument('action', choices=('pause', 'resume'), metavar='ACTION',
                   help='pause or resume')
    p.add_argument('name', nargs='?', default='', metavar='NAME',
                   help="the queue (default: the primary queue '')")
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='queue')

    p = _sub(sub, 'prune', 'remove old completed jobs',
             'Remove completed jobs older than --older-than from every '
             "agent's completed collection (failed ones too with "
             '--failed-too), one short transaction per batch so that '
             'workers are not held up; also frees stale unique keys. '
             'With --dispatchers, unregister stopped dispatchers whose '
             'agents hold no job.')
    o = Options(p, environ)
    _common(o)
    o.add('--older-than', metavar='DURATION',
          help='e.g. 3d, 12h, 90m')
    o.add('--dispatchers', action='store_true',
          help='unregister stopped dispatchers (their agents and '
          'completed-job lists go with them)')
    o.add('--failed-too', action='store_true',
          help='remove failed jobs too (default: keep them)')
    o.add('--queue', metavar='NAME', help='only this queue')
    o.add('--batch', type=_integer, default=200, metavar='N',
          help='jobs removed per transaction (default %(default)s)')
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='prune')

    p = _sub(sub, 'status', 'show queues, dispatchers and agents',
             'Database-wide view: each queue with its pending and running '
             'jobs and the capacity of its live agents, then each '
             'dispatcher (alive, dead or stopped; last ping) with its '
             'agents. Warns about each queue whose jobs would not start '
             '(paused, or no live worker with an agent in it).')
    o = Options(p, environ)
    _common(o)
    o.add('--all', action='store_true', help='also list stopped '
          'dispatchers (counted otherwise)')
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='status')

    p = _sub(sub, 'jobs', 'list jobs by status',
             'List jobs: pending ones in claim order, then assigned, active '
             'and callbacks ones held by agents, then completed ones newest '
             'first (agents keep completed jobs about a week).')
    o = Options(p, environ)
    _common(o)
    p.add_argument('kind', nargs='?', choices=(
        'pending', 'parked', 'assigned', 'active', 'callbacks', 'completed',
        'succeeded', 'failed', 'cancelled'), metavar='STATUS',
        help='pending, parked, assigned, active, callbacks, completed, '
        'succeeded, failed or cancelled (default: all)')
    o.add('--queue', metavar='NAME', help='only this queue')
    o.add('--agent', metavar='NAME', help='only jobs of agents so named')
    o.add('--limit', type=_integer, default=100, metavar='N',
          help='at most N jobs (default %(default)s; 0: all)')
    o.add('--internal', action='store_true',
          help="also list recovery's own jobs (handleInterrupt, "
          'resumeCallbacks), hidden by default')
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='jobs')

    for name, help, description in (
            ('job', 'show one job',
             'Show a job: repr, status, times, result or traceback, '
             'annotations.'),
            ('cancel', 'cancel a job, or ask a running one to stop',
             'A job that has not started (pending, scheduled, parked, '
             'claimed ahead) completes at once with CancelledError; a '
             'running job is asked to stop (zcasync.local.cancelled() '
             'becomes true in it) and completed with CancelledError after '
             '--grace seconds whatever it does.  A completed job is '
             'refused.'),
            ('retry', 'queue a failed job again as a new job',
             'Queue a new job with the callable, arguments and policy of a '
             'failed job (not its callbacks); prints the new id.  A parked '
             'job (one the workers could not load) goes back to its queue, '
             'where it was.')):
        p = _sub(sub, name, help, description)
        o = Options(p, environ)
        _common(o)
        p.add_argument('id', metavar='ID', help='OID or OID@DATABASE')
        o.add('--json', action='store_true', help='print JSON')
        if name == 'cancel':
            o.add('--grace', type=_seconds, metavar='SECONDS',
                  help='how long a running job has to stop before it is '
                  'completed anyway (default 5)')
        p.set_defaults(run=name)

    p = _sub(sub, 'migrate', 'convert a zc.async database for zcasync',
             'Convert the zc.async 1.x data of a database for zcasync, in '
             'place: first report what will be converted (objects by class, '
             'jobs by state), then convert in transactions of --batch '
             'objects. An interrupted migration goes on where it stopped '
             'when run again; on a migrated database it has nothing to do. '
             'Stop every zc.async process and back the database up first; '
             'the application\'s job modules must be importable.')
    o = Options(p, environ)
    _common(o)
    o.add('--dry-run', action='store_true',
          help='only report what would be converted; change nothing')
    o.add('--from-python2', action='store_true',
          help='the database was written by Python 2: convert its pickles '
          'first')
    o.add('--import', dest='imports', action='append', metavar='MODULE',
          help="a module to import first, e.g. the application's job "
          'functions (repeatable)')
    o.add('--batch', type=_integer, default=200, metavar='N',
          help='objects per transaction (default %(default)s)')
    p.set_defaults(run='migrate')

    p = _sub(sub, 'pg-notify', 'install or remove the PostgreSQL notify '
             'trigger', 'RelStorage on PostgreSQL: workers hear commits at '
             'once through a trigger on RelStorage\'s object_state table '
             'that sends NOTIFY; without it they poll every poll interval. '
             'Install it once per database (the user needs the right to '
             'create functions and triggers).')
    o = Options(p, environ)
    _common(o)
    p.add_argument('action', choices=('install', 'remove', 'status'),
                   metavar='ACTION', help='install, remove or status')
    o.add('--json', action='store_true', help='print JSON')
    p.set_defaults(run='pg-notify')
    return parser


def _preprocess(argv):
    """``--wait`` followed by an option or ``module:function`` waits
    without limit (so ``put --wait pkg:f`` keeps pkg:f as the callable);
    followed by anything else it takes that as its TIMEOUT, and argparse
    says when that is not a number."""
    result = list(argv)
    for i, arg in enumerate(result):
        if arg == '--':
            break
        if arg == '--wait':
            following = result[i + 1] if i + 1 < len(result) else None
            if following is None or following.startswith('-') and \
                    not _isNumber(following) or ':' in following:
                result[i] = '--wait=inf'
    return result


def _isNumber(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def run(args):
    if args.run == 'worker':
        from zcasync.cli import worker
        return worker.runWorker(args)
    if args.run == 'server':
        from zcasync.cli import server
        return server.runServer(args)
    if args.run == 'dashboard':
        from zcasync.cli import dashboard
        cli_common.setupLogging(args.log_level)
        cli_common.importModules(args.imports or ())
        return dashboard.runDashboard(args)
    if args.log_level is None:
        logging.getLogger().addHandler(logging.NullHandler())
    else:
        cli_common.setupLogging(args.log_level)
    import zcasync.configure
    zcasync.configure.base()
    if args.run == 'pg-notify':
        from zcasync.cli import db
        return db.runPgNotify(args)
    if args.run == 'migrate':
        from zcasync.cli import migrate
        return migrate.runMigrate(args)
    from zcasync.cli import jobs, put, schedules, status
    return {'put': put.runPut, 'status': status.runStatus,
            'jobs': jobs.runJobs, 'job': jobs.runJob,
            'cancel': jobs.runCancel,
            'retry': jobs.runRetry,
            'schedules': schedules.runSchedules,
            'queue': schedules.runQueue,
            'prune': schedules.runPrune}[args.run](args)


def main(argv=None, environ=None):
    """Run the command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    prog = 'zcasync'
    try:
        parser = buildParser(environ)
        args = parser.parse_args(_preprocess(argv))
        if not getattr(args, 'run', None):
            raise CommandError(
                'choose a command: worker, server, dashboard, put, status, '
                'jobs, job, cancel, retry, schedules, queue, prune, migrate '
                'or pg-notify (see "zcasync --help")', EXIT_USAGE)
        prog = 'zcasync ' + args.command
        return run(args)
    except CommandError as e:
        sys.stdout.flush()
        sys.stderr.write('%s: error: %s\n' % (e.prog or prog, e.message))
        return e.code
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write('%s: interrupted\n' % prog)
        return 130
    except Exception as e:
        if environ.get('ZCASYNC_TRACEBACK'):
            raise
        sys.stderr.write(
            '%s: error: unexpected %s: %s (set ZCASYNC_TRACEBACK=1 to see '
            'the traceback)\n' % (prog, type(e).__name__,
                                  cli_common.firstLine(e)))
        return EXIT_INTERNAL


if __name__ == '__main__':
    sys.exit(main())
