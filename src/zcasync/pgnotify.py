"""Hear about RelStorage commits through PostgreSQL LISTEN/NOTIFY.

RelStorage clients only learn of other commits when they poll.  A trigger
on RelStorage's ``object_state`` table can send each changed object id on
the PostgreSQL channel ``zcasync_changes`` when the writing transaction
commits; one listener thread per database (its own PostgreSQL connection,
in autocommit mode) turns the notifications into calls of the invalidation
listeners (see ``zcasync.invalidations``).

Installing the trigger is an explicit step, done once per database by
someone allowed to create functions and triggers there::

    zcasync pg-notify install --db postgres://...     (or remove, status)

or ``installTrigger(dsn)`` / ``removeTrigger(dsn)`` from Python.  zcasync
never changes the application's tables on its own.  Without the trigger,
workers on RelStorage poll every ``poll_interval`` and say so when they
start; the listener listens anyway, so installing the trigger later takes
effect without restarting them.

The listener survives its connection: when the PostgreSQL server restarts,
fails over, or terminates the backend, it reconnects with a growing pause
and then tells every listener that anything may have changed (``oids``
None), so dispatchers poll at once instead of missing what was committed
while it was away.
"""
import logging
import select
import threading

import ZODB.utils

from zcasync import invalidations
from zcasync import utils

CHANNEL = 'zcasync_changes'
TRIGGER = 'zcasync_notify_change'
_LOCK_KEY = 0x7A636173  # 'zcas'
_HUB_ATTRIBUTE = '_zcasync_pg_hub'
#: Seconds between reconnection attempts, growing to the last one.
RECONNECT_PAUSES = (0.1, 0.5, 1, 2, 5)

_INSTALL = """
CREATE OR REPLACE FUNCTION zcasync_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('%(channel)s', NEW.zoid::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS %(trigger)s ON object_state;
CREATE TRIGGER %(trigger)s AFTER INSERT OR UPDATE ON object_state
    FOR EACH ROW EXECUTE FUNCTION zcasync_notify_change();
""" % {'channel': CHANNEL, 'trigger': TRIGGER}

_REMOVE = """
DROP TRIGGER IF EXISTS %(trigger)s ON object_state;
DROP FUNCTION IF EXISTS zcasync_notify_change();
""" % {'trigger': TRIGGER}


def dsnOf(db):
    """The PostgreSQL DSN of a DB on RelStorage/PostgreSQL, else None."""
    storage = getattr(db, 'storage', None)
    adapter = getattr(storage, '_adapter', None)
    if adapter is None or type(adapter).__module__.split('.')[:3] != [
            'relstorage', 'adapters', 'postgresql']:
        return None
    return adapter._dsn


def _connect(target):
    """A psycopg2 connection for a DSN string, a DB, or a connection."""
    import psycopg2
    if hasattr(target, 'cursor'):
        return target, False
    if not isinstance(target, str):
        dsn = dsnOf(target)
        if dsn is None:
            raise ValueError(
                '%r does not run on RelStorage with PostgreSQL: there is no '
                'trigger to install' % (target,))
        target = dsn
    return psycopg2.connect(target), True


def _run(target, statements):
    connection, own = _connect(target)
    try:
        with connection.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_xact_lock(%s)', (_LOCK_KEY,))
            result = statements(cursor)
        connection.commit()
        return result
    finally:
        if own:
            connection.close()


def triggerInstalled(target):
    """Whether the notify trigger is installed (`target`: a DSN, a DB or
    a psycopg2 connection)."""
    def check(cursor):
        cursor.execute('SELECT 1 FROM pg_trigger WHERE tgname = %s',
                       (TRIGGER,))
        return cursor.fetchone() is not None
    return _run(target, check)


def installTrigger(target):
    """Install the notify trigger on RelStorage's ``object_state`` table
    (idempotent; `target`: a DSN, a DB or a psycopg2 connection).  The
    database user needs the right to create functions and triggers."""
    def install(cursor):
        cursor.execute('SELECT 1 FROM pg_trigger WHERE tgname = %s',
                       (TRIGGER,))
        if cursor.fetchone() is None:
            cursor.execute(_INSTALL)
            return True
        return False
    return _run(target, install)


