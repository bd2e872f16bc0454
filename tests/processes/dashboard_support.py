"""Helpers for the dashboard's process tests (no tests here): start
``zcasync dashboard`` on a free port, find the port a worker's ``--http``
got, and talk HTTP (JSON, server-sent events)."""
import http.client
import json
import re
import select
import subprocess

from tests.processes.conftest import zcasync, waitFor

WEBJOBS = 'tests.processes.webjobs'
TOKEN = 'process-test-token-7'


def startDashboard(processes, uri, name='dashboard', token=TOKEN,
                   address='127.0.0.1:0'):
    """(process, port) of a dashboard serving `uri`."""
    argv = ['dashboard', '--db', uri, '--address', address, '--import',
            WEBJOBS]
    if token:
        argv += ['--token', token]
    process = processes.start(name, zcasync(*argv), stdout=subprocess.PIPE)
    ready, _, _ = select.select([process.popen.stdout], [], [], 30)
    line = process.popen.stdout.readline().decode() if ready else ''
    found = re.search(r'serving http://127\.0\.0\.1:(\d+)/', line)
    if found is None:
        process.stop()
        raise AssertionError('the dashboard did not start: %r\n%s'
                             % (line, process.text()))
    return process, int(found.group(1))


def workerPort(worker):
    """The port of a worker started with ``--http 127.0.0.1:0``."""
    found = waitFor(lambda: re.search(
        r'dashboard on http://127\.0\.0\.1:(\d+)/', worker.text()), 60,
        'the worker to serve the dashboard')
    return int(found.group(1))


class Http:
    """JSON over HTTP to one server."""

    def __init__(self, port, timeout=30):
        self.port = port
        self.timeout = timeout

    def request(self, method, path, body=None, token=None):
        conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                          timeout=self.timeout)
        headers = {'Content-Type': 'application/json'}
        if token:
            headers['Authorization'] = 'Bearer ' + token
        try:
            conn.request(method, path, body=None if body is None else
                         json.dumps(body), headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, path):
        status, body = self.request('GET', path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def text(self, path):
        status, body = self.request('GET', path)
        assert status == 200, (path, status, body)
        return body.decode()

    def post(self, path, body=None, token=None, status=200):
        code, answer = self.request('POST', path, body or {}, token)
        assert code == status, (path, code, answer)
        return json.loads(answer)

    def events(self):
        """An open event stream (read it with ``nextEvent``)."""
        conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                          timeout=self.timeout)
        conn.request('GET', '/api/events')
        response = conn.getresponse()
        assert response.getheader('Content-Type') == 'text/event-stream'
        response.connection = conn
        return response


def nextEvent(stream):
    """The name of the next event of an event stream."""
    name = None
    while True:
        line = stream.fp.readline().decode()
        if not line:
            raise AssertionError('the event stream ended')
        line = line.rstrip('\n')
        if line.startswith('event: '):
            name = line[7:]
        elif line == '' and name is not None:
            return name


def jobIds(page):
    return [job['id'] for job in page['items']]
