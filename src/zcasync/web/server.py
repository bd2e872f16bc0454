"""Serving the dashboard with ``twisted.web``.

A ``Dashboard`` runs on a reactor (the dashboard command's, or a
worker's beside its dispatcher) and never reads the database in the
reactor's thread:

- API calls and ``/metrics`` run in a small thread pool, each thread with
  its own connection, in a fresh read-only transaction per call;
- a refresher thread keeps the ``stats.Observer`` up to date.  It wakes
  when ``zcasync.invalidations`` hears a commit (the listener only sets a
  flag: it is called in the committing thread or ZEO's I/O thread) and
  every few seconds; after a refresh caused by a commit it has the
  ``EventStream`` send a ``changed`` server-sent event (at most four a
  second), and the page refetches the JSON it shows;
- actions (POST) check the token in the reactor's thread first, then
  write in a pool thread (``actions.perform``).

Every response carries a strict Content-Security-Policy (scripts and
styles only from this server, no inline script), ``nosniff`` and
``DENY`` framing; JSON escapes ``<``, ``>`` and ``&``.
"""
import json
import logging
import os
import threading
import time
import urllib.parse

import transaction
from twisted.internet import defer, task, threads
from twisted.python.threadpool import ThreadPool
from twisted.web import pages, resource, server

from zcasync import invalidations
from zcasync import utils
from zcasync.web import actions, api, charts, metrics, stats
from zcasync.web.api import ApiError
from zcasync.web.listing import JobQuery

