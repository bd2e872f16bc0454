"""Hear about RelStorage commits through PostgreSQL LISTEN/NOTIFY.

RelStorage clients only learn of other commits when they poll.  A trigger
on RelStorage's ``object_state`` table sends each changed object id on the
PostgreSQL channel ``zcasync_changes`` when the writing transaction
commits; one listener thread per database (its own PostgreSQL connection,
in autocommit mode) turns the notifications into calls of the invalidation
listeners (see ``zcasync.invalidations``).

The trigger is installed on first use (``CREATE OR REPLACE``, under an
advisory lock so that workers starting together do not race); the
database user needs the right to create functions and triggers.  If that
fails, a WARNING says so and dispatchers fall back on their poll interval.
"""
import logging
import select
import threading

import ZODB.utils

from zcasync import invalidations
from zcasync import utils

CHANNEL = 'zcasync_changes'
_LOCK_KEY = 0x7A636173  # 'zcas'
_HUB_ATTRIBUTE = '_zcasync_pg_hub'

_INSTALL = """
CREATE OR REPLACE FUNCTION zcasync_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('%(channel)s', NEW.zoid::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS zcasync_notify_change ON object_state;
CREATE TRIGGER zcasync_notify_change AFTER INSERT OR UPDATE ON object_state
    FOR EACH ROW EXECUTE FUNCTION zcasync_notify_change();
""" % {'channel': CHANNEL}


def _dsn(db):
    storage = getattr(db, 'storage', None)
    adapter = getattr(storage, '_adapter', None)
    if adapter is None or type(adapter).__module__.split('.')[:3] != [
            'relstorage', 'adapters', 'postgresql']:
        return None
    return adapter._dsn


def installTrigger(connection):
    """Install the notify trigger (idempotent); `connection` is a psycopg2
    connection to RelStorage's database."""
    with connection.cursor() as cursor:
        cursor.execute('SELECT pg_advisory_xact_lock(%s)', (_LOCK_KEY,))
        cursor.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'zcasync_notify_change'")
        if cursor.fetchone() is None:
            cursor.execute(_INSTALL)
    connection.commit()


class PostgresHub(invalidations.Hub):
    """Listens on the channel in a thread."""

    def __init__(self, dsn):
        import psycopg2
        import psycopg2.extensions
        super().__init__()
        self._stop = threading.Event()
        self._connection = psycopg2.connect(dsn)
        installTrigger(self._connection)
        self._connection.set_isolation_level(
            psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with self._connection.cursor() as cursor:
            cursor.execute('LISTEN %s' % CHANNEL)
        self._thread = threading.Thread(
            target=self._run, name='zcasync pg listener', daemon=True)
        self._thread.start()

    def remove(self, listener):
        idle = super().remove(listener)
        if idle:
            self.close()  # the next watch starts a new hub
        return idle

    def close(self):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        connection = self._connection
        try:
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
        except Exception:
            utils.safeLog(utils.log, logging.WARNING,
                          'PostgreSQL change listener stopped; dispatchers '
                          'fall back on their poll interval:\n%s',
                          utils.formatException())
        finally:
            try:
                connection.close()
            except Exception:
                pass


def hubFor(db):
    """A hub for `db` when it runs on RelStorage/PostgreSQL, else None."""
    dsn = _dsn(db)
    if dsn is None:
        return None
    hub = db.__dict__.get(_HUB_ATTRIBUTE)
    if hub is not None and not hub._stop.is_set():
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
