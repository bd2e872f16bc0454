"""Hearing RelStorage commits through PostgreSQL NOTIFY (issue 9, case 6
and the explicit trigger): the trigger is installed and removed only on
request (``zcasync pg-notify``); the listener comes back after its
backend is terminated and then reports that anything may have changed."""
import subprocess
import sys
import threading

import psycopg2
import transaction

from zcasync import invalidations, pgnotify, testing
from zcasync.cli import db as cli_db

from tests.processes.conftest import ROOT, childEnvironment


def dbname(uri):
    return uri.split('/')[-1].split('?')[0]


def adminQuery(uri, sql, *params):
    connection = psycopg2.connect(host='127.0.0.1', port=5432,
                                  user='postgres', dbname=dbname(uri))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def pgNotify(uri, action):
    done = subprocess.run(
        [sys.executable, '-m', 'zcasync', 'pg-notify', action, '--db', uri],
        cwd=ROOT, env=childEnvironment(), capture_output=True, text=True,
        timeout=60)
    return done.returncode, done.stdout + done.stderr


class Heard:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, oids, instance):
        with self.lock:
            self.events.append(oids)

    def count(self, what):
        with self.lock:
            return sum(1 for e in self.events if what(e))


def commitSomething(db, key):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        conn.root()[key] = key
        tm.commit()
        return conn.root()._p_oid
    finally:
        conn.close()


def test_the_trigger_is_installed_only_on_request(postgres):
    db = cli_db.openDatabase(postgres, connect_timeout=10)
    try:
        dsn = pgnotify.dsnOf(db)
        heard = Heard()
        watch = invalidations.watch(db, heard)  # listens, installs nothing
        try:
            assert not pgnotify.triggerInstalled(dsn)
            assert pgNotify(postgres, 'status')[1].strip() == (
                'notify trigger not installed: workers poll every poll '
                'interval')
            commitSomething(db, 'before')
            assert pgNotify(postgres, 'install') == (
                0, 'notify trigger installed\n')
            assert pgNotify(postgres, 'install') == (
                0, 'notify trigger was already installed\n')
            # heard without restarting the listener
            root = commitSomething(db, 'after')
            testing.wait(lambda: heard.count(
                lambda e: e is not None and root in e), 10,
                'the commit was not heard')
            assert pgNotify(postgres, 'remove') == (
                0, 'notify trigger removed\n')
            assert not pgnotify.triggerInstalled(dsn)
        finally:
            watch.close()
    finally:
        db.close()


def test_pg_notify_refuses_other_databases(tmp_path):
    code, output = pgNotify('file://%s' % (tmp_path / 'Data.fs'), 'install')
    assert code == 3
    assert 'pg-notify is for RelStorage on PostgreSQL' in output


def test_the_listener_comes_back_after_its_backend_is_terminated(postgres):
    db = cli_db.openDatabase(postgres, connect_timeout=10)
    try:
        pgnotify.installTrigger(pgnotify.dsnOf(db))
        heard = Heard()
        watch = invalidations.watch(db, heard)
        hub = watch.hub
        try:
            root = commitSomething(db, 'one')
            testing.wait(lambda: heard.count(
                lambda e: e is not None and root in e), 10,
                'the first commit was not heard')
            terminated = adminQuery(
                postgres, "SELECT pg_terminate_backend(pid) FROM "
                "pg_stat_activity WHERE datname = %s AND query LIKE "
                "'LISTEN%%'", dbname(postgres))
            assert terminated == [(True,)]
            testing.wait(lambda: hub.reconnections == 1, 20,
                         'the listener did not reconnect')
            # anything may have changed while it was away
            assert heard.count(lambda e: e is None) == 1
            before = heard.count(lambda e: e is not None and root in e)
            commitSomething(db, 'two')
            testing.wait(lambda: heard.count(
                lambda e: e is not None and root in e) > before, 10,
                'a commit after the reconnection was not heard')
        finally:
            watch.close()
    finally:
        db.close()


def test_watch_needs_no_trigger_to_start(postgres, caplog):
    db = cli_db.openDatabase(postgres, connect_timeout=10)
    try:
        watch = invalidations.watch(db, lambda oids, instance: None)
        try:
            assert watch is not None
            assert 'notify trigger is not installed' in caplog.text
            assert 'zcasync pg-notify install' in caplog.text
        finally:
            watch.close()
    finally:
        db.close()