log = logging.getLogger('zcasync.events')
tracelog = logging.getLogger('zcasync.trace')

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
API_VERSION = 1
BODY_LIMIT = 65536
MAX_EVENT_CLIENTS = 200
SECURITY_HEADERS = {
    b'Content-Security-Policy': (
        b"default-src 'self'; script-src 'self'; style-src 'self'; "
        b"img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    b'X-Content-Type-Options': b'nosniff',
    b'X-Frame-Options': b'DENY',
    b'Referrer-Policy': b'no-referrer',
    b'Cache-Control': b'no-store',
}


def dumps(data):
    text = json.dumps(data, ensure_ascii=True, allow_nan=False)
    return text.replace('<', '\\u003c').replace('>', '\\u003e').replace(
        '&', '\\u0026').encode()


class Request(server.Request):

    def process(self):
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


class Site(server.Site):
    """Access lines go to ``zcasync.trace`` at DEBUG (no headers, so no
    token, ever)."""

    requestFactory = Request

    def log(self, request):
        if tracelog.isEnabledFor(logging.DEBUG):
            tracelog.debug('web %s %s %s %s', request.getClientAddress(),
                           request.method.decode('ascii', 'replace'),
                           request.uri.decode('ascii', 'replace')[:300],
                           request.code)


class EventStream:
    """Server-sent events: ``hello`` on connect, ``changed`` after
    commits (coalesced), a comment every few seconds as keep-alive."""

    MIN_GAP = 0.25

    def __init__(self, reactor):
        self.reactor = reactor
        self.clients = set()
        self.sequence = 0
        self._last = 0.0
        self._pending = None

    def add(self, request):
        if len(self.clients) >= MAX_EVENT_CLIENTS:
            request.setResponseCode(503)
            return b'too many event streams'
        request.setHeader(b'Content-Type', b'text/event-stream')
        request.setHeader(b'X-Accel-Buffering', b'no')
        request.write(b'retry: 2000\nevent: hello\ndata: {"sequence": %d}\n\n'
                      % self.sequence)
        self.clients.add(request)
        request.notifyFinish().addBoth(
            lambda ignored: self.clients.discard(request))
        return server.NOT_DONE_YET

    def changed(self):
        """A commit was heard and the statistics refreshed (reactor
        thread): tell every page, at most every MIN_GAP seconds."""
        if self._pending is not None and self._pending.active():
            return
        wait = self._last + self.MIN_GAP - time.monotonic()
        if wait > 0:
            self._pending = self.reactor.callLater(wait, self._send)
        else:
            self._send()

    def _send(self):
        self._pending = None
        self._last = time.monotonic()
        self.sequence += 1
        self._write(b'event: changed\ndata: {"sequence": %d}\n\n'
                    % self.sequence)

    def keepalive(self):
        self._write(b': keep-alive\n\n')

    def _write(self, data):
        for request in list(self.clients):
            try:
                request.write(data)
            except Exception:
                self.clients.discard(request)

    def close(self):
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        for request in list(self.clients):
            self.clients.discard(request)
            try:
                request.finish()
            except Exception:
                pass


class Refresher(threading.Thread):
    """Keeps the observer current; see the module docstring."""

    MIN_GAP = 0.1

    def __init__(self, dashboard):
        super().__init__(name='zcasync-web-refresher', daemon=True)
        self.dashboard = dashboard
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = False
        self._failures = 0

    def request(self, changed=False):
        if changed:
            self._changed = True
        self._wake.set()

    def stop(self):
        self._stopping.set()
        self._wake.set()

    def run(self):
        dashboard = self.dashboard
        tm = transaction.TransactionManager()
        conn = dashboard.db.open(transaction_manager=tm)
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                changed, self._changed = self._changed, False
                try:
                    tm.begin()
                    dashboard.observer.refresh(conn.root())
                    self._failures = 0
                except Exception:
                    self._failures += 1
                    if self._failures in (1, 10) or not \
                            self._failures % 100:
                        utils.safeLog(log, logging.ERROR,
                                      'dashboard: reading statistics failed '
                                      '(%d time(s)):\n%s', self._failures,
                                      utils.formatException())
                finally:
                    tm.abort()
                conn.cacheGC()
                if changed:
                    dashboard.reactor.callFromThread(dashboard.events.changed)
                if self._stopping.wait(self.MIN_GAP):
                    return
        finally:
            tm.abort()
            conn.close()


class Dashboard:
    """``Dashboard(db, reactor, token=None)``: ``start()`` it, then
    ``listen(host, port)``; it stops with the reactor."""

    TICK = 5.0

    def __init__(self, db, reactor, token=None, threads=3):
        self.db = db
        self.reactor = reactor
        self.token = token or None
        self.threads = threads
        self.metrics = metrics.Metrics()
        self.observer = stats.Observer(self.metrics)
        self.events = EventStream(reactor)
        self.pool = ThreadPool(1, threads, name='zcasync-web')
        self.refresher = Refresher(self)
        self._local = threading.local()
        self._connections = []
        self._lock = threading.Lock()
        self._watch = None
        self._ticker = None
        self.ports = []
        self.started = False

    def start(self):
        if self.started:
            return
        self.started = True
        self.db.setPoolSize(self.db.getPoolSize() + self.threads + 1)
        self.pool.start()
        self.refresher.start()
        self.refresher.request(changed=True)
        self._watch = invalidations.watch(self.db, self._invalidated)
        self.reactor.addSystemEventTrigger('before', 'shutdown', self.stop)
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.TICK, now=False)

    def listen(self, host, port):
        """Listen on host:port (port 0 picks one); returns the port."""
        site = Site(Root(self), reactor=self.reactor)
        listening = self.reactor.listenTCP(port, site, interface=host)
        self.ports.append(listening)
        return listening.getHost().port

    def _invalidated(self, oids, committing_instance):
        self.refresher.request(changed=True)

    def _tick(self):
        self.refresher.request()
        self.events.keepalive()

    def stop(self):
        if not self.started:
            return
        self.started = False
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        for listening in self.ports:
            listening.stopListening()
        self.events.close()
        self.refresher.stop()
        self.pool.stop()
        self.refresher.join(10)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.transaction_manager.abort()
                conn.close()
            except Exception:
                pass
        self.db.setPoolSize(max(1, self.db.getPoolSize() - self.threads - 1))

    # -- database work in the pool --------------------------------------------

    def _connection(self):
        conn = getattr(self._local, 'conn', None)
        if conn is None:
            conn = self.db.open(
                transaction_manager=transaction.TransactionManager())
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _inTransaction(self, func, args):
        conn = self._connection()
        tm = conn.transaction_manager
        tm.begin()
        try:
            return func(conn, *args)
        finally:
            tm.abort()

    def call(self, func, *args):
        """A Deferred firing with ``func(conn, *args)``, run in a pool
        thread in its own transaction (aborted afterwards)."""
        return threads.deferToThreadPool(self.reactor, self.pool,
                                         self._inTransaction, func, args)


