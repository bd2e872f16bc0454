"""The renaming stage: zc.async class paths become zcasync's, through
``zodbupdate``.

``RENAMES`` maps each (module, name) that zc.async 1.5 databases store to
where it lives now:

- classes whose objects keep their oid -- jobs, callback proxies, queues,
  quotas, the dispatcher registry, agents -- are renamed to the zcasync
  classes themselves (every persistent reference to them names its class,
  so the class must be the final one); their *state* is still zc.async's
  until the converters (``zcasync.migrate.converters``) rewrite it;
- classes whose objects are replaced (zc.queue's queues, zope.bforest's
  forest, zc.async's completed collection and stored retry policies,
  zc.twist's Failure) are renamed to stand-ins in
  ``zcasync.migrate.legacy``;
- functions and interfaces stored by reference are renamed to zcasync's
  equivalents; ``pytz._UTC`` to a function giving ``datetime.timezone.utc``.

The stage rewrites the current revision of every record that names one of
them (``zodbupdate.serialize.ObjectRenamer``, one record at a time), in
transactions of at most ``batch`` records, recording after each the next
oid to look at (``progress['rename_next']``); records already renamed are
left alone, so running it again finds nothing to do.
"""
from __future__ import annotations

import io
import logging
from typing import Any, Callable, Iterator

import ZODB.POSException
import ZODB.utils

#: The module of the stand-ins.
LEGACY_MODULE = _LEGACY = 'zcasync.migrate.legacy'

#: (old module, old name) -> (new module, new name)
RENAMES: dict[tuple[str, str], tuple[str, str]] = {
    # converted in place (same oid)
    ('zc.async.job', 'Job'): ('zcasync.job', 'Job'),
    ('zc.async.job', 'SuccessFailureCallbackProxy'):
        ('zcasync.job', 'SuccessFailureCallbackProxy'),
    ('zc.async.queue', 'Queues'): ('zcasync.queue', 'Queues'),
    ('zc.async.queue', 'Queue'): ('zcasync.queue', 'Queue'),
    ('zc.async.queue', 'Quotas'): ('zcasync.queue', 'Quotas'),
    ('zc.async.queue', 'Quota'): ('zcasync.queue', 'Quota'),
    ('zc.async.queue', 'Dispatchers'): ('zcasync.registry', 'Dispatchers'),
    ('zc.async.queue', 'DispatcherAgents'):
        ('zcasync.registry', 'DispatcherAgents'),
    ('zc.async.agent', 'Agent'): ('zcasync.agent', 'Agent'),
    # (the same layout: zc.async's SuccessFailureCallbackProxy is one)
    ('zc.async.job', 'ConditionalCallbackProxy'):
        ('zcasync.job', 'SuccessFailureCallbackProxy'),
    # replaced by new objects
    ('zc.async.job', 'RetryCommonFourTimes'):
        (_LEGACY, 'RetryCommonFourTimes'),
    ('zc.async.job', 'RetryCommonForever'): (_LEGACY, 'RetryCommonForever'),
    ('zc.async.job', 'NeverRetry'): (_LEGACY, 'NeverRetry'),
    ('zc.async.utils', 'Periodic'): (_LEGACY, 'Periodic'),
    ('zc.queue._queue', 'BucketQueue'): (_LEGACY, 'BucketQueue'),
    ('zc.queue._queue', 'CompositeQueue'): (_LEGACY, 'CompositeQueue'),
    ('zc.queue', 'BucketQueue'): (_LEGACY, 'BucketQueue'),
    ('zc.queue', 'CompositeQueue'): (_LEGACY, 'CompositeQueue'),
    ('zope.bforest.periodic', 'LOBForest'): (_LEGACY, 'LOBForest'),
    ('zc.twist', 'Failure'): (_LEGACY, 'Failure'),
    ('pytz', '_UTC'): (_LEGACY, '_UTC'),
    ('pytz', 'utc'): (_LEGACY, '_UTC'),
    # by reference
    ('zc.async.job', 'isFailure'): ('zcasync.utils', 'isFailure'),
    ('zc.async.job', 'callback_retry_policy_factory'):
        ('zcasync.retry', 'callback_retry_policy_factory'),
    ('zc.async.utils', 'Atom'): ('zope.minmax._minmax', 'Maximum'),
    ('zc.async.interfaces', 'IFilterAgent'):
        ('zcasync.interfaces', 'IFilterAgent'),
    ('zc.async.interfaces', 'ICompletedCollection'):
        ('zcasync.interfaces', 'ICompletedCollection'),
    ('zc.async.interfaces', 'IAgent'): ('zcasync.interfaces', 'IAgent'),
    ('zc.async.interfaces', 'IJob'): ('zcasync.interfaces', 'IJob'),
    ('zc.async.interfaces', 'IQueue'): ('zcasync.interfaces', 'IQueue'),
}

