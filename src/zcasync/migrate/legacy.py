"""Stand-ins for the zc.async 1.5 classes (and those of its dependencies)
whose objects ``zcasync migrate`` replaces rather than converts in place.

The renaming stage (``zcasync.migrate.renames``) points the stored class
paths of such objects here, so that they load without zc.async, zc.queue,
zope.bforest or zc.twist; the converters then read them and build the
zcasync objects.  After a migration no stored object refers to these
classes any more, but they keep their paths (a migration interrupted
after the renaming stage needs them to resume).

Each stand-in keeps the state it was stored with, untouched: the
converters know the old layouts (see the README of the fixture in
tests and ``docs/zc_async_compat.rst``).
"""
import datetime

import persistent


class LegacyPersistent(persistent.Persistent):
    """A persistent object stored by zc.async's code (or a dependency's):
    its state, as stored, in its ``__dict__``."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and \
                isinstance(state[1], dict):  # (dict, slots)
            state = dict(state[0] or {}, **state[1])
        if not isinstance(state, dict):
            state = {'_legacy_state': state}
        super().__setstate__(state)


# -- zc.queue --------------------------------------------------------------

class BucketQueue(LegacyPersistent):
    """``zc.queue._queue.BucketQueue``: ``_data``, a tuple of items."""

    def items(self):
        return tuple(self.__dict__.get('_data', ()))


class CompositeQueue(LegacyPersistent):
    """``zc.queue._queue.CompositeQueue``: ``_data``, a tuple of
    BucketQueues, oldest first."""

    def items(self):
        found = []
        for bucket in self.__dict__.get('_data', ()):
            found.extend(bucket.items())
        return tuple(found)


# -- zope.bforest ----------------------------------------------------------

class LOBForest(LegacyPersistent):
    """``zope.bforest.periodic.LOBForest``: ``buckets``, a list of
    LOBTrees (newest first), plus its period."""

    def trees(self):
        return list(self.__dict__.get('buckets', ()))


# -- zc.async --------------------------------------------------------------

class Periodic(LegacyPersistent):
    """``zc.async.utils.Periodic``: an agent's completed jobs, in
    ``_data`` (a LOBForest keyed by ``dt_to_long(completion) + n``)."""

    def jobs(self):
        """The jobs, newest first (smallest key first across the
        buckets)."""
        forest = self.__dict__.get('_data')
        if forest is None:
            return []
        items = []
        for tree in forest.trees():
            items.extend(tree.items())
        items.sort(key=lambda item: item[0])
        return [job for key, job in items]


class RetryCommonFourTimes(LegacyPersistent):
    """A zc.async retry policy object stored on a job (``_retry_policy``):
    ``data`` holds its counters; also the policy class that a job names
    as its ``retry_policy_factory``."""


class RetryCommonForever(RetryCommonFourTimes):
    pass


class NeverRetry(RetryCommonFourTimes):
    pass


# -- zc.twist and pytz ------------------------------------------------------

class Failure:
    """``zc.twist.Failure``: a Twisted failure stored with the classic
    Twisted state keys (type, value, tb, frames, stack, count, parents,
    ...), kept as a dict.  (Stored with a Twisted whose Failure is an
    exception, it is rebuilt by a call with the exception's arguments:
    they are in the state too.)"""

    def __init__(self, *args, **kw):
        pass

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else
                             {'_legacy_state': state})


def _UTC():
    """``pytz._UTC()``: the UTC time zone of the stored datetimes."""
    return datetime.timezone.utc
