"""Job lists for the API (``GET /api/jobs``): by status, with filters,
paged by cursor, never loading all jobs.

- ``pending``: each queue's jobs in claim order (queues by name); the
  cursor is the queue name and the job's key in the queue.
- ``running``, ``assigned``, ``active``, ``callbacks``: the jobs the
  agents hold (at most the sum of the agents' sizes); the cursor is an
  offset.
- ``completed``, ``succeeded``, ``failed``, ``cancelled``: the agents'
  completed collections (and the queues' jobs cancelled before they
  started) merged newest first; the cursor is the completion time and
  the oid of the last job shown.

Filters (``queue``, ``callable`` substring, ``since``/``until`` on the
begin time, start time or completion time) are applied while walking; a
walk stops after ``api.SCAN_LIMIT`` jobs or ``api.SCAN_SECONDS`` and then
answers ``complete: false`` with a cursor to continue.
"""
import heapq
import time

from zcasync import control
from zcasync import interfaces
from zcasync import utils
from zcasync.web import api
from zcasync.web.api import ApiError

_HELD_STATES = {'running': api.HELD, 'assigned': ('assigned',),
                'active': ('active',), 'callbacks': ('callbacks',)}


def _one(args, name):
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, 'give %s once, not %d times' % (
            name, len(values)))
    return values[0]


