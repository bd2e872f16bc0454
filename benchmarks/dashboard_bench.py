"""The dashboard at scale: how long each page, API call and /metrics
takes with many completed and pending jobs.

A FileStorage is filled in this process: ``dashboard_completed`` jobs
completed (one in ten failed) spread over three dispatchers' agents,
``dashboard_pending`` jobs pending in the primary queue, three jobs
running with a progress annotation and a quota.  Completed jobs are run
in place before they are stored (``job()`` on an unstored job commits
nothing), then added to their agent's completed collection, 1,000 per
commit: the same objects and keys a worker leaves, without running a
worker for minutes.  Then ``zcasync dashboard --db file://...`` is
started and each URL is requested once cold (its first request), then
``requests`` times, one at a time, from this process.
"""
import http.client
import json
import operator
import os
import re
import time
import uuid

import transaction
import ZODB
import ZODB.FileStorage

from benchmarks import jobs, support
from benchmarks.support import BenchmarkError

#: (label, path) of each request timed; {failed} is a failed job's id
REQUESTS = [
    ('page /', '/'),
    ('/api/overview', '/api/overview'),
    ('/api/dispatchers', '/api/dispatchers'),
    ('/api/jobs pending', '/api/jobs?state=pending'),
    ('/api/jobs pending, page 20', None),
    ('/api/jobs completed', '/api/jobs?state=completed'),
    ('/api/jobs failed', '/api/jobs?state=failed'),
    ('/api/jobs callable filter, no match',
     '/api/jobs?state=completed&callable=nothing.matches'),
    ('/api/jobs running', '/api/jobs?state=running'),
    ('/api/jobs/{id} failed job', '/api/jobs/{failed}'),
    ('/api/quotas', '/api/quotas'),
    ('/api/charts', '/api/charts?minutes=60&bucket=60'),
    ('/charts/throughput.svg', '/charts/throughput.svg'),
    ('/metrics', '/metrics'),
]


