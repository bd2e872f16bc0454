"""Small shared helpers: time, loggers, storable failures, identities."""
import datetime
import logging
import pickle
import reprlib
import sys

import twisted.python.failure
from twisted.python import reflect

#: Lifecycle and errors.
log = logging.getLogger('zcasync.events')
#: Polls and job runs.
tracelog = logging.getLogger('zcasync.trace')

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


# --- time -----------------------------------------------------------------
# Every datetime zcasync stores or reports is timezone-aware UTC.  The clock
# is injectable (``setClock``) so that tests can move time without patching
# the datetime module.

def _system_clock():
    return datetime.datetime.now(UTC)


systemClock = _system_clock
_clock = _system_clock


def now():
    """The current time, aware UTC."""
    return _clock()


def getClock():
    """The clock in use (``systemClock`` unless ``setClock`` set one)."""
    return _clock


def setClock(clock=None):
    """Use `clock` (a callable returning an aware datetime) as the time
    source; None restores the system clock.  Returns the previous clock."""
    global _clock
    previous = _clock
    _clock = clock if clock is not None else _system_clock
    return previous


def checkAware(value, name='datetime'):
    """Refuse naive datetimes; return `value` converted to UTC."""
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime.datetime, not %r'
                        % (name, value))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            '%s %r is naive: zcasync stores only timezone-aware datetimes; '
            'use e.g. datetime.datetime.now(datetime.timezone.utc)'
            % (name, value))
    return value.astimezone(UTC)


def toMicros(value):
    """Microseconds since the epoch for an aware datetime."""
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000000 + \
        delta.microseconds


def fromMicros(micros):
    return EPOCH + datetime.timedelta(microseconds=micros)


def dt_to_long(dt):
    """zc.async's integer key for a datetime (naive ones are taken as UTC):
    newer times give smaller numbers, 16 units per microsecond (the low 4
    bits are free for a sequence)."""
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    delta = datetime.datetime.max - dt
    return (delta.days << 41) | (delta.seconds << 24) | \
        (delta.microseconds << 4)


def long_to_dt(value):
    """The aware UTC datetime of a ``dt_to_long`` key (its low 4 bits are
    ignored)."""
    delta = datetime.timedelta(value >> 41, (value >> 24) & (2 ** 17 - 1),
                               (value >> 4) & (2 ** 20 - 1))
    return (datetime.datetime.max - delta).replace(tzinfo=UTC)


# --- identities -----------------------------------------------------------

def databaseName(ob):
    jar = getattr(ob, '_p_jar', None)
    if jar is None:
        return None
    return jar.db().database_name


def jobId(job):
    """(oid, database name) of a stored object."""
    return (job._p_oid, databaseName(job))


def shortRepr(value, limit=200):
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlong = limit
    try:
        return r.repr(value)
    except Exception:
        return '<unrepresentable %s>' % type(value).__name__


# --- failures -------------------------------------------------------------

class ReprString(str):
    """A string that is its own repr: a value already turned into a repr,
    shown as such in verbose tracebacks."""

    def __repr__(self):
        return str(self)

    def __reduce__(self):
        return (ReprString, (str(self),))


class UnpicklableError(Exception):
    """Stands in for an exception that cannot be pickled; its message names
    the original exception class and repeats its message."""


_VAR_LIMIT = 300


_VAR_COUNT = 20


def _reprVars(items):
    """(name, repr) pairs of a frame's variables, without dunders, modules,
    classes and functions, at most _VAR_COUNT of them: a stored failure
    stays small and readable."""
    import types
    kept = [(name, ReprString(shortRepr(value, _VAR_LIMIT)))
            for name, value in items
            if not (name.startswith('__') and name.endswith('__'))
            and not isinstance(value, (types.ModuleType, type,
                                       types.FunctionType))
            and not callable(value)]
    return kept[:_VAR_COUNT]


def _picklable(value):
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


#: Whether failures keep the local and global variables of each frame
#: (as short reprs).  Off by default: a variable may hold a secret (a
#: password, a token) that must not end up in the database or the log.
#: Turn it on for debugging with ``setCaptureVariables(True)``, or per job
#: with ``job.capture_variables = True``.
_capture_variables = False


def setCaptureVariables(value):
    """Make failures keep frame variables (True) or not (False, the
    default) from now on, in this process; returns the previous value."""
    global _capture_variables
    previous, _capture_variables = _capture_variables, bool(value)
    return previous


def captureVariables():
    return _capture_variables


