"""Periodic jobs: schedules stored in the database, one job per tick.

``queue.schedule(name, callable, *args, cron='*/5 * * * *' or
every=timedelta(...), timezone='UTC', catch_up=False, **kwargs)`` stores a
``Schedule`` in ``queue.schedules`` (name -> Schedule).  Dispatchers fire
the schedules of their queues at each poll (``Schedules.fire``) and poll
again when the soonest next tick is due.

Exactly one job per tick, across all dispatchers of all processes: firing
a tick writes the schedule's ``last_tick`` and puts the tick's job in the
same commit.  Two dispatchers firing the same tick both write the
schedule, which has no conflict resolution: exactly one commits, and the
other aborts (its job with it) and then sees the tick taken.  A process
that dies in the middle commits nothing, so the tick stays for the others.

Ticks:

- ``cron``: a five-field cron expression in the schedule's ``timezone``
  (an IANA name), evaluated by ``cronsim`` (Debian cron's rules, which
  also decide daylight-saving changes: a time skipped by the change runs
  right after it, a time repeated by it runs once; ``*/5``-style
  expressions follow real time).
- ``every``: a timedelta of real time, ticks aligned on the epoch
  (``every=timedelta(minutes=5)`` ticks at :00, :05, ...).

A tick that no dispatcher fired within ``grace`` of its time (default
30 s: enough for a busy or restarting process, not for an outage) is
missed: skipped, or with ``catch_up=True`` the latest missed tick runs
once, late.  Ticks while a schedule is paused are skipped.  Each job's
annotations hold ``zcasync.schedule`` (the name) and ``zcasync.tick``.
"""
import datetime
import typing
import logging
import zoneinfo

import BTrees.Length
import BTrees.OOBTree
import cronsim
import persistent

from zcasync import utils
from zcasync.callables import splitCallable, describeCallable

DEFAULT_GRACE = datetime.timedelta(seconds=30)
#: ticks one schedule fires in one poll, at most (the rest in the next)
FIRE_LIMIT = 100
_FAR = datetime.datetime.max.replace(tzinfo=utils.UTC)


def checkTimezone(name):
    if not isinstance(name, str):
        raise TypeError('timezone must be an IANA time zone name such as '
                        '"Europe/Berlin" or "UTC", not %r' % (name,))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(
            'unknown time zone %r (%s); use an IANA name such as '
            '"Europe/Berlin" or "UTC"' % (name, e)) from None


def checkCron(expression, zone):
    if not isinstance(expression, str):
        raise TypeError('cron must be a string such as "*/5 * * * *", not '
                        '%r' % (expression,))
    try:
        next(cronsim.CronSim(expression, datetime.datetime.now(zone)))
    except cronsim.CronSimError as e:
        raise ValueError(
            'invalid cron expression %r: %s; write five fields: minute '
            'hour day-of-month month day-of-week, e.g. "*/5 * * * *"'
            % (expression, e)) from None
    except StopIteration:
        raise ValueError('cron expression %r never matches a time'
                         % (expression,)) from None
    return expression


def checkEvery(every):
    if not isinstance(every, datetime.timedelta):
        raise TypeError('every must be a datetime.timedelta, not %r'
                        % (every,))
    if every < datetime.timedelta(milliseconds=1):
        raise ValueError('every must be at least a millisecond, not %r'
                         % (every,))
    return every


