"""The dashboard's observer of completed jobs (zcasync.web.stats), its
SVG charts and its Prometheus metrics."""
import operator
import xml.etree.ElementTree as ElementTree

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zcasync.web import charts, metrics, stats
from zcasync.web.api import ApiError

from web_support import putJobs, runJobs, startJob


class Sink:
    def __init__(self):
        self.seen = []

    def observe(self, queue, failed, wait, duration):
        self.seen.append((queue, failed, wait, duration))


def test_the_observer_reads_each_completed_job_once(conn, queue, ticking):
    putJobs(conn, (operator.add, 1, 2), (operator.truediv, 1, 0))
    runJobs(conn)  # completed before the observer started
    sink = Sink()
    observer = stats.Observer(sink)
    assert observer.refresh(conn.root()) == 2  # read back (backfill)
    assert sink.seen == []  # ... but not counted: they are the past
    assert observer.queueSummary('') == {
        'completed_last_hour': 2, 'failed_last_hour': 1,
        'throughput_per_minute': 0.4}
    putJobs(conn, *[(operator.truediv, i, i % 2) for i in range(3)])
    runJobs(conn)
    assert observer.refresh(conn.root()) == 3
    assert observer.refresh(conn.root()) == 0
    assert sorted((q, f) for q, f, w, d in sink.seen) == [
        ('', False), ('', True), ('', True)]
    assert all(w is not None and w >= 0 and d >= 0
               for q, f, w, d in sink.seen)
    summary = observer.queueSummary('')
    assert summary['completed_last_hour'] == 5
    assert summary['failed_last_hour'] == 3


def test_jobs_completing_out_of_order_within_the_lookback_are_read(
        conn, queue, ticking):
    """A job whose completion stamp is older than the newest one seen (it
    committed later) is still read once."""
    [late] = putJobs(conn, (operator.add, 1, 1))
    observer = stats.Observer()
    observer.refresh(conn.root())
    putJobs(conn, (operator.add, 2, 2))
    runJobs(conn)  # runs both
    stamp = late.active_end
    assert observer.refresh(conn.root()) == 2
    ticking.advance(2)
    # a job completed (by its stamp) 2 s ago, committed only now
    from zcasync.job import Job
    agent = late.agent
    old = Job(operator.add, 3, 3)
    conn.add(old)
    old()
    old.active_end = stamp
    old.parent = agent
    agent.completed.add(old)
    conn.transaction_manager.commit()
    assert observer.refresh(conn.root()) == 1
    assert observer.refresh(conn.root()) == 0


def test_the_backfill_is_bounded_and_says_from_when_it_is_complete(
        conn, queue, ticking, monkeypatch):
    putJobs(conn, *[(operator.add, i, 0) for i in range(5)])
    ran = runJobs(conn)
    monkeypatch.setattr(stats, 'BACKFILL_LIMIT', 2)
    observer = stats.Observer()
    assert observer.since() is None
    assert observer.refresh(conn.root()) == 2
    # the third newest was not read: figures are complete after it
    assert observer.since() == ran[2].active_end


def test_series_merge_buckets(conn, queue, ticking):
    observer = stats.Observer()
    putJobs(conn, (operator.add, 1, 2))
    runJobs(conn)
    ticking.advance(120)
    putJobs(conn, (operator.truediv, 1, 0), (operator.add, 1, 1))
    runJobs(conn)
    observer.refresh(conn.root())
    series = observer.series(minutes=5, bucket=60)
    assert len(series['times']) == 5
    assert series['completed'][-1] == 2 and series['failed'][-1] == 1
    assert sum(series['completed']) == 3
    assert series['wait_p50'][-1] is not None
    assert series['duration_p95'][1] is None  # no job that minute
    assert observer.series(queue='other', minutes=5)['completed'] == [0] * 5
    for kw in ({'minutes': 0}, {'minutes': 61}, {'bucket': 15},
               {'minutes': 1, 'bucket': 120}):
        with pytest.raises(ApiError):
            observer.series(**kw)