#: The modules of the old names: a stored name in one of them that
#: RENAMES does not know cannot be migrated.
LEGACY_MODULES = ('zc.async', 'zc.queue', 'zope.bforest', 'zc.twist',
                  'zc.dict', 'pytz')

#: Where the renamed classes are converted in place: their records keep
#: zc.async's state until the converters ran.
IN_PLACE = frozenset(new for old, new in RENAMES.items()
                     if old[0].startswith('zc.async') and
                     new[0].startswith('zcasync.') and
                     new[0] != _LEGACY and old[1][0].isupper() and
                     not old[1].startswith('I') and new[1] != 'isFailure')


def isLegacyName(module: str) -> bool:
    return any(module == m or module.startswith(m + '.')
               for m in LEGACY_MODULES)


def currentRecords(storage: Any, start: bytes = ZODB.utils.z64
                   ) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(oid, tid, pickle) of the current revision of every object, in oid
    order from `start`: the storage's record iteration where it has one,
    else a walk of a FileStorage's index."""
    index = getattr(storage, '_index', None)
    if index is not None:  # FileStorage
        oids = sorted(oid for oid in index.keys() if oid >= start)
        for oid in oids:
            try:
                data, tid = storage.load(oid, '')
            except ZODB.POSException.POSKeyError:
                continue
            yield oid, tid, data
        return
    if not hasattr(storage, 'record_iternext'):
        if not hasattr(storage, 'iterator'):
            raise TypeError(
                'cannot walk the records of %r: zcasync migrate needs a '
                'storage that iterates its records (FileStorage, ZEO, '
                'RelStorage, MappingStorage)' % (storage,))
        # the whole history, keeping the newest record of each object
        latest = {}
        for txn in storage.iterator():
            for record in txn:
                if record.oid >= start:
                    latest[record.oid] = (record.tid, record.data)
        for oid in sorted(latest):
            tid, data = latest[oid]
            if data is not None:  # None: undone creation
                yield oid, tid, data
        return
    next_oid = start
    while next_oid is not None:
        oid, tid, data, next_oid = storage.record_iternext(next_oid)
        yield oid, tid, data


def renamer(renames: dict | None = None) -> Any:
    import zodbupdate.serialize
    return zodbupdate.serialize.ObjectRenamer(
        renames=dict(RENAMES if renames is None else renames),
        decoders={}, pickle_protocol=3)


def renameRecords(storage: Any, start: bytes, batch: int,
                  done: Callable[[bytes | None, list[bytes]], None]) -> int:
    """Rename the class paths of the records from oid `start` on, in
    storage transactions of at most `batch` records; after each commit
    ``done(next_oid, oids)`` (next_oid None at the end).  Returns how
    many records were rewritten.

    The walk only finds the records to rename; each batch renames the
    data it loads itself just before storing it (through a fresh
    instance of an MVCC storage such as RelStorage), so that it never
    stores over a newer revision."""
    processor = renamer()
    pending: list[bytes] = []
    count = 0

    def commit(next_oid):
        stored = _storeRenamed(storage, pending, processor) if pending \
            else []
        del pending[:]
        done(next_oid, stored)
        return len(stored)

    with _quietZodbupdate():
        for oid, tid, data in currentRecords(storage, start):
            if processor.rename(io.BytesIO(data)) is None:
                continue
            pending.append(oid)
            if len(pending) >= batch:
                count += commit(ZODB.utils.p64(ZODB.utils.u64(oid) + 1))
        count += commit(None)
    return count


def _storeRenamed(storage, oids, processor):
    """Store the renamed current revision of each of `oids` in one
    transaction; returns the oids stored."""
    from ZODB.Connection import TransactionMetaData
    import ZODB.interfaces
    mvcc = ZODB.interfaces.IMVCCStorage.providedBy(storage)
    writer = storage.new_instance() if mvcc else storage
    try:
        if mvcc:
            writer.poll_invalidations()
        records = []
        for oid in oids:
            data, tid = writer.load(oid, '')
            new = processor.rename(io.BytesIO(data))
            if new is not None:
                records.append((oid, tid, new.getvalue()))
        if not records:
            return []
        t = TransactionMetaData(
            description='zcasync migrate: zc.async class paths renamed to '
            'zcasync (zodbupdate)')
        writer.tpc_begin(t)
        try:
            for oid, tid, data in records:
                writer.store(oid, tid, data, '', t)
            writer.tpc_vote(t)
        except BaseException:
            writer.tpc_abort(t)
            raise
        writer.tpc_finish(t)
        return [oid for oid, tid, data in records]
    finally:
        if mvcc:
            writer.release()


class _quietZodbupdate:
    """zodbupdate logs each implicit rule and missing factory at INFO /
    WARNING; the survey reports those itself."""

    def __enter__(self):
        self.logger = logging.getLogger('zodbupdate')
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
