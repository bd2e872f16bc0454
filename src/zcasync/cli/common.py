"""Shared pieces of the ``zcasync`` command: exit codes, the error type
every sub-command raises for a problem the user can fix, and small
formatting helpers (job ids, times, statuses, values).

A ``CommandError`` carries a one-line message and an exit code; ``main``
prints it as ``zcasync <command>: error: <message>`` and returns the code,
so a user never sees a traceback for a mistake of theirs.
"""
import datetime
import json
import logging
import sys

import ZODB.utils

#: Exit codes, one per kind of problem (documented in ``zcasync --help``).
EXIT_OK = 0
EXIT_FAILED = 1         # put --wait: the job failed
EXIT_USAGE = 2          # bad option or argument (argparse's own code)
EXIT_URI = 3            # malformed database URI or unknown scheme
EXIT_UNAVAILABLE = 4    # the database cannot be reached or opened
EXIT_IMPORT = 5         # a module or module:function cannot be imported
EXIT_NOT_FOUND = 6      # unknown job id or queue
EXIT_REFUSED = 7        # the job's status does not allow the operation
EXIT_UUID_CLASH = 8     # another live process uses this worker's UUID
EXIT_TIMEOUT = 9        # put --wait: the job did not complete in time
EXIT_ADDRESS = 10       # server: the address cannot be listened on
EXIT_FORMAT = 11        # the database's format is not one this zcasync runs
EXIT_INTERNAL = 70      # a bug or an unexpected environment problem

EXIT_CODES = (
    (EXIT_OK, 'success'),
    (EXIT_FAILED, 'put --wait: the job failed (its traceback is printed)'),
    (EXIT_USAGE, 'bad option, argument or environment variable'),
    (EXIT_URI, 'malformed database URI or unknown scheme'),
    (EXIT_UNAVAILABLE, 'database unreachable, locked or missing'),
    (EXIT_IMPORT, 'a module or module:function cannot be imported'),
    (EXIT_NOT_FOUND, 'unknown job id or queue'),
    (EXIT_REFUSED, "the job's status does not allow the operation"),
    (EXIT_UUID_CLASH, "worker: another live process uses this worker's "
                      "UUID"),
    (EXIT_TIMEOUT, 'put --wait: the job did not complete in time'),
    (EXIT_ADDRESS, 'server: cannot listen on the address'),
    (EXIT_FORMAT, "the database's format is not one this zcasync runs on "
                  "(newer, or zc.async data not migrated); migrate: no "
                  "zc.async data to migrate"),
    (EXIT_INTERNAL, 'unexpected internal error'),
)


class CommandError(Exception):
    """A problem the user can fix: a one-line message and an exit code."""

    def __init__(self, message, code, prog=None):
        super().__init__(' '.join(str(message).split()))
        self.code = code
        self.prog = prog

    @property
    def message(self):
        return self.args[0]


def firstLine(error):
    """The first non-empty line of an exception's message."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


# --- logging and imports ---------------------------------------------------

def setupLogging(level):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)-8s %(name)s [%(process)d]: %(message)s',
        '%Y-%m-%d %H:%M:%S'))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def importModules(names):
    import importlib
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise CommandError(
                'cannot import module %r given to --import (%s: %s); check '
                'the name and PYTHONPATH' % (name, type(e).__name__,
                                             firstLine(e)),
                EXIT_IMPORT) from None



def parseAddress(text, option='--address',
                 example='127.0.0.1:8100'):
    """(host, port) from ``HOST:PORT``; CommandError otherwise."""
    host, sep, port = str(text).rpartition(':')
    host = host.strip('[]')
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise CommandError(
            '%s %r is not HOST:PORT (e.g. %s; port 0 picks a free port)'
            % (option, text, example), EXIT_USAGE)
    return host, number


# --- job ids ---------------------------------------------------------------

def formatJobId(job):
    """``OID@DATABASE`` for a stored job."""
    return '%d@%s' % (ZODB.utils.u64(job._p_oid),
                      job._p_jar.db().database_name)


def parseJobId(text):
    """(oid as int, database name or None) from ``OID`` or
    ``OID@DATABASE``."""
    oid, _, database = str(text).partition('@')
    try:
        number = int(oid)
    except ValueError:
        number = -1
    if number < 0:
        raise CommandError(
            'job id %r is not valid: give the number that "zcasync put" or '
            '"zcasync jobs" printed, as OID or OID@DATABASE (e.g. 42 or '
            '42@unnamed)' % (text,), EXIT_USAGE)
    return number, (database or None)


# --- statuses ----------------------------------------------------------------

def statusName(job):
    """pending, parked, assigned, active, callbacks, completed or new (the
    dashboard API's names)."""
    from zcasync.web import api
    return api.statusName(job.status)


# --- output ------------------------------------------------------------------

def isoTime(value):
    """An aware datetime as ISO 8601 UTC text, or None."""
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).isoformat()


def seconds(value):
    """A timedelta as float seconds, or None."""
    if value is None:
        return None
    return value.total_seconds()


def shortTime(text):
    """``2030-01-31 09:00:00`` (UTC, whole seconds) from ISO text."""
    if not text:
        return '-'
    value = datetime.datetime.fromisoformat(text)
    return value.astimezone(datetime.timezone.utc).strftime(
        '%Y-%m-%d %H:%M:%S')


def showValue(value):
    """A result or an annotation as JSON text (values JSON cannot hold
    faithfully -- NaN, objects -- as their repr, a JSON string)."""
    from zcasync.web import api
    return json.dumps(api.display(value, api.TRACEBACK_LIMIT))


def printJson(data):
    """The one JSON document a command prints with ``--json``."""
    print(json.dumps(data, indent=2, sort_keys=True), flush=True)


def isTerminal(stream=None):
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def printTable(headers, rows, stream=None):
    """Rows of cells: on a terminal a header row and aligned columns (the
    last one not padded); piped, one line per row with its cells
    separated by tabs and no header, for ``cut`` and ``awk``."""
    stream = sys.stdout if stream is None else stream
    rows = [[' '.join(str(cell).split()) if cell not in (None, '') else ''
             for cell in row] for row in rows]
    if not isTerminal(stream):
        for row in rows:
            stream.write('\t'.join(row) + '\n')
        stream.flush()
        return
    shown = [list(headers)] + [[cell or '-' for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in shown)
              for i in range(len(headers) - 1)]
    for row in shown:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        stream.write(('  '.join(cells + [row[-1]])).rstrip() + '\n')
    stream.flush()


def queueLabel(name, terminal=True):
    """How text output names a queue: on a terminal the primary queue
    ``''`` is ``(primary)``; piped output keeps the name as it is (an
    empty field)."""
    return '(primary)' if name == '' and terminal else name


def warn(prog, message):
    """``zcasync COMMAND: warning: MESSAGE`` on stderr."""
    sys.stdout.flush()
    sys.stderr.write('%s: warning: %s\n' % (prog, ' '.join(
        str(message).split())))
    sys.stderr.flush()
