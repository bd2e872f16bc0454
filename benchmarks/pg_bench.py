"""PostgreSQL for the benchmarks: is it there, and throwaway databases.

The server is the one the tests use: 127.0.0.1:5432, user ``postgres``,
trust authentication.  Each throwaway database is created empty and
dropped in a ``finally`` clause, after its remaining backends (worker
processes that did not exit, a listener thread) are terminated.
"""
import contextlib
import importlib.util
import itertools
import os
import socket

HOST, PORT, USER = '127.0.0.1', 5432, 'postgres'
_names = itertools.count(1)


def unavailable():
    """Why the PostgreSQL benchmarks cannot run here (a short reason), or
    None when they can."""
    for module, package in (('psycopg2', 'psycopg2-binary'),
                            ('relstorage', 'RelStorage')):
        if importlib.util.find_spec(module) is None:
            return '%s not installed' % package
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            pass
    except OSError as e:
        return 'no PostgreSQL on %s:%d (%s)' % (HOST, PORT,
                                                 e.strerror or e)
    try:
        _admin().close()
    except Exception as e:
        return 'PostgreSQL refused user %s: %s' % (
            USER, str(e).strip().splitlines()[0])
    return None


def _admin():
    import psycopg2
    connection = psycopg2.connect(host=HOST, port=PORT, user=USER,
                                  dbname='postgres', connect_timeout=5)
    connection.autocommit = True
    return connection


def dsn(name):
    """A libpq connection string for database `name`."""
    return 'host=%s port=%d user=%s dbname=%s' % (HOST, PORT, USER, name)


def uri(name):
    """The zodburi/``zcasync --db`` URI of a history-free RelStorage
    database in database `name`."""
    return 'postgres://%s@%s:%d/%s?keep_history=false' % (USER, HOST, PORT,
                                                           name)


def terminateBackends(name):
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                'WHERE datname = %s AND pid <> pg_backend_pid()', (name,))
    finally:
        admin.close()


@contextlib.contextmanager
def throwawayDatabase(purpose):
    """Create an empty database, yield its name, drop it at the end."""
    name = 'zcasync_bench_%s_%d_%d' % (purpose, os.getpid(), next(_names))
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS %s' % name)
            cursor.execute('CREATE DATABASE %s' % name)
    finally:
        admin.close()
    try:
        yield name
    finally:
        terminateBackends(name)
        admin = _admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute('DROP DATABASE IF EXISTS %s' % name)
        finally:
            admin.close()


def openRelStorage(name, pool_size=7):
    """A ZODB.DB on a history-free RelStorage in database `name` (its
    tables are created on first use), opened through zodburi as the
    ``zcasync`` command opens ``--db`` URIs."""
    import ZODB
    import zodburi
    factory, dbkw = zodburi.resolve_uri(
        uri(name) + '&connection_pool_size=%d' % pool_size)
    return ZODB.DB(factory(), **dbkw)


def count(name, query, args=()):
    """The single number `query` returns in database `name` (a new
    connection: for waits that poll)."""
    import psycopg2
    connection = psycopg2.connect(dsn(name))
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchone()[0]
    finally:
        connection.close()
