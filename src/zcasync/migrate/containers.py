"""State converters for zc.async's containers -- the queues mapping, a
queue with its quotas and dispatcher registry, each dispatcher's
agents -- converted in place (same oid, zcasync class and state).

The contents that may be large are moved afterwards, in bounded batches
(``zcasync.migrate.pipeline``): a converted queue keeps the list of
zc.async's pending jobs in claim order (from its old ``_putback_queue``,
``_queue`` and ``_held``) in ``_zcasync_legacy``, and an agent the jobs
of its old completed collection in ``_zcasync_legacy_completed``, each
with the count moved so far, until ``movePending`` / ``moveCompleted``
moved them all.  Jobs an agent holds (at most its size) move at once.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Iterator

import BTrees.Length
import persistent.list
import persistent.mapping

from zcasync.agent import CompletedJobs
from zcasync.migrate import legacy
from zcasync.migrate.converters import (
    Problems, _items, convertValue, provideFilterAgent, state)
from zcasync.queue import JobTree
from zcasync.schedules import Schedules

#: zc.async's ping intervals (class attributes of its DispatcherAgents).
PING_INTERVAL = datetime.timedelta(seconds=30)
PING_DEATH_INTERVAL = datetime.timedelta(seconds=60)

LEGACY_PENDING = '_zcasync_legacy'
LEGACY_COMPLETED = '_zcasync_legacy_completed'


def convertQueues(queues: Any) -> bool:
    d = state(queues)
    if '_len' not in d:
        return False
    d.pop('_len')
    queues._p_changed = True
    return True


def queuesOf(queues: Any) -> list[tuple[str, Any]]:
    """(name, queue) of a Queues, converted or not."""
    return list(state(queues)['_data'].items())


def convertQuotas(quotas: Any) -> bool:
    d = state(quotas)
    changed = False
    if '__parent__' in d:
        d['parent'] = d.pop('__parent__')
        changed = True
    if '_len' in d:
        d.pop('_len')
        changed = True
    for quota in d['_data'].values():
        qd = state(quota)
        if '_data' in qd:
            qd['_jobs'] = tuple(qd.pop('_data'))
            qd['_size'] = qd.pop('size', 1)
            quota._p_changed = True
            changed = True
    if changed:
        quotas._p_changed = True
    return changed


def convertDispatchers(dispatchers: Any, queue: Any, problems: Problems
                       ) -> bool:
    d = state(dispatchers)
    changed = False
    if '__parent__' in d or '_len' in d:
        d['parent'] = d.pop('__parent__', queue)
        d.pop('_len', None)
        dispatchers._p_changed = True
        changed = True
    for registration in d['_data'].values():
        changed = convertRegistration(registration, queue, problems) or \
            changed
    return changed


def convertRegistration(registration: Any, queue: Any, problems: Problems
                        ) -> bool:
    d = state(registration)
    if '_data' not in d:
        return False
    d['_agents'] = d.pop('_data')
    d.pop('_len', None)
    d['parent'] = queue
    d.setdefault('ping_interval', PING_INTERVAL)
    d.setdefault('ping_death_interval', PING_DEATH_INTERVAL)
    registration._p_changed = True
    for agent in d['_agents'].values():
        convertAgent(agent, problems)
    return True


def convertAgent(agent: Any, problems: Problems) -> bool:
    """An agent's settings and held jobs now; its completed collection
    is kept aside for ``moveCompleted``."""
    d = state(agent)
    if '_data' not in d and 'size' not in d:
        return False
    held = _items(d.pop('_data', None))
    for old, new in (('chooser', '_chooser'), ('filter', '_filter'),
                     ('size', '_size')):
        if old in d:
            d[new] = d.pop(old)
    d.pop('__provides__', None)
    if 'failure' in d:
        problems.note(agent, 'Agent.failure %r' % (
            convertValue(d.pop('failure')),), 'zcasync agents keep no '
            'failure of a claim; it is dropped')
    old_completed = d.get('completed')
    d['_jobs'] = JobTree()
    d['completed'] = CompletedJobs()
    if isinstance(old_completed, legacy.Periodic):
        # read once; each batch then writes only the count of those moved
        kept = persistent.mapping.PersistentMapping()
        kept['jobs'] = persistent.list.PersistentList(old_completed.jobs())
        kept['moved'] = 0
        d[LEGACY_COMPLETED] = kept
    agent._p_changed = True
    provideFilterAgent(agent)
    for job in held:
        agent._add(job)
    return True


def convertQueue(queue: Any) -> bool:
    """A queue's zcasync trees; its pending jobs are kept aside (in claim
    order) for ``movePending``."""
    d = state(queue)
    if '_queue' not in d and '_held' not in d:
        return False
    old = {name: d.pop(name, None)
           for name in ('_putback_queue', '_queue', '_held')}
    kept = persistent.mapping.PersistentMapping()
    # the jobs in claim order, read once; each batch then writes only
    # the count of those moved
    kept['jobs'] = persistent.list.PersistentList(legacyPending(old))
    kept['moved'] = 0
    d.pop('_length', None)
    d['_jobs'] = JobTree()
    d['_reorders'] = BTrees.Length.Length(0)
    d['_scheduled'] = JobTree()
    d['_unique'] = JobTree()
    d['_length'] = BTrees.Length.Length(0)
    d['puts'] = BTrees.Length.Length(0)
    schedules = Schedules()
    schedules.parent = queue
    d['_schedules'] = schedules
    d[LEGACY_PENDING] = kept
    queue._p_changed = True
    return True


def legacyPending(kept: dict) -> Iterator[tuple[bool, Any]]:
    """(front, job) of the jobs a zc.async queue held, in its claim
    order: put back first, then queued, then held for later."""
    for job in _items(kept.get('_putback_queue')):
        yield True, job
    for job in _items(kept.get('_queue')):
        yield False, job
    held = kept.get('_held')
    if held is not None:
        for key, job in held.items():
            yield False, job


def _moveBatch(obj: Any, key: str, batch: int,
               place: Callable[[Any], None]) -> tuple[int, bool]:
    """Place up to `batch` more of the jobs kept under `key` in `obj`'s
    state (a list with a ``moved`` mark, so an interrupted move resumes).
    Returns (moved, done); the kept list is dropped once done."""
    d = state(obj)
    kept = d.get(key)
    if kept is None:
        return 0, True
    start = kept['moved']
    jobs = kept['jobs']
    chunk = jobs[start:start + batch]
    for item in chunk:
        place(item)
    if start + len(chunk) < len(jobs):
        kept['moved'] = start + len(chunk)
        return len(chunk), False
    del d[key]
    obj._p_changed = True
    return len(chunk), True


def movePending(queue: Any, batch: int) -> tuple[int, bool]:
    """Put up to `batch` more of the queue's zc.async pending jobs in its
    zcasync trees (in claim order, with their quotas).  Returns (moved,
    done); the old structures are dropped once done."""
    def place(item):
        front, job = item
        job.parent = None
        queue._insert(job, front=front)
    return _moveBatch(queue, LEGACY_PENDING, batch, place)


def moveCompleted(agent: Any, batch: int) -> tuple[int, bool]:
    """Move up to `batch` more of the agent's zc.async completed jobs to
    its zcasync collection (kept whatever their age).  Returns (moved,
    done)."""
    return _moveBatch(agent, LEGACY_COMPLETED, batch,
                      lambda job: agent.completed.add(job, keep=None))


def agentsOf(queue: Any) -> list[Any]:
    found = []
    for registration in state(state(queue)['dispatchers'])['_data'].values():
        d = state(registration)
        agents = d['_agents'] if '_agents' in d else d['_data']
        found.extend(agents.values())
    return found