# --- resources ---------------------------------------------------------------

def _arguments(request):
    try:
        return {k.decode('utf-8'): [v.decode('utf-8') for v in values]
                for k, values in request.args.items()}
    except UnicodeDecodeError:
        raise ApiError(400, 'query arguments must be UTF-8') from None


def _intArgument(args, name, default, low, high):
    values = args.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, '%s must be an integer from %d to %d, not %r'
                       % (name, low, high, values[0]))
    return value


def _series(dashboard, args):
    queue = args['queue'][0] if 'queue' in args else None
    return dashboard.observer.series(
        queue=queue, minutes=_intArgument(args, 'minutes', 60, 1, 60),
        bucket=_intArgument(args, 'bucket', 60, 10, 3600))


CONTENT_TYPES = {'.html': 'text/html; charset=utf-8',
                 '.js': 'text/javascript; charset=utf-8',
                 '.css': 'text/css; charset=utf-8'}


class Folder(resource.Resource):
    """Children by name; anything else is a plain 404."""

    def getChild(self, name, request):
        return pages.notFound()


class Bytes(resource.Resource):
    """A file held in memory, written at once (``static.File`` streams
    through the global reactor's cooperator, which a dashboard on another
    reactor does not run)."""

    isLeaf = True

    def __init__(self, data, content_type):
        super().__init__()
        self.data = data
        self.content_type = content_type.encode()

    def render_GET(self, request):
        request.setHeader(b'Content-Type', self.content_type)
        return self.data


def staticFiles():
    """name -> Bytes for the files of static/ (small; read once)."""
    files = {}
    for name in sorted(os.listdir(STATIC)):
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1])
        if kind is not None:
            with open(os.path.join(STATIC, name), 'rb') as f:
                files[name.encode()] = Bytes(f.read(), kind)
    return files


class Root(Folder):

    def __init__(self, dashboard):
        super().__init__()
        files = staticFiles()
        assets = Folder()
        for name, data in files.items():
            assets.putChild(name, data)
        self.putChild(b'', files[b'index.html'])
        self.putChild(b'static', assets)
        self.putChild(b'api', Api(dashboard))
        self.putChild(b'metrics', Metrics(dashboard))
        self.putChild(b'charts', Charts(dashboard))


class _Deferring(resource.Resource):
    """Answers from a Deferred; errors become JSON (or text) answers."""

    isLeaf = True

    def __init__(self, dashboard):
        super().__init__()
        self.dashboard = dashboard

    def _answer(self, request, deferred, content_type):
        gone = []
        request.notifyFinish().addErrback(lambda f: gone.append(f))

        def send(body):
            if not gone:
                request.setHeader(b'Content-Type', content_type)
                request.write(body)
                request.finish()

        def fail(failure):
            if not gone:
                request.write(self._error(request, failure.value))
                request.finish()
        deferred.addCallback(send).addErrback(fail)
        return server.NOT_DONE_YET

    def _error(self, request, error):
        if isinstance(error, ApiError):
            status, message = error.status, error.message
        elif type(error).__name__ == 'ClientDisconnected':
            status = 503
            message = ('the database server cannot be reached; the '
                       'dashboard reconnects by itself, try again soon')
        else:
            status = 500
            message = 'internal error (%s); see the dashboard log' % (
                type(error).__name__,)
            utils.safeLog(log, logging.ERROR, 'dashboard: %s %s failed: '
                          '%s: %s', request.method, request.path,
                          type(error).__name__, api.firstLine(error))
        request.setResponseCode(status)
        request.setHeader(b'Content-Type', b'application/json')
        return dumps({'error': message, 'status': status})


