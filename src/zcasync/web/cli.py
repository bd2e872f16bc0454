"""The command-line entry points of the dashboard: ``zcasync dashboard``
(its own process, its own database connection) and ``zcasync worker
--http ADDRESS`` (the same server on the worker's reactor and database).

The token that allows actions comes from ``--token`` or the environment
variable ``ZCASYNC_DASHBOARD_TOKEN`` (the only source for a worker); it
is never logged or printed.
"""
import logging
import os

from zcasync.cli_common import CommandError, EXIT_OK, EXIT_USAGE, \
    EXIT_ADDRESS

log = logging.getLogger('zcasync.events')

TOKEN_VARIABLE = 'ZCASYNC_DASHBOARD_TOKEN'
DEFAULT_ADDRESS = '127.0.0.1:8080'


def parseAddress(text, option):
    host, sep, port = str(text).rpartition(':')
    host = host.strip('[]')
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise CommandError(
            '%s %r is not HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a '
            'free port)' % (option, text), EXIT_USAGE)
    return host, number


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
    host, port = parseAddress(address, '--http')
    token = environ.get(TOKEN_VARIABLE) or None
    dashboard = Dashboard(db, reactor, token=token)
    port = _listen(dashboard, host, port, '--http')
    dashboard.start()
    log.info('dashboard on http://%s:%d/ (%s)', host, port, _mode(token))
    return dashboard


def runDashboard(args):
    """``zcasync dashboard``: serve until SIGTERM or SIGINT."""
    import zcasync.configure
    from zcasync import cli_db
    from zcasync.web.server import Dashboard
    host, port = parseAddress(args.address, '--address')
    token = args.token or None
    zcasync.configure.base()
    db = cli_db.openDatabase(args.db, args.connect_timeout, create=False)
    try:
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