class JobQuery:
    """The parameters of ``GET /api/jobs``, checked."""

    def __init__(self, state='completed', queue=None, callable=None,
                 since=None, until=None, limit=api.DEFAULT_LIMIT,
                 cursor=None, internal=False):
        if state not in api.LISTS:
            raise ApiError(400, 'state=%r is not one of %s' % (
                state, ', '.join(api.LISTS)))
        if not isinstance(limit, int) or not 1 <= limit <= api.MAX_LIMIT:
            raise ApiError(400, 'limit must be an integer from 1 to %d, not '
                                '%r' % (api.MAX_LIMIT, limit))
        if since is not None and until is not None and since > until:
            raise ApiError(400, 'since (%s) is after until (%s)' % (
                api.iso(since), api.iso(until)))
        self.state = state
        self.queue = queue
        self.callable = callable or None
        self.since = since
        self.until = until
        self.limit = limit
        self.cursor = cursor
        #: list recovery's own jobs too (``api.isRecovery``)
        self.internal = internal

    @classmethod
    def fromArgs(cls, args):
        """From query arguments ({name: [value, ...]}, text values)."""
        known = {'state', 'queue', 'callable', 'since', 'until', 'limit',
                 'cursor', 'internal'}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ApiError(400, 'unknown parameter(s) %s; use %s' % (
                ', '.join(unknown), ', '.join(sorted(known))))
        limit = _one(args, 'limit')
        if limit is not None:
            try:
                limit = int(limit)
            except ValueError:
                raise ApiError(400, 'limit=%r is not an integer' % (
                    limit,)) from None
        since, until = _one(args, 'since'), _one(args, 'until')
        cursor = _one(args, 'cursor')
        internal = _one(args, 'internal')
        if internal not in (None, '', '0', '1', 'true', 'false'):
            raise ApiError(400, 'internal=%r: give 1 or 0' % (internal,))
        return cls(
            internal=internal in ('1', 'true'),
            state=_one(args, 'state') or 'completed',
            queue=_one(args, 'queue') if 'queue' in args else None,
            callable=_one(args, 'callable'),
            since=api.parseTime(since, 'since') if since else None,
            until=api.parseTime(until, 'until') if until else None,
            limit=api.DEFAULT_LIMIT if limit is None else limit,
            cursor=api.decodeCursor(cursor) if cursor else None)

    # -- walking -----------------------------------------------------------

    def run(self, root, now=None):
        now = now or utils.now()
        queues = [(n, q) for n, q in api.queuesOf(root)
                  if self.queue is None or n == self.queue]
        if self.queue is not None and not queues:
            known = ', '.join(repr(n) for n, q in api.queuesOf(root))
            raise ApiError(404, 'no queue %r (queues: %s)' % (
                self.queue, known or 'none yet'))
        if self.state == 'pending':
            source, when = self._pending(queues), 'begin_after'
        elif self.state in _HELD_STATES:
            source, when = self._held(queues), 'active_start'
        else:
            source, when = self._completed(queues), None
        return self._collect(source, when, now)

    def _matches(self, job, when):
        if not self.internal and api.isRecovery(job):
            return False
        if self.state in _HELD_STATES and \
                api.statusName(job.status) not in _HELD_STATES[self.state]:
            return False
        if self.state in ('succeeded', 'failed'):
            failed = utils.isFailure(job.result)
            if failed != (self.state == 'failed'):
                return False
        if self.state == 'cancelled' and not (
                utils.isFailure(job.result) and
                job.result.check(interfaces.CancelledError)):
            return False
        if when is not None and (self.since or self.until):
            stamp = getattr(job, when)
            if stamp is None or (self.since and stamp < self.since) or \
                    (self.until and stamp > self.until):
                return False
        if self.callable is not None and \
                self.callable not in api.callableName(job):
            return False
        return True

    def _collect(self, source, when, now):
        items, following, scanned, complete = [], None, 0, True
        filtered = bool(self.callable or self.since or self.until) or \
            self.state in ('succeeded', 'failed', 'cancelled', 'assigned',
                           'active', 'callbacks')
        deadline = time.perf_counter() + api.SCAN_SECONDS
        last = None
        for cursor, job in source:
            scanned += 1
            try:
                matches = self._matches(job, when)
            except Exception:
                matches = not filtered  # unreadable: shown unfiltered only
            if matches:
                if len(items) == self.limit:
                    following = last  # there is more after this page
                    break
                items.append(api.jobSummary(job, now))
                last = cursor
            if filtered and (scanned >= api.SCAN_LIMIT or
                             time.perf_counter() > deadline):
                following, complete = cursor, False
                break
        return {
            'state': self.state,
            'items': items,
            'next': api.encodeCursor(following) if following is not None
            else None,
            'complete': complete,
            'scanned': scanned,
            'limit': self.limit,
        }

    def _cursorParts(self, count):
        cursor = self.cursor
        if cursor is None:
            return None
        if not isinstance(cursor, list) or len(cursor) != count:
            raise ApiError(400, 'this cursor belongs to another list; start '
                                'again without it')
        return cursor

    def _pending(self, queues):
        cursor = self._cursorParts(2)
        start_name = start_key = None
        if cursor is not None:
            start_name, start_key = cursor
            try:
                start_key = bytes.fromhex(start_key)
            except (TypeError, ValueError):
                raise ApiError(400, 'cursor is not valid; start again '
                                    'without it') from None
        for name, queue in queues:
            if start_name is not None and name < start_name:
                continue
            items = queue.pendingItems(
                start_key if name == start_name else None)
            for key, job in items:
                yield [name, key.hex()], job

    def _held(self, queues):
        cursor = self._cursorParts(1)
        offset = cursor[0] if cursor is not None else 0
        if not isinstance(offset, int) or offset < 0:
            raise ApiError(400, 'cursor is not valid; start again without it')
        index = 0
        for name, queue in queues:
            for uuid, agents in queue.dispatchers.items():
                for agent in agents.values():
                    for job in agent:
                        index += 1
                        if index > offset:
                            yield [index], job

    def _completed(self, queues):
        cursor = self._cursorParts(2)
        stop, skip = self.until, None
        if cursor is not None:
            micros, oid = cursor
            if not isinstance(micros, int) or not isinstance(oid, str):
                raise ApiError(400, 'cursor is not valid; start again '
                                    'without it')
            skip = (-micros, bytes.fromhex(oid))
            stamp = utils.fromMicros(micros)
            stop = stamp if stop is None else min(stop, stamp)
        collections = [agent.completed for name, queue in queues
                       for agents in queue.dispatchers.values()
                       for agent in agents.values()]
        # and the jobs cancelled before they started (zcasync.control)
        collections.extend(filter(None, (
            control.cancelledJobs(queue) for name, queue in queues)))

        def keyed(collection):
            for job in collection.iter(self.since, stop):
                end = job.active_end
                yield (-(utils.toMicros(end) if end else 0), job._p_oid), job
        for key, job in heapq.merge(*map(keyed, collections),
                                    key=lambda item: item[0]):
            if skip is not None and key <= skip:
                continue
            yield [-key[0], key[1].hex()], job