def fill(directory, completed, pending, batch=1000, progress=None):
    """Fill directory/Data.fs; returns the id of a failed job."""
    import zcasync.configure
    from zcasync.agent import Agent
    from zcasync.interfaces import KEY
    from zcasync.job import Job
    from zcasync.queue import Queue, Queues
    zcasync.configure.base()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'Data.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queues = conn.root()[KEY] = Queues()
        queues[''] = Queue()
        queue = queues['']
        queue.quotas.create('reports', 2)
        agents = []
        for i in range(3):
            uid = uuid.uuid4()
            queue.dispatchers.register(uid)
            registration = queue.dispatchers[uid]
            registration['main'] = Agent(size=4)
            registration.activate()
            agents.append(registration['main'])
        tm.commit()
        failed = None
        for start in range(0, completed, batch):
            for i in range(start, min(completed, start + batch)):
                job = Job(operator.truediv, 1, 0) if i % 10 == 9 \
                    else Job(jobs.noop)
                job()  # unstored: runs in place, commits nothing
                conn.add(job)
                job.parent = agent = agents[i % len(agents)]
                agent.completed.add(job)
                if failed is None and i % 10 == 9:
                    failed = job
            tm.commit()
            if progress and not (start // batch) % 20:
                progress('dashboard benchmark: %d of %d completed jobs '
                         'stored', start + batch, completed)
        for start in range(0, pending, batch):
            for i in range(min(batch, pending - start)):
                queue.put(Job(jobs.noop))
            tm.commit()
        for agent in agents:
            job = agent.claimJob()
            job._activate()
            job.annotations['progress'] = (3, 10)
        tm.commit()
        return '%d@%s' % (int.from_bytes(failed._p_oid, 'big'),
                          db.database_name)
    finally:
        tm.abort()
        conn.close()
        db.close()


class Dashboard:
    """``zcasync dashboard`` on directory/Data.fs, or on `uri`."""

    def __init__(self, directory, uri=None):
        uri = uri or 'file://' + os.path.join(directory, 'Data.fs')
        self.command = support.zcasyncCommand() + [
            'dashboard', '--db', uri, '--address', '127.0.0.1:0',
            '--log-level', 'WARNING']
        self.log = os.path.join(directory, 'dashboard.log')
        self.out = os.path.join(directory, 'dashboard.out')
        with open(self.out, 'wb') as out:
            self.process = support.spawn(self.command, self.log, stdout=out)
        self.port = None
        deadline = time.monotonic() + 120
        while self.port is None:
            with open(self.out) as f:
                found = re.search(r'serving http://127\.0\.0\.1:(\d+)/',
                                  f.read())
            if found:
                self.port = int(found.group(1))
            elif self.process.poll() is not None or \
                    time.monotonic() > deadline:
                raise BenchmarkError('the dashboard did not start (see %s)'
                                     % self.log)
            else:
                time.sleep(0.05)

    def get(self, path):
        """(seconds, body) of one GET."""
        conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                          timeout=60)
        try:
            started = time.perf_counter()
            conn.request('GET', path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
        if response.status != 200:
            raise BenchmarkError('GET %s answered %d: %s' % (
                path, response.status, body[:300]))
        return elapsed, body

    def close(self):
        support.stop(self.process)
        support.checkLog(self.log, 'the dashboard')


def measure(directory, failed, requests, progress=None):
    """{label: (cold ms, [warm ms, ...])} for each of REQUESTS."""
    dashboard = Dashboard(directory)
    figures = {}
    try:
        # the page 20 cursor, from following the pending list
        path = '/api/jobs?state=pending'
        for page in range(19):
            cursor = json.loads(dashboard.get(path)[1])['next']
            path = '/api/jobs?state=pending&cursor=' + cursor
        for label, url in REQUESTS:
            url = path if url is None else url.format(failed=failed)
            cold = dashboard.get(url)[0]
            warm = [dashboard.get(url)[0] for i in range(requests)]
            figures[label] = (cold * 1000, [w * 1000 for w in warm])
            if progress:
                progress('dashboard %s: cold %.1f ms, warm p50 %.1f ms, '
                         'max %.1f ms', label, cold * 1000,
                         support.median(warm) * 1000, max(warm) * 1000)
        overview = json.loads(dashboard.get('/api/overview')[1])
        figures['~overview'] = overview
    finally:
        dashboard.close()
    return figures


def _nextEvent(stream):
    name = None
    while True:
        line = stream.fp.readline().decode()
        if not line:
            raise BenchmarkError('the event stream ended')
        line = line.rstrip('\n')
        if line.startswith('event: '):
            name = line[7:]
        elif line == '' and name is not None:
            return name


def liveLatency(directory, sizes, count, gap=0.3):
    """Milliseconds from the start of a put (in its own transaction, over
    ZEO) to the dashboard's ``changed`` event, `count` times: what a page
    waits before it refetches.  The puts are `gap` seconds apart, more
    than the events' minimum spacing (``EventStream.MIN_GAP``): closer
    commits are announced together, at most four times a second."""
    from benchmarks.zeo_bench import Cluster
    from zcasync.job import Job
    cluster = Cluster(directory, 0, sizes)
    with cluster:
        dashboard = Dashboard(directory, cluster.uri)
        try:
            conn = http.client.HTTPConnection('127.0.0.1', dashboard.port,
                                              timeout=60)
            conn.request('GET', '/api/events')
            stream = conn.getresponse()
            if _nextEvent(stream) != 'hello':
                raise BenchmarkError('no hello event from the dashboard')
            values = []
            for i in range(count):
                time.sleep(gap)
                started = time.perf_counter()
                cluster.queue.put(Job(jobs.noop))
                cluster.tm.commit()
                if _nextEvent(stream) != 'changed':
                    raise BenchmarkError('an unexpected event')
                values.append((time.perf_counter() - started) * 1000)
            conn.close()
        finally:
            dashboard.close()
    return values
