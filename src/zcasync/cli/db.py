"""Opening the database a ``zcasync`` command names with ``--db URI``.

URIs go through ``zodburi``: ``file:///path/Data.fs``, ``zeo://host:port``,
``memory://`` and RelStorage's ``postgres://user@host:port/dbname`` (and
whatever other schemes installed packages register).  Database options
take zodburi's ``connection_`` prefix (``connection_pool_size=5``,
``connection_cache_size=...``, ``database_name=...``).

Two things are done differently from plain ``zodburi.resolve_uri``:

- ``postgres://``: RelStorage's own resolver writes the literal string
  ``'None'`` into the connection string for a user, password, host or port
  the URI leaves out, which only works under trust authentication and
  only with a role named "None".  Here the missing parts are left out, so
  libpq's defaults apply (``PGUSER``, ``PGPASSWORD``, ``~/.pgpass``, the
  local socket), and percent-escapes in the user and password are decoded.
- a server that cannot be reached is reported at once as a one-line error
  (``--connect-timeout`` bounds the wait for a server that is starting),
  instead of the storage's own long wait followed by a traceback.
"""
import logging
import os
import socket
import time
import urllib.parse

import zodburi

from zcasync.cli.common import (
    CommandError, firstLine, EXIT_URI, EXIT_UNAVAILABLE, EXIT_FORMAT)

EXAMPLES = ('file:///var/zcasync/Data.fs, zeo://127.0.0.1:8100, memory://, '
            'postgres://postgres@127.0.0.1:5432/zcasync?keep_history=false')

log = logging.getLogger('zcasync.events')

_DB_DEFAULTS = {'cache_size': 10000, 'pool_size': 7,
                'database_name': 'unnamed'}


#: Other names of schemes (libpq writes ``postgresql://``).
ALIASES = {'postgresql': 'postgres'}


def scheme(uri):
    """The URI's scheme, lower case, aliases resolved (``postgresql`` is
    ``postgres``)."""
    name = uri.split(':', 1)[0].lower() if ':' in uri else ''
    return ALIASES.get(name, name)


def _canonical(uri):
    """`uri` with an alias scheme replaced by the scheme zodburi knows."""
    name = uri.split(':', 1)[0].lower() if ':' in uri else ''
    if name in ALIASES:
        return ALIASES[name] + uri[len(name):]
    return uri


def _secret(key):
    return any(word in key.lower() for word in ('password', 'secret'))


def redact(uri):
    """The URI with any password -- in the user part or as a query option
    -- replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        if parts.password:
            netloc = parts.netloc.replace(':' + parts.password + '@',
                                          ':***@', 1)
            parts = parts._replace(netloc=netloc)
        if parts.query:
            query = '&'.join(
                '%s=***' % item.split('=', 1)[0]
                if '=' in item and _secret(item.split('=', 1)[0]) else item
                for item in parts.query.split('&'))
            parts = parts._replace(query=query)
        return urllib.parse.urlunsplit(parts)
    except ValueError:
        return uri.split('?', 1)[0] + ('?...' if '?' in uri else '')


def _resolvers():
    """scheme -> entry point of the installed zodburi resolvers."""
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group='zodburi.resolvers')}


def _dbKeywords(raw, uri):
    """ZODB.DB keywords from the URI's left-over query options."""
    dbkw = dict(_DB_DEFAULTS)
    unknown = []
    for key, value in raw.items():
        name = zodburi.PARAMETERS.get(key)
        if name is None:
            unknown.append(key)
            continue
        if name != 'database_name':
            try:
                value = int(value)
            except ValueError:
                raise CommandError(
                    'URI option %s=%r is not an integer in %s'
                    % (key, value, redact(uri)), EXIT_URI) from None
        dbkw[name] = value
    if unknown:
        raise CommandError(
            'unknown option(s) %s in database URI %s (database options '
            'take the connection_ prefix, e.g. connection_pool_size=5; '
            'storage options depend on the scheme)'
            % (', '.join(sorted(unknown)), redact(uri)), EXIT_URI)
    return dbkw


