"""The command-line entry points of the dashboard (whose server lives in
``zcasync.web``): ``zcasync dashboard`` (its own process, its own
database connection) and ``zcasync worker --http ADDRESS`` (the same
server on the worker's reactor and database).

The token that allows actions comes from ``--token`` or the environment
variable ``ZCASYNC_DASHBOARD_TOKEN`` (the only source for a worker); it
is never logged or printed.
"""
import logging
import os

from zcasync.cli.common import (
    CommandError, parseAddress, EXIT_OK, EXIT_ADDRESS)

log = logging.getLogger('zcasync.events')

TOKEN_VARIABLE = 'ZCASYNC_DASHBOARD_TOKEN'
DEFAULT_ADDRESS = '127.0.0.1:8080'


def _listen(dashboard, host, port, option):
    from twisted.internet.error import CannotListenError
    try:
        return dashboard.listen(host, port)
    except CannotListenError as e:
        raise CommandError('cannot listen on %s:%d for %s (%s); pick another '
                           'address' % (host, port, option,
                                        e.socketError), EXIT_ADDRESS) \
            from None


def _mode(token):
    return 'actions allowed with the token' if token else 'read-only'


def serveInWorker(db, reactor, address, environ=None):
    """Serve the dashboard from a worker's reactor; returns it."""
    from zcasync.web.server import Dashboard
    environ = os.environ if environ is None else environ
    host, port = parseAddress(address, '--http', '127.0.0.1:8081')
    token = environ.get(TOKEN_VARIABLE) or None
    dashboard = Dashboard(db, reactor, token=token)
    port = _listen(dashboard, host, port, '--http')
    dashboard.start()
    log.info('dashboard on http://%s:%d/ (%s)', host, port, _mode(token))
    return dashboard


def runDashboard(args):
    """``zcasync dashboard``: serve until SIGTERM or SIGINT."""
    import zcasync.configure
    from zcasync.cli import db as cli_db
    from zcasync.web.server import Dashboard
    host, port = parseAddress(args.address, '--address', DEFAULT_ADDRESS)
    token = args.token or None
    zcasync.configure.base()
    db = cli_db.openDatabase(args.db, args.connect_timeout, create=False)
    try:
        import transaction
        conn = db.open(transaction_manager=transaction.TransactionManager())
        try:
            cli_db.checkFormat(conn)
        finally:
            conn.close()
        from twisted.internet import reactor  # installs the default one
        from twisted.python import log as twisted_log
        dashboard = Dashboard(db, reactor, token=token)
        port = _listen(dashboard, host, port, '--address')
        dashboard.start()
        twisted_log.PythonLoggingObserver('twisted').start()
        log.info('dashboard on http://%s:%d/ for %s (%s)', host, port,
                 cli_db.redact(args.db), _mode(token))
        print('zcasync dashboard: serving http://%s:%d/ (%s)' % (
            host, port, _mode(token)), flush=True)
        reactor.run()
    finally:
        db.close()
    return EXIT_OK
