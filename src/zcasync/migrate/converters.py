"""State converters for jobs, callback proxies, failures and retry
policies: a zc.async object, renamed to its zcasync class but still
holding zc.async's state, gets zcasync's state at the same oid.

Every converter is idempotent: it looks for a key only zc.async's layout
has and returns False (nothing done) when there is none.  Problems that
cannot be mapped are collected in a ``Problems`` list for the report; the
object is left as it is then.
"""
from __future__ import annotations

from typing import Any

import persistent.list
import zope.interface

from zcasync import interfaces
from zcasync import retry
from zcasync import utils
from zcasync.job import Job  # noqa: F401 (what convertJob converts)
from zcasync.migrate import legacy

#: zc.async's ``Job._status_id`` -> zcasync's status.
STATUS_IDS = {0: interfaces.NEW, 1: interfaces.ACTIVE,
              2: interfaces.CALLBACKS, 3: interfaces.COMPLETED}
#: zc.async's legacy ``Job._status`` (before 1.0): the same strings; a
#: job waiting in a queue or an agent is NEW in zcasync.
_OLD_STATUS = {interfaces.PENDING: interfaces.NEW,
               interfaces.ASSIGNED: interfaces.NEW}

#: zc.async's retry policy classes (as the renaming stage leaves them)
#: -> zcasync's.
POLICIES = {
    legacy.RetryCommonFourTimes: retry.RetryCommonFourTimes,
    legacy.RetryCommonForever: retry.RetryCommonForever,
    legacy.NeverRetry: retry.NeverRetry,
}

#: Where a job's stored zc.async retry-policy counters go (zcasync's
#: policies keep their own counters under other keys).
POLICY_DATA_KEY = 'zc.async.retry_policy_data'


class Problems(list):
    """(oid, what could not be mapped, why) found by the converters."""

    def note(self, ob: Any, what: str, why: str) -> None:
        oid = getattr(ob, '_p_oid', None)
        self.append((oid, what, why))


def state(ob: Any) -> dict:
    """The loaded instance dictionary of a persistent object."""
    ob._p_activate()
    return ob.__dict__


def _items(container: Any) -> tuple:
    if container is None:
        return ()
    if isinstance(container, (legacy.BucketQueue, legacy.CompositeQueue)):
        return container.items()
    return tuple(container)


# -- failures ---------------------------------------------------------------

def _qualName(name: Any) -> Any:
    if isinstance(name, bytes):
        name = name.decode('utf-8', 'replace')
    if isinstance(name, str) and name.startswith('exceptions.'):
        return 'builtins.' + name[len('exceptions.'):]
    return name


def convertFailure(old: legacy.Failure) -> utils.Failure:
    """A zcasync Failure with the type, value, text traceback and
    parents of a stored ``zc.twist.Failure``."""
    data = dict(old.__dict__)
    frames = [tuple(frame) if isinstance(frame, (list, tuple)) else frame
              for frame in data.get('frames') or data.get('_frames') or ()]
    parents = data.get('parents') or data.get('_parents') or []
    failure = utils._newFailure()
    failure.__setstate__({
        'type': data.get('type'),
        'value': data.get('value'),
        'tb': None,
        'frames': frames,
        'parents': [_qualName(p) for p in parents],
        'count': data.get('count', 0),
        'captureVars': bool(data.get('captureVars', False)),
        'pickled': 1,
    })
    failure._zcasync_clean = True
    return failure


def convertValue(value: Any) -> Any:
    """A stored result: Failures converted, anything else as it is."""
    if isinstance(value, legacy.Failure):
        return convertFailure(value)
    return value


# -- jobs -------------------------------------------------------------------

def isLegacyJob(job: Any) -> bool:
    d = state(job)
    return '_status_id' in d or 'callbacks' in d or '_retry_policy' in d \
        or ('_status' in d and d['_status'] in _OLD_STATUS)


def _policyFactory(value: Any) -> Any:
    if isinstance(value, type) and value in POLICIES:
        return POLICIES[value]
    return value