class Schedule(persistent.Persistent):
    """One periodic job; made by ``Queue.schedule`` (see the module
    docstring)."""

    parent: typing.Any = None
    name = None
    cron = None
    every = None
    timezone = 'UTC'
    catch_up = False
    grace = DEFAULT_GRACE
    paused = False
    #: the latest tick fired (or the time the schedule was set)
    last_tick = None
    last_job = None
    fired = 0
    _callable_root = None
    _callable_name = None
    args = ()
    kwargs = None

    def configure(self, callable, args, kwargs, cron, every, timezone,
                  catch_up, grace):
        """Check everything, then change the schedule (nothing is changed
        when a value is refused)."""
        zone = checkTimezone(timezone)
        if (cron is None) == (every is None):
            raise ValueError('give a schedule either cron (e.g. '
                             '"*/5 * * * *") or every (a timedelta)')
        if cron is not None:
            checkCron(cron, zone)
        else:
            checkEvery(every)
        if grace is None:
            grace = DEFAULT_GRACE
        if not isinstance(grace, datetime.timedelta) or \
                grace < datetime.timedelta(0):
            raise ValueError('grace must be a timedelta >= 0, not %r'
                             % (grace,))
        if not isinstance(catch_up, bool):
            raise TypeError('catch_up must be True or False, not %r'
                            % (catch_up,))
        root, name = splitCallable(callable)
        self._callable_root, self._callable_name = root, name
        self.args = tuple(args)
        self.kwargs = dict(kwargs) if kwargs else None
        self.cron, self.every, self.timezone = cron, every, timezone
        self.catch_up, self.grace = catch_up, grace
        # ticks before the change are not this schedule's
        self.last_tick = utils.now()
        self._v_cache = None

    @property
    def callable(self):
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    def _changed(self):
        if self.parent is not None:
            self.parent.changes.change(1)

    def pause(self):
        self.paused = True
        self._changed()

    def resume(self):
        """Run again from the next tick (ticks while paused are
        skipped)."""
        self.paused = False
        self.last_tick = max(self.last_tick, utils.now())
        self._changed()

    # -- ticks -----------------------------------------------------------

    def _zone(self):
        return zoneinfo.ZoneInfo(self.timezone)

    def _firstAfter(self, moment):
        """The first tick strictly after `moment` (aware UTC)."""
        if self.every is not None:
            period = utils.toMicros(utils.EPOCH + self.every)
            micros = utils.toMicros(moment)
            return utils.fromMicros((micros // period + 1) * period)
        local = moment.astimezone(self._zone())
        try:
            for tick in cronsim.CronSim(self.cron, local):
                tick = tick.astimezone(utils.UTC)
                if tick > moment:
                    return tick
        except StopIteration:
            pass
        return _FAR

    def _latestUpTo(self, moment):
        """The last tick at or before `moment`, or None."""
        if self.every is not None:
            period = utils.toMicros(utils.EPOCH + self.every)
            return utils.fromMicros(utils.toMicros(moment) // period *
                                    period)
        local = moment.astimezone(self._zone())
        try:
            for tick in cronsim.CronSim(self.cron, local, reverse=True):
                tick = tick.astimezone(utils.UTC)
                if tick <= moment:
                    return tick
        except StopIteration:
            pass
        return None

    def _nextAfter(self, start):
        """``_firstAfter`` remembered in memory: (s, t) means t is the
        first tick after any moment in [s, t)."""
        cache = getattr(self, '_v_cache', None) or {}
        for s, t in cache.items():
            if s <= start < t:
                return t
        tick = self._firstAfter(start)
        if len(cache) > 4:
            cache = {}
        cache[start] = tick
        self._v_cache = cache
        return tick

    def due(self, now=None):
        """(ticks to fire now, the next tick after them or None)."""
        if self.paused:
            return [], None
        now = now or utils.now()
        first = self._nextAfter(self.last_tick)
        if first > now:
            return [], first
        ticks = []
        horizon = now - self.grace
        if first <= horizon and self.catch_up:
            missed = self._latestUpTo(horizon)
            if missed is not None and missed > self.last_tick:
                ticks.append(missed)
        tick = self._nextAfter(max(self.last_tick, horizon))
        while tick <= now and len(ticks) < FIRE_LIMIT:
            ticks.append(tick)
            tick = self._firstAfter(tick)
        return ticks, tick

    def nextRuns(self, count=3):
        """The next `count` tick times (aware UTC), from now on."""
        if self.paused:
            return []
        runs = []
        tick = max(self.last_tick, utils.now())
        while len(runs) < count:
            tick = self._firstAfter(tick)
            if tick == _FAR:
                break
            runs.append(tick)
        return runs

    next_runs = nextRuns

    def _fire(self, queue, ticks):
        from zcasync.job import Job  # job imports nothing from here
        # make every job before putting any: a schedule that cannot make
        # its job (its callable is gone) changes nothing
        jobs = []
        for tick in ticks:
            job = Job(self.callable, *self.args, **(self.kwargs or {}))
            job.annotations['zcasync.schedule'] = self.name
            job.annotations['zcasync.tick'] = tick
            jobs.append(job)
        for job in jobs:
            queue.put(job)
        # the claim of these ticks: two dispatchers firing them both write
        # this object, and exactly one of them commits
        self.last_tick = max(ticks)
        self.fired += len(ticks)
        self.last_job = jobs[-1]
        return jobs

    def describeCall(self):
        root = self._callable_root
        module = getattr(root, '__module__', None)
        qualname = getattr(root, '__qualname__', None)
        if self._callable_name is None and module and qualname:
            call = '%s.%s' % (module, qualname)
        else:
            call = describeCallable(root, self._callable_name)
        args = [utils.shortRepr(a, 60) for a in self.args]
        args += ['%s=%s' % (k, utils.shortRepr(v, 60))
                 for k, v in (self.kwargs or {}).items()]
        return '%s(%s)' % (call, ', '.join(args))

    def __repr__(self):
        when = 'cron %r %s' % (self.cron, self.timezone) \
            if self.cron is not None else 'every %s' % (self.every,)
        return '<zcasync.schedules.Schedule %r %s%s>' % (
            self.name, when, ' (paused)' if self.paused else '')


class Schedules(utils.StoredMapping, persistent.Persistent):
    """The schedules of one queue: name -> Schedule."""

    parent: typing.Any = None

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()
        #: changed when a schedule is added, changed, paused, resumed or
        #: removed (never by firing): dispatchers watch it
        self.changes = BTrees.Length.Length(0)

    def set(self, name, callable, args=(), kwargs=None, cron=None,
            every=None, timezone='UTC', catch_up=False, grace=None):
        """Add the schedule `name`, or change it (its next tick is then
        counted from now)."""
        if not isinstance(name, str) or not name:
            raise TypeError('a schedule name is a non-empty string, not %r'
                            % (name,))
        schedule = self._data.get(name)
        new = schedule is None
        if new:
            schedule = Schedule()
        schedule.configure(callable, args, kwargs, cron, every, timezone,
                           catch_up, grace)
        if new:
            schedule.name = name
            schedule.parent = self
            self._data[name] = schedule
        self.changes.change(1)
        return schedule

    def remove(self, name):
        schedule = self._data.pop(name)
        schedule.parent = None
        self.changes.change(1)
        return schedule

    __delitem__ = remove

    def fire(self, queue=None, now=None):
        """Put a job for each due tick of each schedule (in the caller's
        transaction, which the caller commits); returns (jobs put, the
        soonest next tick or None)."""
        queue = queue if queue is not None else self.parent
        now = now or utils.now()
        count, soonest = 0, None
        for schedule in self._data.values():
            try:
                ticks, following = schedule.due(now)
                if ticks:
                    count += len(schedule._fire(queue, ticks))
            except Exception:
                utils.safeLog(utils.log, logging.ERROR,
                              'cannot fire schedule %r; skipping it:\n%s',
                              schedule.name, utils.formatException())
                continue
            if following is not None and following != _FAR and (
                    soonest is None or following < soonest):
                soonest = following
        return count, soonest