def test_bucket_samples_stay_bounded():
    bucket = stats.Bucket()
    for i in range(stats.SAMPLES * 5):
        bucket.add(i % 7 == 0, i, i * 2)
    assert bucket.completed == stats.SAMPLES * 5
    assert bucket.failed == len([i for i in range(stats.SAMPLES * 5)
                                 if i % 7 == 0])
    assert len(bucket.waits) == len(bucket.durations) == stats.SAMPLES
    assert stats.percentile([3, 1, 2], 0.5) == 2
    assert stats.percentile([], 0.5) is None


@pytest.mark.parametrize('name', charts.CHARTS)
def test_charts_are_well_formed_svg_with_escaped_text(name):
    evil = '<script>alert(1)</script> & "quotes"'
    times = ['2030-01-01T00:0%d:00+00:00' % i for i in range(3)]
    series = {'queue': evil, 'bucket_seconds': 60, 'times': times,
              'end': '2030-01-01T00:03:00+00:00',
              'completed': [0, 5, 2], 'failed': [0, 1, 0],
              'wait_p50': [None, 0.002, 0.004],
              'wait_p95': [None, 0.01, 0.02],
              'duration_p50': [None, 0.5, None],
              'duration_p95': [None, 0.9, None]}
    svg = charts.render(name, series).decode()
    assert '<script' not in svg
    root = ElementTree.fromstring(svg)  # well-formed
    texts = ' '.join(t.text or '' for t in root.iter(
        '{http://www.w3.org/2000/svg}text'))
    assert evil in texts  # shown as text, after unescaping
    assert root.get('aria-label').endswith(repr(evil) + ')')


def test_an_unknown_chart_is_refused():
    with pytest.raises(ValueError, match='unknown chart'):
        charts.render('pie', {'queue': None, 'times': [],
                              'bucket_seconds': 60})


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family, **labels):
    [sample] = [s for s in family.samples if s.labels == labels]
    return sample.value


def test_metrics_read_the_database_and_count_completions(conn, queue,
                                                         ticking):
    queue.quotas.create('db', 2)
    conn.transaction_manager.commit()
    registry = metrics.Metrics()
    observer = stats.Observer(registry)
    observer.refresh(conn.root())
    putJobs(conn, (operator.add, 1, 2), (operator.truediv, 1, 0))
    runJobs(conn)
    observer.refresh(conn.root())
    putJobs(conn, (operator.add, 3, 4), (operator.add, 5, 6))
    startJob(conn)
    ticking.advance(10)
    text = registry.render(conn.root()).decode()
    found = families(text)
    assert all(name.startswith('zcasync_') for name in found)
    jobs = found['zcasync_jobs']
    assert value(jobs, queue='', status='pending') == 1
    assert value(jobs, queue='', status='active') == 1
    assert value(jobs, queue='', status='completed') == 2
    assert value(found['zcasync_jobs_completed'], queue='') == 2
    assert value(found['zcasync_jobs_failed'], queue='') == 1
    run = found['zcasync_job_run_duration_seconds']
    assert [s.value for s in run.samples
            if s.name.endswith('_count')] == [2]
    assert 10 <= value(found['zcasync_queue_oldest_wait_seconds'],
                       queue='') < 11
    assert value(found['zcasync_dispatchers'], queue='', state='alive') == 1
    assert value(found['zcasync_dispatchers'], queue='',
                 state='stopped') == 1
    agent = dict(queue='', dispatcher='12345678-1234-1234-1234-1234567890ab',
                 agent='main')
    assert value(found['zcasync_agent_size'], **agent) == 3
    assert value(found['zcasync_agent_jobs'], **agent) == 1
    assert value(found['zcasync_agent_occupancy_ratio'], **agent) == 1 / 3
    assert value(found['zcasync_quota_size'], queue='', quota='db') == 2
    assert value(found['zcasync_quota_jobs'], queue='', quota='db') == 0
    age = found['zcasync_dispatcher_last_ping_age_seconds']
    assert all(s.value >= 10 for s in age.samples)
    for name in metrics.GAUGES:
        assert name in found, name


def test_a_database_without_queues_has_empty_metrics(conn):
    found = families(metrics.Metrics().render(conn.root()).decode())
    assert sorted(found) == sorted(list(metrics.GAUGES) + [
        'zcasync_jobs_completed', 'zcasync_jobs_failed',
        'zcasync_job_run_duration_seconds',
        'zcasync_job_start_latency_seconds'])
    assert all(f.samples == [] for f in found.values())
