"""The dashboard's JSON API and /metrics against real processes: a ZEO
server, a worker serving the dashboard too (``--http``, read-only) and a
``zcasync dashboard`` with a token.  Jobs run in the worker; the API
follows them, server-sent events announce other processes' commits,
actions need the token and refused ones change nothing."""
import datetime
import subprocess

from prometheus_client.parser import text_string_to_metric_families
import ZODB.utils

from tests.processes import jobfuncs, webjobs
from tests.processes.conftest import (
    Client, ROOT, childEnvironment, readUUID, waitFor, zcasync)
from tests.processes.dashboard_support import (
    Http, TOKEN, WEBJOBS, jobIds, nextEvent, startDashboard, workerPort)


def ident(oid):
    return '%d@unnamed' % ZODB.utils.u64(oid)


def status(api, job_id):
    job = api.get('/api/jobs/' + job_id)
    if job['status'] == 'completed':
        return 'failed' if job['failed'] else 'succeeded'
    return job['status']


def metricValues(text):
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name,) + tuple(sorted(sample.labels.items()))
            values[key] = sample.value
    return values


def test_api_metrics_and_actions_with_a_worker(processes, zeo, tmp_path):
    worker = processes.worker('worker', zeo.uri, None, '--import', WEBJOBS,
                              '--http', '127.0.0.1:0', size=2)
    from_worker = Http(workerPort(worker))
    dashboard, port = startDashboard(processes, zeo.uri)
    api = Http(port)
    uuid = str(readUUID(tmp_path / 'worker.uuid'))
    waitFor(lambda: [d for d in api.get('/api/dispatchers')['items']
                     if d['uuid'] == uuid and d['state'] == 'alive'],
            60, 'the worker to be alive')
    client = Client(zeo.uri)
    try:
        # another process's commit reaches the page as an event
        stream = api.events()
        assert nextEvent(stream) == 'hello'
        log = str(tmp_path / 'runs.log')
        good, bad = map(ident, client.put(
            (jobfuncs.record, 1, log),
            (webjobs.explode, '<script>x</script>')))
        assert nextEvent(stream) == 'changed'
        stream.connection.close()
        waitFor(lambda: status(api, good) == 'succeeded' and
                status(api, bad) == 'failed', 30, 'the jobs to complete')

        [running] = map(ident, client.put(
            (webjobs.steps, str(tmp_path), 2)))
        waitFor(lambda: api.get('/api/overview')['running'] and api.get(
            '/api/overview')['running'][0]['progress'], 30,
            'the job to report progress')
        overview = api.get('/api/overview')
        [row] = overview['running']
        assert row['id'] == running and row['status'] == 'active'
        assert row['progress'] == {'fraction': 0.0, 'done': 0, 'total': 2}
        assert row['status_text'] == 'waiting for step 1 of 2'
        [queue] = overview['queues']
        assert queue['running'] == 1 and queue['capacity'] == 2
        (tmp_path / 'release-1').touch()
        waitFor(lambda: api.get('/api/jobs/' + running)['progress'][
            'fraction'] == 0.5, 30, 'the progress to move')

        assert jobIds(api.get('/api/jobs?state=failed')) == [bad]
        assert jobIds(api.get('/api/jobs?state=succeeded')) == [good]
        assert jobIds(api.get('/api/jobs?state=active')) == [running]
        detail = api.get('/api/jobs/' + bad)
        assert detail['error'] == 'builtins.ValueError: <script>x</script>'
        assert 'ValueError: <script>x</script>' in detail['traceback']
        assert detail['args'] == ['<script>x</script>']

        # refused actions change nothing
        for token in (None, 'wrong'):
            api.post('/api/jobs/%s/retry' % bad, token=token, status=403)
        from_worker.post('/api/jobs/%s/retry' % bad, token=TOKEN,
                         status=403)  # the worker's server is read-only
        client.tm.begin()
        failed = client.conn.get(ZODB.utils.p64(int(bad.split('@')[0])))
        assert 'zcasync.retried_as' not in failed.annotations
        assert len(client.queue()) == 0
        retried = api.post('/api/jobs/%s/retry' % bad, token=TOKEN)
        assert retried['job'] == bad
        new = retried['new_job']
        waitFor(lambda: status(api, new) == 'failed', 30,
                'the retried job to run (and fail again)')
        assert api.get('/api/jobs/' + new)['annotations'][
            'zcasync.retry_of'] == bad

        later = datetime.datetime.now(datetime.timezone.utc) + \
            datetime.timedelta(hours=1)
        [scheduled] = map(ident, client.put(
            (jobfuncs.record, 2, log), begin_after=later))
        assert jobIds(api.get('/api/jobs?state=pending')) == [scheduled]
        api.post('/api/jobs/%s/cancel' % good, token=TOKEN, status=409)
        api.post('/api/jobs/%s/cancel' % scheduled, token=TOKEN)
        assert api.get('/api/overview')['queues'][0]['pending'] == 0

        resized = api.post('/api/agents/resize', {
            'queue': '', 'dispatcher': uuid, 'agent': 'main', 'size': 3},
            token=TOKEN)
        assert resized['previous_size'] == 2
        [mine] = [d for d in api.get('/api/dispatchers')['items']
                  if d['uuid'] == uuid]
        assert mine['agents'][0]['size'] == 3

        values = metricValues(api.text('/metrics'))
        assert values[('zcasync_jobs', ('queue', ''),
                       ('status', 'active'))] == 1
        assert values[('zcasync_jobs_completed_total', ('queue', ''))] == 3
        assert values[('zcasync_jobs_failed_total', ('queue', ''))] == 2
        assert values[('zcasync_job_run_duration_seconds_count',
                       ('queue', ''))] == 3
        assert values[('zcasync_dispatcher_alive', ('dispatcher', uuid),
                       ('queue', ''))] == 1
        assert values[('zcasync_agent_size', ('agent', 'main'),
                       ('dispatcher', uuid), ('queue', ''))] == 3
        worker_values = metricValues(from_worker.text('/metrics'))
        assert worker_values[('zcasync_jobs', ('queue', ''),
                              ('status', 'active'))] == 1

        (tmp_path / 'release-2').touch()
        waitFor(lambda: status(api, running) == 'succeeded', 30,
                'the running job to complete')
    finally:
        client.close()

    # a dashboard on an address in use refuses to start, clearly
    clash = subprocess.run(
        zcasync('dashboard', '--db', zeo.uri, '--address',
                '127.0.0.1:%d' % port), cwd=ROOT, env=childEnvironment(),
        capture_output=True, text=True, timeout=60)
    assert clash.returncode == 10, clash.stderr
    assert 'cannot listen on 127.0.0.1:%d for --address' % port in \
        clash.stderr
    assert TOKEN not in dashboard.text() + worker.text()


def test_prune_removes_a_stopped_worker(processes, zeo, tmp_path):
    first = processes.worker('first', zeo.uri)
    dashboard, port = startDashboard(processes, zeo.uri)
    api = Http(port)
    uuid = str(readUUID(tmp_path / 'first.uuid'))
    waitFor(lambda: [d for d in api.get('/api/dispatchers')['items']
                     if d['uuid'] == uuid and d['state'] == 'alive'],
            60, 'the worker to be alive')
    assert api.post('/api/dispatchers/prune', {'dispatcher': uuid},
                    token=TOKEN, status=409)['error'].startswith(
        'dispatcher %s is alive' % uuid)
    assert first.stop() == 0
    waitFor(lambda: [d for d in api.get('/api/dispatchers')['items']
                     if d['uuid'] == uuid and d['state'] == 'stopped'],
            30, 'the worker to show as stopped')
    pruned = api.post('/api/dispatchers/prune', token=TOKEN)
    assert pruned['pruned'] == [{'queue': '', 'uuid': uuid}]
    assert api.get('/api/dispatchers')['items'] == []
