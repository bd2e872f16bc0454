"""``zcasync server``: a ZEO server on a FileStorage, in the foreground.

It serves the file as ZEO storage ``'1'`` until SIGTERM or SIGINT, skips
``OID_GAP`` object ids when it starts (see ``skipOids``) and stops in a
way clients ride out (see ``stopServer``).

ZEO logs each client connection, handshake and disconnection at INFO,
five lines for every short ``zcasync`` command; the server keeps ZEO's
own loggers at WARNING unless ``--log-level DEBUG`` asks for everything.
"""
import logging
import os
import signal
import threading
import time

from zcasync.cli.common import (
    CommandError, firstLine, setupLogging, parseAddress, EXIT_OK,
    EXIT_UNAVAILABLE, EXIT_ADDRESS, EXIT_URI)
from zcasync.cli import db as cli_db

log = logging.getLogger('zcasync.events')

#: How many object ids a starting server skips (see ``skipOids``).
OID_GAP = 1 << 20


def skipOids(storage):
    """Start allocating object ids well above the highest one in use.

    ZEO clients fetch new oids 100 at a time and keep the unused ones
    across reconnections, but a restarted FileStorage allocates again from
    its highest *committed* oid: without a gap, a client still holding
    prefetched ids and a client fetching fresh ones store different
    objects under one oid ("A different object already has the same oid",
    or worse).  Skipping 2**20 ids per start costs nothing (oids are 64
    bits) and is safe for up to ten thousand connected clients.
    """
    from ZODB.utils import p64, u64
    storage.set_max_oid(p64(u64(storage.new_oid()) + OID_GAP))


def clients(server):
    """The client connections (``ZEOStorage`` objects) a ZEO
    ``StorageServer`` serves now."""
    return [zeo_storage
            for zeo_storages in server.zeo_storages_by_storage_id.values()
            for zeo_storage in list(zeo_storages)]


def stopServer(server, timeout=2.0):
    """Stop listening, close the client connections, wait until they are
    closed (at most `timeout` seconds), then close the server and its
    storage; returns how many clients were connected.

    ``StorageServer.close`` alone closes the storage while the event loop
    may still be serving requests of connected clients: those requests
    fail with ``ServerException: ValueError('closed')``, which clients do
    not retry.  Closing the connections first, in the server's event loop,
    lets clients see a plain disconnection, which they ride out by
    reconnecting.  A connection closed by the server is not removed from
    the server's books, so the wait watches each connection's own
    ``connected`` flag (cleared when its socket is closed).
    """
    acceptor = server.acceptor
    closing = []
    done = threading.Event()

    def closeConnections():
        # in the event loop's thread, where ZEO's connections live
        try:
            acceptor.server.close()  # accept no new connection
            closing.extend(clients(server))
            for zeo_storage in closing:
                zeo_storage.connection.close()
        finally:
            done.set()
    acceptor.event_loop.call_soon_threadsafe(closeConnections)
    done.wait(timeout)
    deadline = time.monotonic() + timeout
    while any(getattr(zs.connection, 'connected', False) for zs in closing):
        if time.monotonic() > deadline:
            log.warning('client connection(s) still open after %g s; '
                        'closing the server anyway', timeout)
            break
        time.sleep(0.01)
    server.close()
    return len(closing)


def quietZEO(level):
    """ZEO's own loggers at WARNING unless `level` is DEBUG or lower."""
    if level > logging.DEBUG:
        logging.getLogger('ZEO').setLevel(max(level, logging.WARNING))


def runServer(args):
    from ZODB.FileStorage import FileStorage
    if cli_db.scheme(args.db) != 'file':
        raise CommandError(
            'zcasync server serves a FileStorage: give --db '
            'file:///path/Data.fs (not %s); workers then use --db '
            'zeo://HOST:PORT' % cli_db.redact(args.db), EXIT_URI)
    address = parseAddress(args.address)
    setupLogging(args.log_level)
    quietZEO(args.log_level)
    path = cli_db.filePath(args.db)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CommandError(
            'the directory of %s does not exist; create it or fix --db'
            % path, EXIT_UNAVAILABLE)
    try:
        storage = FileStorage(path)
    except Exception as e:
        raise CommandError(cli_db.openError(args.db, e),
                           EXIT_UNAVAILABLE) from None
    skipOids(storage)
    from ZEO.StorageServer import StorageServer
    try:
        server = StorageServer(address, {'1': storage})
    except OSError as e:
        storage.close()
        raise CommandError(
            'cannot listen on %s:%d (%s); pick another --address'
            % (address[0], address[1], e.strerror or firstLine(e)),
            EXIT_ADDRESS) from None
    stop = threading.Event()
    received = []

    def signalled(signum, frame):
        received.append(signal.Signals(signum).name)
        stop.set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signalled)
    server.start_thread()
    host, port = server.addr[:2]
    log.info('serving %s over ZEO on %s:%d', path, host, port)
    print('zcasync server: serving %s on %s:%d' % (path, host, port),
          flush=True)
    # the handler runs in this (the main) thread, between the waits
    while not stop.wait(0.05):
        pass
    log.info('%s: stopping the ZEO server', received[0])
    count = stopServer(server)
    log.info('ZEO server stopped (%d client(s) disconnected); %s closed',
             count, path)
    return EXIT_OK
