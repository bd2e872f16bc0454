"""The dispatcher's short in-memory history: polls and job runs.

Operators query it through the dispatcher (``getPollInfo``,
``getJobInfo``, ``getStatistics``).  It is bounded: the latest few hundred
polls and job records; the log is the place for long-term analysis.

Poll keys follow the seed: an integer from the poll's time, *newer polls
having smaller keys*, with 16 key units per microsecond (the low 4 bits
order polls made within one microsecond), so that
``getPollInfo(before=poll.key - 16)`` still finds ``poll``.
"""
import collections
import datetime
import threading

from zcasync import utils

#: How many polls and job records the in-memory history keeps (the
#: defaults of the dispatcher's ``polls_size`` and ``jobs_size``).
POLL_HISTORY = 400
JOB_HISTORY = 200
RESULT_LIMIT = 10000
#: The keys of ``getJobInfo`` (the seed's); ``dispatcher.jobs`` records
#: also hold 'agent', 'queue' and 'reassigned'.
JOB_INFO_KEYS = ('call', 'completed', 'failed', 'poll id', 'quota names',
                 'result', 'started', 'thread')


_MAX_MICROS = utils.toMicros(
    datetime.datetime(9999, 12, 31, tzinfo=utils.UTC))


def pollKey(micros, sequence=0):
    """Newer polls have smaller keys; 16 key units per microsecond, the
    low 4 bits ordering (newest smallest) up to 16 polls made within one
    microsecond."""
    return ((_MAX_MICROS - micros) << 4) | (15 - sequence)


class PollInfo(dict):
    """One poll: {queue name: None or {agent name: {...}}}."""

    key = None
    utc_timestamp = None


Poll = PollInfo


class PollHistory:
    """The latest polls, newest first; ``size`` (settable) bounds it."""

    def __init__(self, size=None):
        self.size = size or POLL_HISTORY
        self._polls = collections.deque()
        self._lock = threading.Lock()

    def add(self, poll):
        with self._lock:
            self._polls.appendleft(poll)
            while len(self._polls) > max(self.size, 1):
                self._polls.pop()

    def first(self):
        with self._lock:
            return self._polls[0] if self._polls else None

    def __iter__(self):
        with self._lock:
            return iter(list(self._polls))

    def __len__(self):
        return len(self._polls)

    def find(self, at=None, before=None):
        """The poll at a key or time, or the latest strictly before one;
        the newest without arguments; None when not in the history."""
        polls = list(self)
        if at is not None:
            if isinstance(at, datetime.datetime):
                micros = utils.toMicros(utils.checkAware(at, 'at'))
                for poll in polls:
                    if utils.toMicros(poll.utc_timestamp) == micros:
                        return poll
                return None
            for poll in polls:
                if poll.key == at:
                    return poll
            return None
        if before is not None:
            if isinstance(before, datetime.datetime):
                before = pollKey(
                    utils.toMicros(utils.checkAware(before, 'before')), 0)
            for poll in polls:
                if poll.key > before:
                    return poll
            return None
        return polls[0] if polls else None


class RollingMapping:
    """A bounded mapping, oldest first: adding beyond ``size`` (settable)
    drops the oldest entries.  Thread-safe."""

    def __init__(self, size):
        self.size = size
        self._data = collections.OrderedDict()
        self._lock = threading.Lock()

    def __setitem__(self, key, value):
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > max(self.size, 1):
                self._data.popitem(last=False)

    def __getitem__(self, key):
        with self._lock:
            return self._data[key]

    def get(self, key, default=None):
        with self._lock:
            return self._data.get(key, default)

    def pop(self, key, *default):
        with self._lock:
            return self._data.pop(key, *default)

    def __contains__(self, key):
        with self._lock:
            return key in self._data

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        with self._lock:
            return list(self._data)

    def values(self):
        with self._lock:
            return list(self._data.values())

    def items(self):
        with self._lock:
            return list(self._data.items())


class JobHistory:
    """Records of the latest job runs: ``jobs``, (oid, database name) ->
    record (``getJobInfo``'s keys, plus 'agent', 'queue', 'reassigned')."""

    def __init__(self, polls, size=None):
        self.polls = polls
        self.jobs = RollingMapping(size or JOB_HISTORY)

    def start(self, job_id, record, queue_name, agent_name):
        record.update({'queue': queue_name, 'agent': agent_name,
                       'reassigned': False})
        self.jobs[job_id] = record

    def getJobInfo(self, oid, database_name):
        record = self.jobs.get((oid, database_name))
        if record is None:
            raise ValueError('no record of job %r in database %r in this '
                             'dispatcher\'s history' % (oid, database_name))
        return {key: record[key] for key in JOB_INFO_KEYS}

    def _time(self, value, default):
        if value is None:
            return default
        if isinstance(value, datetime.datetime):
            return utils.checkAware(value, 'time')
        poll = self.polls.find(at=value)
        if poll is None:
            raise ValueError('no poll with key %r in the history' % value)
        return poll.utc_timestamp

    def getStatistics(self, active_ids, at=None, before=None, since=None,
                      queue=None, agent=None):
        now = utils.now()
        if before is not None:
            end = self._time(before, now) - datetime.timedelta(microseconds=1)
        else:
            end = self._time(at, now)
        polls = list(self.polls)
        first = polls[-1].utc_timestamp if polls else now
        start = self._time(since, first)
        records = [(job_id, dict(r)) for job_id, r in self.jobs.items()]
        stats = {'started': 0, 'successful': 0, 'failed': 0, 'unknown': 0}
        durations = {'successful': [], 'failed': [], 'active': []}
        active_ids = set(active_ids)
        for job_id, r in records:
            if queue is not None and r['queue'] != queue:
                continue
            if agent is not None and r['agent'] != agent:
                continue
            if r['started'] > end:
                continue
            completed = r['completed']
            if completed is not None and completed < start:
                continue
            stats['started'] += 1
            if completed is not None and completed <= end:
                kind = 'failed' if r['failed'] else 'successful'
                stats[kind] += 1
                durations[kind].append((completed - r['started'], job_id))
            elif job_id in active_ids or completed is not None:
                # running now, or completed after `end`: active at `end`
                durations['active'].append((end - r['started'], job_id))
            elif completed is None:
                stats['unknown'] += 1
        for kind, values in durations.items():
            values.sort(key=lambda v: v[0])
            stats['shortest %s' % kind] = values[0][1] if values else None
            stats['longest %s' % kind] = values[-1][1] if values else None
        stats['statistics start'] = start
        stats['statistics end'] = end
        return stats
