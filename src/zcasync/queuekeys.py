"""The keys of a queue's job trees, and the checks of what a put may ask.

Keys are bytes, so that they sort in claim order and pickle as one object
each (tuple keys cost several): a lane byte, big-endian numbers, then the
job's oid.

=================  ======================================================
lane (first byte)  key, in which tree
=================  ======================================================
0, 1 (legacy)      ``(lane, time, oid)`` in ``_jobs``: keys stored before
                   priorities existed (0: put back, 1: the rest, including
                   jobs scheduled for later); they sort first, read as
                   priority 0, and scheduled ones move to ``_scheduled``
                   when a claim sees them
2 FRONT            ``(2, inverted priority, time, oid)`` in ``_jobs``: put
                   back (recovered or retried at once)
3 DUE              ``(3, inverted priority, time, oid)`` in ``_jobs``:
                   time is the put time, or begin_after for a job that
                   waited in ``_scheduled``
4 SCHEDULED        ``(4, begin_after, inverted priority, oid)`` in
                   ``_scheduled``: jobs that are not due yet
=================  ======================================================

The inverted priority (``MAX_PRIORITY - priority``, unsigned) makes higher
priorities sort first.
"""
import datetime
import struct

LEGACY_FRONT, LEGACY_NORMAL = 0, 1
FRONT, DUE, SCHEDULED = 2, 3, 4
MIN_PRIORITY, MAX_PRIORITY = -2 ** 31, 2 ** 31 - 1
#: due scheduled jobs moved to the due tree by one claim, at most
PROMOTE_BATCH = 100

_DUE = struct.Struct('>BIQ')
_SCHEDULED = struct.Struct('>BQI')
_LANE_TIME = struct.Struct('>BQ')


def _inverted(priority):
    return MAX_PRIORITY - priority


def dueKey(lane, priority, micros, token):
    return _DUE.pack(lane, _inverted(priority), micros) + token


def scheduledKey(micros, priority, token):
    return _SCHEDULED.pack(SCHEDULED, micros, _inverted(priority)) + token


def keyTime(key):
    """The time (microseconds) of a scheduled or legacy key."""
    return _LANE_TIME.unpack_from(key)[1]


def keyPriority(key):
    """The priority of a FRONT, DUE or SCHEDULED key (0 for legacy)."""
    if key[0] in (FRONT, DUE):
        return MAX_PRIORITY - _DUE.unpack_from(key)[1]
    if key[0] == SCHEDULED:
        return MAX_PRIORITY - _SCHEDULED.unpack_from(key)[2]
    return 0


def timeBound(micros):
    """The smallest scheduled key of time `micros`."""
    return _LANE_TIME.pack(SCHEDULED, micros)


def legacyBound(micros):
    """(min, max excluded) of the legacy keys scheduled at `micros` or
    later."""
    return _LANE_TIME.pack(LEGACY_NORMAL, micros), bytes([FRONT])


def promotedKey(key):
    """The due key of a job whose scheduled key is `key`."""
    lane, micros, inverted = _SCHEDULED.unpack_from(key)
    return _DUE.pack(DUE, inverted, micros) + key[_SCHEDULED.size:]


def legacyToScheduled(key, priority):
    """The scheduled key of a job stored with a legacy key."""
    return scheduledKey(keyTime(key), priority, key[_LANE_TIME.size:])


# --- checks ---------------------------------------------------------------

def checkPriority(priority):
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(
            'priority must be an int (higher runs first, default 0), not '
            '%r' % (priority,))
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(
            'priority %d is out of range: use an int from %d to %d'
            % (priority, MIN_PRIORITY, MAX_PRIORITY))
    return priority


def checkUnique(unique_key, unique_for):
    if unique_key is not None and not isinstance(unique_key, str):
        raise TypeError(
            'unique_key must be a string (e.g. "report-42"), not %r'
            % (unique_key,))
    if unique_key == '':
        raise ValueError('unique_key must not be empty')
    if unique_for is not None:
        if unique_key is None:
            raise ValueError('unique_for needs a unique_key')
        if not isinstance(unique_for, datetime.timedelta):
            raise TypeError('unique_for must be a datetime.timedelta, not '
                            '%r' % (unique_for,))
        if unique_for <= datetime.timedelta(0):
            raise ValueError('unique_for must be positive, not %r'
                             % (unique_for,))