def convertJob(job: Any, problems: Problems) -> bool:
    """Give a zcasync Job (at the same oid) zcasync's state for the
    zc.async state it holds; returns whether it changed anything."""
    if not isLegacyJob(job):
        return False
    d = state(job)
    new: dict[str, Any] = {}
    status_id = d.pop('_status_id', None)
    if status_id is not None:
        new['_status'] = STATUS_IDS[status_id]
    elif '_status' in d:
        new['_status'] = _OLD_STATUS.get(d['_status'], d['_status'])
    for old_name, name in (('_active_start', 'active_start'),
                           ('_active_end', 'active_end'),
                           ('kwargs', '_kwargs'), ('args', '_args'),
                           ('annotations', '_annotations')):
        if old_name in d:
            new[name] = d.pop(old_name)
    if 'retry_policy_factory' in d:
        new['_retry_policy_factory'] = _policyFactory(
            d.pop('retry_policy_factory'))
    callbacks = _items(d.pop('callbacks', None))
    if callbacks:
        new['_callbacks'] = persistent.list.PersistentList(callbacks)
    if '_result' in d:
        new['_result'] = convertValue(d.pop('_result'))
    policy = d.pop('_retry_policy', None)
    d.pop('key', None)  # zc.async's key in the completed collection
    d.pop('_v_retry_policy', None)
    d.update(new)
    if policy is not None:
        _keepPolicyData(job, policy)
    job._p_changed = True
    return True


def _keepPolicyData(job, policy):
    """zc.async kept a policy's counters in the policy object; zcasync
    makes policies per run and keeps counters in the annotations.  Old
    counters are kept there as they were (zcasync's policies start their
    own counts)."""
    data = state(policy).get('data')
    if data is not None and len(data):
        job.annotations[POLICY_DATA_KEY] = dict(data.items())


# -- callback proxies ---------------------------------------------------------

def isLegacyProxy(proxy: Any) -> bool:
    d = state(proxy)
    return 'conditionals' in d or 'default' in d or 'callbacks' in d


def convertProxy(proxy: Any, problems: Problems) -> bool:
    """zc.async's SuccessFailureCallbackProxy or ConditionalCallbackProxy
    (``default``: the job for results no condition takes;
    ``conditionals``: [(condition, job)]) as zcasync's (``success``,
    ``failure``) when its only condition is ``isFailure``: success is the
    default (a job passing the result on when there is none), failure the
    conditional job (the default when there is no condition).  Other
    conditions cannot be mapped: noted in `problems`, left as it is."""
    if not isLegacyProxy(proxy):
        return False
    d = state(proxy)
    conditionals = list(_items(d.get('conditionals')))
    failure_job = None
    for entry in conditionals:
        condition, job = entry
        if condition is utils.isFailure and failure_job is None:
            failure_job = job
        else:
            problems.note(proxy, 'callback condition %r' % (condition,),
                          'zcasync callback proxies choose between success '
                          'and failure only; the proxy is left unconverted')
            return False
    success_job = d.get('default')
    if not conditionals and success_job is not None:
        failure_job = success_job  # every outcome goes to the default
    from zcasync.composite import passThrough
    from zcasync.job import Job
    jobs = []
    for job in (success_job, failure_job):
        if job is None:
            job = Job(passThrough)
            job.parent = proxy
            if proxy._p_jar is not None:
                proxy._p_jar.add(job)
        jobs.append(job)
    callbacks = _items(d.pop('callbacks', None))
    for key in ('default', 'conditionals'):
        d.pop(key, None)
    d['success'], d['failure'] = jobs
    d['_callbacks'] = persistent.list.PersistentList(callbacks) \
        if callbacks else None
    proxy._p_changed = True
    return True


def provideFilterAgent(agent: Any) -> None:
    if agent._chooser is None and \
            not interfaces.IFilterAgent.providedBy(agent):
        zope.interface.alsoProvides(agent, interfaces.IFilterAgent)
