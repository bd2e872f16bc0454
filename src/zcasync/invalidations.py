"""Hear about committed changes as they happen.

ZODB tells every connection which objects other transactions changed
(invalidations), but ZODB 6 has no public callback for it.  A DB wraps a
storage that is not itself multi-version in an ``MVCCAdapter``, which
receives every invalidation:

- ``_invalidate_finish(tid, oids, committing_instance)`` for commits made
  through this DB (any connection, any thread of this process);
- ``invalidate(tid, oids)`` for commits made elsewhere, which a ZEO
  ``ClientStorage`` learns from its server;
- ``invalidateCache()`` when a ZEO client (re)connects to its server:
  whatever was committed while it was away may have changed.

``watch(db, listener)`` wraps those methods on that one adapter instance
(nothing global is patched) so that ``listener(oids, instance)`` is called
right after the commit, in the committing thread or the ZEO client's I/O
thread; ``oids`` is None when anything may have changed (a reconnection).
Listeners must be quick and must not touch the database: a dispatcher's
listener only hands a "poll soon" to its reactor.

Storages that are multi-version themselves (RelStorage) have no adapter;
for RelStorage on PostgreSQL, ``watch`` listens on a PostgreSQL channel fed
by a trigger on its object table (see ``pgnotify``).  Where nothing works,
``watch`` returns None and the dispatcher relies on its poll interval.
"""
import logging
import threading

from zcasync import utils

_HUB_ATTRIBUTE = '_zcasync_invalidation_hub'


class Watch:
    """A registered listener; ``close()`` unregisters it."""

    def __init__(self, hub, listener):
        self.hub = hub
        self.listener = listener

    def close(self):
        self.hub.remove(self.listener)


class Hub:
    """Fans changes out to listeners: ``listener(oids, instance)``, with
    ``oids`` None when anything may have changed."""

    def __init__(self):
        self._listeners = ()
        self._lock = threading.Lock()

    def add(self, listener):
        with self._lock:
            self._listeners += (listener,)

    def remove(self, listener):
        """Remove `listener`; True when none is left."""
        with self._lock:
            self._listeners = tuple(
                x for x in self._listeners if x is not listener)
            return not self._listeners

    def fire(self, oids, instance):
        for listener in self._listeners:
            try:
                listener(oids, instance)
            except Exception:
                utils.safeLog(utils.log, logging.ERROR,
                              'invalidation listener %r failed:\n%s',
                              listener, utils.formatException())


class AdapterHub(Hub):
    """Hears the invalidations of one MVCCAdapter."""

    def __init__(self, adapter):
        super().__init__()
        invalidate = adapter.invalidate
        invalidate_finish = adapter._invalidate_finish
        invalidate_cache = adapter.invalidateCache

        def hooked_invalidate(tid, oids):
            invalidate(tid, oids)
            self.fire(oids, None)

        def hooked_invalidate_finish(tid, oids, committing_instance):
            invalidate_finish(tid, oids, committing_instance)
            self.fire(oids, committing_instance)

        def hooked_invalidate_cache():
            invalidate_cache()
            self.fire(None, None)

        adapter.invalidate = hooked_invalidate
        adapter._invalidate_finish = hooked_invalidate_finish
        adapter.invalidateCache = hooked_invalidate_cache


def _adapterHub(db):
    from ZODB.mvccadapter import MVCCAdapter
    adapter = getattr(db, '_mvcc_storage', None)
    if not isinstance(adapter, MVCCAdapter):
        return None
    hub = adapter.__dict__.get(_HUB_ATTRIBUTE)
    if hub is None:
        hub = AdapterHub(adapter)
        setattr(adapter, _HUB_ATTRIBUTE, hub)
    return hub


def watch(db, listener):
    """Call ``listener(oids, committing_instance)`` after each commit that
    `db` hears of; returns a Watch (``close()`` to stop) or None when this
    storage offers no way to hear of commits."""
    hub = _adapterHub(db)
    if hub is None:
        from zcasync import pgnotify
        hub = pgnotify.hubFor(db)
    if hub is None:
        return None
    hub.add(listener)
    return Watch(hub, listener)
