"""``zcasync put``: queue a job from a shell, and optionally wait for it.

Arguments: ``ARG`` and ``NAME=VALUE`` words (and ``--kw NAME=JSON``); a
value that looks like JSON (a number, a string in quotes, a list, an
object, a literal) must be valid JSON with finite numbers, any other word
is a string.  The job's module is imported here, as workers will.  After
the put, a warning says when no live worker serves the queue.  With
``--wait``, the job's progress (its ``progress`` and ``status`` live
annotations) is kept up to date on a terminal, and its result is printed
as JSON (``--json``: one document, the job's details).
"""
import datetime
import importlib
import json
import math
import re
import shutil
import sys
import time

from zcasync.cli import db as cli_db
from zcasync.cli.common import (
    CommandError, firstLine, statusName, showValue, printJson, isTerminal,
    warn, EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IMPORT, EXIT_TIMEOUT)
from zcasync.cli.jobs import Session, servingProblem
from zcasync.web import api


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
    timeout = None
    if args.timeout is not None:
        _nonNegative(args.timeout, '--timeout')
        if not args.timeout > 0:
            raise CommandError('--timeout must be a number of seconds > 0, '
                               'not %r' % (args.timeout,), EXIT_USAGE)
        timeout = datetime.timedelta(seconds=args.timeout)
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
                        unique_key=args.unique, unique_for=unique_for,
                        timeout=timeout)
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