class Failure(twisted.python.failure.Failure):
    """A Twisted failure that can be stored in the database.

    ``clean()`` (called by the job before storing) drops live frames and
    objects, keeping the exception type, value and a text traceback, so
    that any process can read it.  Frame variables are kept (as reprs)
    only when asked for: ``captureVars=True``, or ``setCaptureVariables``.
    """

    def __init__(self, exc_value=None, exc_type=None, exc_tb=None,
                 captureVars=None):
        if captureVars is None:
            captureVars = _capture_variables
        super().__init__(exc_value, exc_type, exc_tb, captureVars)

    def clean(self):
        """Make the failure storable; returns self."""
        if self.__dict__.get('_zcasync_clean'):
            return self
        frames = [
            (name, filename, lineno, _reprVars(localz), _reprVars(globalz))
            for name, filename, lineno, localz, globalz in self.frames]
        _ = self.parents
        if not _picklable(self.value) or not _picklable(self.type):
            original = '%s: %s' % (reflect.qual(self.type),
                                   reflect.safe_str(self.value))
            self.value = UnpicklableError(original)
            self.type = UnpicklableError
            # check()/trap() match the stand-in as well as the original
            # class (self.parents was computed from the original above)
            self._parents = [reflect.qual(UnpicklableError)] + list(
                self._parents)
        value = self.value
        if getattr(value, '__traceback__', None) is not None:
            value.__traceback__ = None
        for attr in ('__context__', '__cause__'):
            if getattr(value, attr, None) is not None:
                try:
                    setattr(value, attr, None)
                except Exception:
                    pass
        self.__dict__.pop('_frames', None)
        self.tb = None
        self._frames = frames
        self.pickled = 1
        self._zcasync_clean = True
        return self

    cleanFailure = clean

    def __getstate__(self):
        self.clean()
        state = dict(self.__dict__)
        state['frames'] = state.pop('_frames')
        state['parents'] = state.pop('_parents', None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state['_frames'] = state.pop('frames', [])
        state['_parents'] = state.pop('parents', None)
        state.pop('stack', None)
        self.__dict__.update(state)

    def __reduce__(self):
        return (_newFailure, (), self.__getstate__())

    def __repr__(self):
        return '<zcasync.Failure %s: %s>' % (
            reflect.qual(self.type), self.getErrorMessage())

    def getVerboseTraceback(self):
        return self.getTraceback(detail='verbose')

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


def _newFailure():
    return Failure.__new__(Failure)


#: the public name of ``_newFailure``, which stored failures name (see
#: zcasync.stable)
newFailure = _newFailure


def makeFailure(exc=None, captureVars=None):
    """A clean Failure for the exception being handled, or for `exc`;
    frame variables are kept only if `captureVars` (default: the process
    setting, see ``setCaptureVariables``)."""
    if exc is None:
        return Failure(captureVars=captureVars).clean()
    if isinstance(exc, twisted.python.failure.Failure):
        if isinstance(exc, Failure):
            return exc.clean()
        f = Failure(exc.value, exc.type, exc.getTracebackObject(),
                    captureVars=captureVars)
        return f.clean()
    return Failure(exc, type(exc), exc.__traceback__,
                   captureVars=captureVars).clean()


def isFailure(value):
    return isinstance(value, twisted.python.failure.Failure)


def exceptionClassName(failure):
    return reflect.qual(failure.type)


def currentThreadId():
    import threading
    return threading.get_ident()


def safeLog(logger, level, msg, *args, **kw):
    """Log, formatting the message at once (records that mention persistent
    objects must not be formatted later, after their connection closed)."""
    if logger.isEnabledFor(level):
        try:
            text = msg % args if args else msg
        except Exception:
            text = '%s %s' % (msg, shortRepr(args))
        logger.log(level, '%s', text, **kw)


def formatException():
    return ''.join(__import__('traceback').format_exception(*sys.exc_info()))


class StoredMapping:
    """The read half of the mappings zcasync stores (queues, quotas,
    dispatcher registrations, agents, schedules): a BTree kept in the
    attribute named by ``_mapped``.  Keys come sorted; ``keys``,
    ``values`` and ``items`` return lists (as zc.async's did)."""

    _mapped = '_data'

    def _mapping(self):
        return getattr(self, self._mapped)

    def __getitem__(self, key):
        return self._mapping()[key]

    def get(self, key, default=None):
        return self._mapping().get(key, default)

    def __contains__(self, key):
        return key in self._mapping()

    def __iter__(self):
        return iter(self._mapping().keys())

    def keys(self):
        return list(self._mapping().keys())

    def values(self):
        return list(self._mapping().values())

    def items(self):
        return list(self._mapping().items())

    def __len__(self):
        return len(self._mapping())
