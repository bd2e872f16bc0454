"""The dashboard's twisted.web server in process: a real reactor in a
thread, a FileStorage, real HTTP.  Routes and error answers, security
headers, server-sent events after a commit, the token on actions, and a
clean stop."""
import http.client
import json
import operator
import queue as queuemodule
import threading
import time

import pytest
import transaction
from twisted.internet import selectreactor

from zcasync.interfaces import KEY
from zcasync.job import Job
from zcasync.queue import Queue, Queues
from zcasync.web.server import Dashboard

TOKEN = 'test-token-123'
WAIT = 10


class Server:
    """A Dashboard on its own reactor thread."""

    def __init__(self, db, token=TOKEN):
        self.db = db
        self.token = token
        self.pool_size = db.getPoolSize()
        ready = queuemodule.Queue()

        def run():
            reactor = selectreactor.SelectReactor()
            dashboard = Dashboard(db, reactor, token=token)
            dashboard.start()
            port = dashboard.listen('127.0.0.1', 0)
            ready.put((reactor, dashboard, port))
            reactor.run(installSignalHandlers=False)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.reactor, self.dashboard, self.port = ready.get(timeout=WAIT)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                          timeout=WAIT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), \
                response.read()
        finally:
            conn.close()

    def json(self, path, status=200, **kw):
        code, headers, body = self.request('GET', path, **kw)
        assert code == status, body
        assert headers['Content-Type'] == 'application/json'
        return json.loads(body)

    def stop(self):
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def server(db):
    conn = db.open(transaction_manager=transaction.TransactionManager())
    queues = conn.root()[KEY] = Queues()
    queues[''] = Queue()
    conn.transaction_manager.commit()
    conn.close()
    running = Server(db)
    yield running
    running.stop()


def test_routes_answer_json_and_clear_errors(server):
    index = server.json('/api')
    assert index['actions'] is True and index['version'] == 1
    assert 'GET /api/overview' in index['endpoints']
    assert server.json('/api/overview')['queues'][0]['name'] == ''
    assert server.json('/api/jobs?state=pending') == {
        'state': 'pending', 'items': [], 'next': None, 'complete': True,
        'scanned': 0, 'limit': 50}
    error = server.json('/api/nowhere', status=404)
    assert error == {'error': 'no API endpoint /api/nowhere (see /api)',
                     'status': 404}
    error = server.json('/api/jobs?state=lost', status=400)
    assert error['error'].startswith("state='lost' is not one of")
    error = server.json('/api/jobs/12345', status=404)
    assert error['error'] == 'no job 12345 in this database'
    error = server.json('/api/charts?minutes=100', status=400)
    assert 'minutes must be an integer from 1 to 60' in error['error']


def test_pages_and_assets_carry_security_headers(server):
    for path, kind in (('/', 'text/html'),
                       ('/static/app.js', 'text/javascript'),
                       ('/static/style.css', 'text/css'),
                       ('/charts/throughput.svg', 'image/svg+xml'),
                       ('/metrics', 'text/plain'), ('/api', 'application')):
        code, headers, body = server.request('GET', path)
        assert code == 200, path
        assert headers['Content-Type'].startswith(kind), path
        assert "script-src 'self'" in headers['Content-Security-Policy']
        assert headers['X-Content-Type-Options'] == 'nosniff'
        assert headers['X-Frame-Options'] == 'DENY'
    assert server.request('GET', '/static/')[0] == 404  # no listing
    assert server.request('GET', '/charts/pie.svg')[0] == 404
    code, headers, body = server.request('GET', '/')
    assert b'<script src="static/app.js" defer></script>' in body
    assert b'<script>' not in body  # no inline script at all


def readEvent(response):
    """The next event's (name, data) from an event stream."""
    name = data = None
    while True:
        line = response.fp.readline().decode()
        if not line:
            raise AssertionError('the event stream ended')
        line = line.rstrip('\n')
        if line.startswith('event: '):
            name = line[7:]
        elif line.startswith('data: '):
            data = json.loads(line[6:])
        elif line == '' and name is not None:
            return name, data


def test_a_commit_sends_a_changed_event(server, db):
    conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                      timeout=WAIT)
    conn.request('GET', '/api/events')
    response = conn.getresponse()
    assert response.getheader('Content-Type') == 'text/event-stream'
    assert readEvent(response)[0] == 'hello'
    tm = transaction.TransactionManager()
    other = db.open(transaction_manager=tm)
    for i in range(2):
        other.root()[KEY][''].put(Job(operator.add, i, 1))
        tm.commit()
        started = time.monotonic()
        name, data = readEvent(response)
        assert name == 'changed', name
        assert time.monotonic() - started < WAIT
    other.close()
    conn.close()
    pending = server.json('/api/overview')['queues'][0]['pending']
    assert pending == 2


def test_actions_need_the_token_and_refusals_write_nothing(server, db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    job = conn.root()[KEY][''].put(Job(operator.add, 1, 2))
    tm.commit()
    job_id = '%d@unnamed' % int.from_bytes(job._p_oid, 'big')
    path = '/api/jobs/%s/cancel' % job_id
    before = db.lastTransaction()
    for headers, message in (
            ({}, 'actions need the dashboard token'),
            ({'Authorization': 'Bearer nope'}, 'wrong token'),
            ({'Authorization': TOKEN}, 'actions need the dashboard token')):
        code, answer, body = server.request('POST', path, b'{}', headers)
        assert code == 403, body
        assert message in json.loads(body)['error']
        assert TOKEN not in body.decode()
    assert db.lastTransaction() == before
    good = {'Authorization': 'Bearer ' + TOKEN}
    for body, status, message in (
            (b'[1]', 400, 'the body must be a JSON object'),
            (b'{oops', 400, 'the body is not JSON'),
            (b' ' * 70000, 413, 'larger than 65536 bytes')):
        code, answer, text = server.request('POST', path, body, good)
        assert code == status and message in json.loads(text)['error']
    assert db.lastTransaction() == before
    code, answer, body = server.request('POST', path, b'', good)
    assert code == 200, body
    assert json.loads(body) == {'action': 'cancel', 'job': job_id,
                                'queue': '', 'outcome': 'cancelled'}
    tm.begin()
    assert len(conn.root()[KEY]['']) == 0
    code, answer, body = server.request('POST', path, b'', good)
    assert code == 409 and 'it is completed' in json.loads(body)['error']
    assert server.request('POST', '/api/overview', b'', good)[0] == 404
    conn.close()


def test_a_dashboard_without_token_is_read_only(db):
    server = Server(db, token=None)
    try:
        assert server.json('/api')['actions'] is False
        code, headers, body = server.request(
            'POST', '/api/dispatchers/prune', b'{}',
            {'Authorization': 'Bearer anything'})
        assert code == 403
        assert 'read-only' in json.loads(body)['error']
    finally:
        server.stop()


def test_stopping_gives_back_threads_and_connections(db):
    before = {t.name for t in threading.enumerate()}
    size = db.getPoolSize()
    server = Server(db)
    server.json('/api/overview')  # a pool thread opened a connection
    assert db.getPoolSize() > size
    assert [t for t in threading.enumerate() if t.name.startswith(
        'PoolThread-zcasync-web')]
    server.stop()
    assert db.getPoolSize() == size
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        left = {t.name for t in threading.enumerate()
                if 'zcasync-web' in t.name} - before
        if not left:
            break
        time.sleep(0.05)
    assert not left
    opened = sum(1 for c in db.pool.all if c.opened)
    assert opened == 0