def removeTrigger(target):
    """Remove the notify trigger and its function (idempotent)."""
    def remove(cursor):
        cursor.execute('SELECT 1 FROM pg_trigger WHERE tgname = %s',
                       (TRIGGER,))
        found = cursor.fetchone() is not None
        cursor.execute(_REMOVE)
        return found
    return _run(target, remove)


class PostgresHub(invalidations.Hub):
    """Listens on the channel in a thread, reconnecting when the
    connection is lost."""

    def __init__(self, dsn):
        super().__init__()
        self.dsn = dsn
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.reconnections = 0
        self._connection = self._listen()  # fails at once when unreachable
        self.trigger = triggerInstalled(dsn)
        if not self.trigger:
            utils.safeLog(
                utils.log, logging.WARNING,
                'the PostgreSQL notify trigger is not installed: dispatchers '
                'on this database poll every poll_interval instead of '
                'hearing commits at once; install it once with "zcasync '
                'pg-notify install --db URI" (zcasync.pgnotify.'
                'installTrigger)')
        self._thread = threading.Thread(
            target=self._run, name='zcasync pg listener', daemon=True)
        self._thread.start()

    def _listen(self):
        import psycopg2
        import psycopg2.extensions
        connection = psycopg2.connect(self.dsn)
        connection.set_isolation_level(
            psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute('LISTEN %s' % CHANNEL)
        self.connected.set()
        return connection

    @property
    def stopped(self):
        return self._stop.is_set()

    def remove(self, listener):
        idle = super().remove(listener)
        if idle:
            self.close()  # the next watch starts a new hub
        return idle

    def close(self):
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self):
        connection = self._connection
        while not self._stop.is_set():
            try:
                self._receive(connection)
            except Exception:
                utils.safeLog(
                    utils.log, logging.WARNING,
                    'PostgreSQL change listener lost its connection (%s); '
                    'reconnecting', utils.formatException().strip()
                    .splitlines()[-1])
            self.connected.clear()
            _close(connection)
            connection = self._reconnect()
            if connection is not None:
                self.reconnections += 1
                utils.log.info('PostgreSQL change listener reconnected')
                # commits made while it was away were not heard
                self.fire(None, None)
        _close(connection)

    def _receive(self, connection):
        while not self._stop.is_set():
            ready, _, _ = select.select([connection], [], [], 0.5)
            if not ready:
                continue
            connection.poll()
            oids = set()
            while connection.notifies:
                note = connection.notifies.pop(0)
                try:
                    oids.add(ZODB.utils.p64(int(note.payload)))
                except ValueError:
                    continue
            if oids:
                self.fire(oids, None)

    def _reconnect(self):
        """A new listening connection, or None once stopped."""
        for attempt in range(1 << 30):
            pause = RECONNECT_PAUSES[min(attempt, len(RECONNECT_PAUSES) - 1)]
            if self._stop.wait(pause):
                return None
            try:
                return self._listen()
            except Exception:
                if attempt == 0:
                    utils.safeLog(
                        utils.log, logging.WARNING,
                        'PostgreSQL change listener cannot reconnect yet '
                        '(%s); retrying', utils.formatException().strip()
                        .splitlines()[-1])


def _close(connection):
    if connection is not None:
        try:
            connection.close()
        except Exception:
            pass


def hubFor(db):
    """A hub for `db` when it runs on RelStorage/PostgreSQL, else None."""
    dsn = dsnOf(db)
    if dsn is None:
        return None
    hub = db.__dict__.get(_HUB_ATTRIBUTE)
    if hub is not None and not hub.stopped:
        return hub
    try:
        hub = PostgresHub(dsn)
    except Exception:
        utils.safeLog(
            utils.log, logging.WARNING,
            'cannot listen for PostgreSQL changes (%s); dispatchers poll '
            'every poll_interval instead', utils.formatException().strip()
            .splitlines()[-1])
        return None
    setattr(db, _HUB_ATTRIBUTE, hub)
    return hub