def _dsnValue(value):
    return "'%s'" % str(value).replace('\\', '\\\\').replace("'", "\\'")


def _postgresResolver():
    from relstorage import zodburi_resolver as rz

    class Helper(rz.PostgreSQLAdapterHelper):
        """Leaves out what the URI does not give (no 'None' strings)."""

        def __call__(self, parsed, kw):
            unquote = urllib.parse.unquote
            parts = [
                ('dbname', parsed.path[1:]),
                ('user', unquote(parsed.username)
                 if parsed.username else None),
                ('password', unquote(parsed.password)
                 if parsed.password else None),
                ('host', parsed.hostname),
                ('port', parsed.port),
            ]
            kw, unused = self.interpret_kwargs(kw)
            parts.extend(kw.items())
            dsn = ' '.join('%s=%s' % (k, _dsnValue(v)) for k, v in parts
                           if v not in (None, ''))

            def factory(options):
                from relstorage.adapters.postgresql import PostgreSQLAdapter
                return PostgreSQLAdapter(dsn=dsn, options=options)
            self.dsn = dsn
            return factory, unused

    return rz.RelStorageURIResolver(Helper())


def _keepsHistory(uri):
    """What a postgres:// URI asks for: RelStorage keeps history unless
    told ``keep_history=false`` (or 0, no, off)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    value = (query.get('keep_history') or ['true'])[-1].strip().lower()
    return value not in ('0', 'false', 'no', 'off')


def historyMismatch(uri, dsn):
    """A message when the PostgreSQL database holds the RelStorage schema
    of the other kind (history-free vs. history-preserving) than `uri`
    asks for, else None.  RelStorage reports one direction clearly; the
    other (a history-preserving adapter on a history-free schema) fails
    with an obscure ``InvalidForeignKey``."""
    try:
        import psycopg2
        with psycopg2.connect(dsn, connect_timeout=5) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT to_regclass('object_state') IS NOT "
                               "NULL, to_regclass('current_object') IS NOT "
                               "NULL")
                has_state, has_current = cursor.fetchone()
        conn.close()
    except Exception:
        return None
    if not has_state:
        return None  # no schema yet
    free = not has_current
    wanted = _keepsHistory(uri)
    if wanted and free:
        return ('the PostgreSQL database of %s holds a history-free '
                'RelStorage schema, but the URI asks for history '
                '(keep_history is true unless given): add '
                '?keep_history=false to the URI' % redact(uri))
    if not wanted and not free:
        return ('the PostgreSQL database of %s holds a history-preserving '
                'RelStorage schema, but the URI says keep_history=false: '
                'remove that option (or convert the database with '
                'zodbconvert)' % redact(uri))
    return None


def resolve(uri):
    """(storage factory, ZODB.DB keywords) for `uri`, or CommandError."""
    if not uri:
        raise CommandError(
            'no database given: use --db URI or ZCASYNC_DB (e.g. %s)'
            % EXAMPLES, EXIT_URI)
    name = scheme(uri)
    if not name or '://' not in uri and name not in ('demo', 'zconfig'):
        raise CommandError(
            '--db %r is not a database URI; use e.g. %s'
            % (redact(uri), EXAMPLES), EXIT_URI)
    if name == 'zeo':
        _netAddress(uri, None)  # a missing port is an error
    original, uri = uri, _canonical(uri)
    try:
        if name == 'postgres':
            try:
                resolver = _postgresResolver()
            except ImportError as e:
                raise CommandError(
                    'postgres:// needs RelStorage and psycopg2 (%s); install '
                    'them with: pip install RelStorage psycopg2-binary'
                    % firstLine(e), EXIT_URI) from None
            factory, raw = resolver(uri)
            factory.dsn = resolver.adapter_helper.dsn  # for diagnostics
        else:
            resolvers = _resolvers()
            if name not in resolvers:
                raise CommandError(
                    'unknown database URI scheme %r in %s; known schemes: '
                    '%s (e.g. %s)' % (name + '://', redact(uri),
                                      ', '.join(sorted(resolvers)),
                                      EXAMPLES), EXIT_URI)
            factory, raw = resolvers[name].load()(uri)
    except CommandError:
        raise
    except Exception as e:
        raise CommandError('malformed database URI %s: %s'
                           % (redact(original), firstLine(e)),
                           EXIT_URI) from None
    return factory, _dbKeywords(dict(raw), original)


# --- reachability --------------------------------------------------------

def _netAddress(uri, default_port):
    """(host, port) of a server URI, None for a unix socket path; a
    missing port is an error when there is no `default_port`."""
    parts = urllib.parse.urlsplit('http' + uri[uri.index(':'):])
    try:
        port = parts.port
    except ValueError:
        raise CommandError('malformed port in database URI %s'
                           % redact(uri), EXIT_URI) from None
    if not parts.netloc:
        return None  # a unix socket path
    host = parts.hostname or '127.0.0.1'
    if port is None and default_port is None:
        raise CommandError(
            'database URI %s has no port: write zeo://%s:PORT with the port '
            'that "zcasync server --address" listens on (e.g. zeo://%s:8100)'
            % (redact(uri), host, host), EXIT_URI)
    return host, port or default_port


def _closeQuietly(probe):
    """Read what the server greets a connection with before closing, so
    that it sees an orderly close rather than a reset (which a ZEO server
    logs as an error)."""
    try:
        probe.settimeout(0.2)
        probe.recv(256)
        probe.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def waitForServer(uri, timeout):
    """Wait until the server of a zeo:// or postgres:// URI accepts TCP
    connections, at most `timeout` seconds; CommandError if it does not."""
    name = scheme(uri)
    if name == 'zeo':
        address, what = _netAddress(uri, None), 'ZEO server'
        hint = 'start it (zcasync server --db file:///path/Data.fs ' \
               '--address HOST:PORT) or fix --db'
    elif name == 'postgres':
        address, what = _netAddress(uri, 5432), 'PostgreSQL server'
        hint = 'start PostgreSQL or fix --db'
    else:
        return
    if address is None:
        return
    deadline = time.monotonic() + max(timeout, 0)
    waiting = False
    while True:
        try:
            with socket.create_connection(
                    address, timeout=max(0.2, min(
                        2.0, deadline - time.monotonic()))) as probe:
                if name == 'zeo':
                    _closeQuietly(probe)
                if waiting:
                    log.info('the %s at %s:%s accepts connections', what,
                             address[0], address[1])
                return
        except OSError as e:
            error = e
        if time.monotonic() >= deadline:
            break
        if not waiting:
            waiting = True
            log.warning('the %s at %s:%s does not accept connections (%s); '
                        'waiting up to %g s for it (--connect-timeout)',
                        what, address[0], address[1], _reason(error),
                        timeout)
        time.sleep(0.2)
    raise CommandError(
        'cannot reach the %s at %s:%s (%s%s); %s'
        % (what, address[0], address[1], _reason(error),
           ', waited %g s' % timeout if timeout > 0 else '', hint),
        EXIT_UNAVAILABLE)


def _reason(error):
    return getattr(error, 'strerror', None) or firstLine(error)


def filePath(uri):
    path = uri.split('file://', 1)[1].split('?', 1)[0]
    return os.path.normpath(path)


def openDatabase(uri, connect_timeout=10.0, create=True):
    """Open the ZODB.DB that `uri` names.

    With ``create=False`` a ``file://`` URI must name an existing file
    (commands that only read or change jobs never create a database).
    """
    import ZODB
    import ZODB.POSException
    factory, dbkw = resolve(uri)
    name = scheme(uri)
    if name == 'file':
        path = filePath(uri)
        if not create and not os.path.exists(path):
            raise CommandError(
                'no database file at %s; check --db (workers and "zcasync '
                'server" create it)' % path, EXIT_UNAVAILABLE)
        directory = os.path.dirname(path) or '.'
        if not os.path.isdir(directory):
            raise CommandError(
                'the directory %s of the database file does not exist; '
                'create it or fix --db' % directory, EXIT_UNAVAILABLE)
    waitForServer(uri, connect_timeout)
    for attempt in range(5):
        try:
            storage = factory()
        except CommandError:
            raise
        except Exception as e:
            dsn = getattr(factory, 'dsn', None)
            problem = historyMismatch(uri, dsn) if dsn else None
            raise CommandError(problem or openError(uri, e),
                               EXIT_UNAVAILABLE) from None
        try:
            return ZODB.DB(storage, **dbkw)
        except Exception as e:
            try:
                storage.close()
            except Exception:
                pass
            if isinstance(e, ZODB.POSException.ConflictError) and \
                    attempt < 4:
                # a brand-new database: another process created its root
                # object at the same moment; open it again
                continue
            raise CommandError(openError(uri, e),
                               EXIT_UNAVAILABLE) from None


def openError(uri, error):
    kind = type(error).__name__
    text = firstLine(error)
    if kind == 'LockError':
        return ('the database file of %s is locked by another process (a '
                'worker or a ZEO server); only one process can open a '
                'FileStorage: run "zcasync server" on it and use zeo://'
                % redact(uri))
    if kind == 'ClientDisconnected':
        return ('cannot connect to the ZEO server of %s (%s); check that '
                'it runs and serves storage "1"' % (redact(uri), text))
    return 'cannot open the database %s: %s: %s' % (redact(uri), kind, text)


def runPgNotify(args):
    """``zcasync pg-notify install|remove|status``."""
    from zcasync import pgnotify
    from zcasync.cli.common import EXIT_OK
    if scheme(args.db) not in ('postgres', 'postgresql'):
        raise CommandError(
            'pg-notify is for RelStorage on PostgreSQL: give --db '
            'postgres://USER@HOST:PORT/DBNAME (not %s)' % redact(args.db),
            EXIT_URI)
    db = openDatabase(args.db, args.connect_timeout)
    try:
        dsn = pgnotify.dsnOf(db)
        try:
            if args.action == 'install':
                changed = pgnotify.installTrigger(dsn)
                text = 'installed' if changed else 'was already installed'
            elif args.action == 'remove':
                changed = pgnotify.removeTrigger(dsn)
                text = 'removed' if changed else 'was not installed'
            else:
                changed = False
            installed = pgnotify.triggerInstalled(dsn)
            if args.action == 'status':
                text = 'installed' if installed else \
                    'not installed: workers poll every poll interval'
        except Exception as e:
            raise CommandError(
                'cannot %s the notify trigger (%s); the database user needs '
                'the right to create functions and triggers'
                % (args.action, firstLine(e)), EXIT_UNAVAILABLE) from None
    finally:
        db.close()
    if getattr(args, 'json', False):
        from zcasync.cli.common import printJson
        printJson({'action': args.action, 'installed': bool(installed),
                   'changed': bool(changed)})
    else:
        print('notify trigger %s' % text)
    return EXIT_OK


def checkFormat(conn):
    """CommandError (EXIT_FORMAT, one line) when this zcasync cannot run
    on the database of `conn` (``zcasync.stable.checkFormat``); the
    connection's transaction is left as it was begun."""
    from zcasync import interfaces
    from zcasync import stable
    conn.transaction_manager.begin()
    try:
        stable.checkFormat(conn.root())
    except interfaces.DatabaseFormatError as e:
        raise CommandError(str(e), EXIT_FORMAT) from None
    finally:
        conn.transaction_manager.abort()