class Api(_Deferring):

    def _route(self, request):
        parts = [p.decode('utf-8', 'replace') for p in request.postpath]
        while parts and parts[-1] == '':
            parts.pop()
        return parts

    def render_GET(self, request):
        try:
            parts = self._route(request)
            args = _arguments(request)
            d = self.dashboard
            if parts == ['events']:
                return d.events.add(request)
            if parts == []:
                call = d.call(self._index)
            elif parts == ['overview']:
                call = d.call(lambda conn: api.overview(
                    conn.root(), utils.now(), d.observer))
            elif parts == ['dispatchers']:
                queue = args['queue'][0] if 'queue' in args else None
                call = d.call(lambda conn: api.dispatchers(
                    conn.root(), utils.now(), queue))
            elif parts == ['jobs']:
                query = JobQuery.fromArgs(args)
                call = d.call(lambda conn: query.run(conn.root()))
            elif len(parts) == 2 and parts[0] == 'jobs':
                call = d.call(lambda conn: api.jobDetail(
                    api.findJob(conn, parts[1])))
            elif parts == ['quotas']:
                call = d.call(lambda conn: api.quotas(conn.root()))
            elif parts == ['charts']:
                call = defer.succeed(_series(d, args))
            else:
                raise ApiError(404, 'no API endpoint /api/%s (see /api)'
                               % '/'.join(parts))
        except ApiError as e:
            return self._error(request, e)
        return self._answer(request, call.addCallback(dumps),
                            b'application/json')

    def _index(self, conn):
        return {
            'version': API_VERSION,
            'database': conn.db().database_name,
            'actions': self.dashboard.token is not None,
            'progress_annotation': api.PROGRESS,
            'status_annotation': api.STATUS_TEXT,
            'endpoints': [
                'GET /api', 'GET /api/overview', 'GET /api/dispatchers',
                'GET /api/jobs', 'GET /api/jobs/{id}', 'GET /api/quotas',
                'GET /api/charts', 'GET /api/events',
                'POST /api/jobs/{id}/retry', 'POST /api/jobs/{id}/cancel',
                'POST /api/agents/resize', 'POST /api/dispatchers/prune',
                'GET /metrics', 'GET /charts/{name}.svg'],
        }

    def render_POST(self, request):
        try:
            parts = self._route(request)
            if len(parts) == 3 and parts[0] == 'jobs' and \
                    parts[2] in ('retry', 'cancel'):
                name, target = parts[2], parts[1]
            elif parts == ['agents', 'resize']:
                name, target = 'resize', None
            elif parts == ['dispatchers', 'prune']:
                name, target = 'prune', None
            else:
                raise ApiError(404, 'no action at /api/%s (see /api)'
                               % '/'.join(parts))
            header = request.getHeader(b'authorization')
            try:
                actions.checkToken(self.dashboard.token, header and
                                   header.decode('utf-8', 'replace'))
            except ApiError as e:
                log.warning('dashboard: refused %s from %s: %s', name,
                            request.getClientAddress().host, e.message)
                raise
            body = self._body(request)
        except ApiError as e:
            return self._error(request, e)
        client = request.getClientAddress().host
        call = self.dashboard.call(actions.perform, name, target, body)

        def done(result):
            log.info('dashboard: %s by %s: %s', name, client,
                     json.dumps(result, sort_keys=True))
            return dumps(result)
        return self._answer(request, call.addCallback(done),
                            b'application/json')

    def _body(self, request):
        raw = request.content.read(BODY_LIMIT + 1) if request.content \
            else b''
        if len(raw) > BODY_LIMIT:
            raise ApiError(413, 'the JSON body is larger than %d bytes'
                           % BODY_LIMIT)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, 'the body is not JSON: %s' % e) from None
        if not isinstance(body, dict):
            raise ApiError(400, 'the body must be a JSON object')
        return body


class Metrics(_Deferring):

    def render_GET(self, request):
        call = self.dashboard.call(
            lambda conn: self.dashboard.metrics.render(conn.root()))
        return self._answer(request, call, metrics.CONTENT_TYPE.encode())


class Charts(_Deferring):

    def render_GET(self, request):
        try:
            parts = [p.decode('utf-8', 'replace') for p in request.postpath]
            name = parts[0][:-4] if len(parts) == 1 and \
                parts[0].endswith('.svg') else None
            if name not in charts.CHARTS:
                raise ApiError(404, 'no chart %s; charts: %s' % (
                    urllib.parse.quote('/'.join(parts)), ', '.join(
                        '/charts/%s.svg' % c for c in charts.CHARTS)))
            body = charts.render(name, _series(self.dashboard,
                                               _arguments(request)))
        except ApiError as e:
            return self._error(request, e)
        request.setHeader(b'Content-Type', b'image/svg+xml')
        return body
