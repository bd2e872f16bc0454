"""``/metrics``: Prometheus text format through ``prometheus_client``.

Gauges are read from the database at each scrape (lengths and the few
jobs agents hold: a scrape never walks the queues or the completed
jobs); the counters and histograms are fed by ``stats.Observer`` with the
jobs that completed since this process started.  Every metric is named
``zcasync_...``; README's "Metrics" table documents each one.  The
registry is private to the dashboard (no process or platform metrics).
"""
import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
    generate_latest)
from prometheus_client.core import GaugeMetricFamily

from zcasync import utils
from zcasync.web import api

CONTENT_TYPE = CONTENT_TYPE_LATEST
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
               30, 60, 300, 900, 3600)
START_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                 1, 2.5, 5, 10, 30, 60, 300, 3600)
STATUSES = ('pending', 'assigned', 'active', 'callbacks', 'completed')

#: name -> (help, labels) of the gauges read at each scrape
GAUGES = {
    'zcasync_jobs': (
        'Jobs by queue and status: pending in the queue, held by agents '
        '(assigned, active, callbacks), completed and kept by agents',
        ('queue', 'status')),
    'zcasync_queue_oldest_wait_seconds': (
        'How long the first due job of the queue has waited since its '
        'begin time (0 when none is due)', ('queue',)),
    'zcasync_dispatchers': (
        'Dispatcher registrations by queue and state (alive, dead, '
        'stopped)', ('queue', 'state')),
    'zcasync_dispatcher_alive': (
        '1 when the dispatcher is activated and pings in time, else 0',
        ('queue', 'dispatcher')),
    'zcasync_dispatcher_last_ping_age_seconds': (
        'Seconds since the dispatcher last pinged', ('queue', 'dispatcher')),
    'zcasync_agent_size': (
        'How many jobs the agent runs at once', ('queue', 'dispatcher',
                                                 'agent')),
    'zcasync_agent_jobs': (
        'Jobs the agent holds now (claimed and not completed)',
        ('queue', 'dispatcher', 'agent')),
    'zcasync_agent_occupancy_ratio': (
        'Held jobs divided by size (absent when the size is 0)',
        ('queue', 'dispatcher', 'agent')),
    'zcasync_quota_size': (
        'How many jobs of the quota may run at once', ('queue', 'quota')),
    'zcasync_quota_jobs': (
        'Jobs holding room in the quota now', ('queue', 'quota')),
}


def gauges(root, now=None):
    """{metric name: [(label values, value)]} read from the database."""
    now = now or utils.now()
    values = {name: [] for name in GAUGES}
    for name, queue in api.queuesOf(root):
        counts = dict.fromkeys(STATUSES, 0)
        counts['pending'] = len(queue)
        states = {'alive': 0, 'dead': 0, 'stopped': 0}
        for uuid, agents in queue.dispatchers.items():
            state = api.registrationState(agents)
            states[state] += 1
            dispatcher = str(uuid)
            values['zcasync_dispatcher_alive'].append(
                ((name, dispatcher), 1 if state == 'alive' else 0))
            last = agents.last_ping.value
            if last is not None:
                values['zcasync_dispatcher_last_ping_age_seconds'].append(
                    ((name, dispatcher),
                     (now - last).total_seconds()))
            for agent_name, agent in agents.items():
                labels = (name, dispatcher, agent_name)
                held = 0
                for job in agent:
                    held += 1
                    status = api.statusName(job.status)
                    counts[status] = counts.get(status, 0) + 1
                counts['completed'] += len(agent.completed)
                values['zcasync_agent_size'].append((labels, agent.size))
                values['zcasync_agent_jobs'].append((labels, held))
                if agent.size:
                    values['zcasync_agent_occupancy_ratio'].append(
                        (labels, held / agent.size))
        for status, count in counts.items():
            values['zcasync_jobs'].append(((name, status), count))
        for state, count in states.items():
            values['zcasync_dispatchers'].append(((name, state), count))
        first = next(iter(queue), None)
        wait = 0.0
        if first is not None and first.begin_after is not None and \
                first.begin_after <= now:
            wait = (now - first.begin_after).total_seconds()
        values['zcasync_queue_oldest_wait_seconds'].append(((name,), wait))
        for quota in queue.quotas.values():
            labels = (name, quota.name)
            values['zcasync_quota_size'].append((labels, quota.size))
            values['zcasync_quota_jobs'].append((labels, sum(
                1 for j in quota if api.statusName(j.status) in api.HELD)))
    return values


class _Gauges:
    """A collector yielding the snapshot the scrape just read."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        snapshot = self.metrics._snapshot or {}
        for name, (text, labels) in GAUGES.items():
            family = GaugeMetricFamily(name, text, labels=labels)
            for label_values, value in snapshot.get(name, ()):
                family.add_metric(list(label_values), value)
            yield family


class Metrics:
    """The dashboard's registry; ``observe`` is the observer's sink."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)
        self.completed = Counter(
            'zcasync_jobs_completed', 'Jobs completed (succeeded or failed) '
            'since this process started', ['queue'], registry=self.registry)
        self.failed = Counter(
            'zcasync_jobs_failed', 'Jobs completed with a failure since this '
            'process started', ['queue'], registry=self.registry)
        self.run_duration = Histogram(
            'zcasync_job_run_duration_seconds', 'Run time of completed '
            'jobs: start to completion', ['queue'], buckets=RUN_BUCKETS,
            registry=self.registry)
        self.start_latency = Histogram(
            'zcasync_job_start_latency_seconds', 'Put (or begin time) to '
            'start of completed jobs', ['queue'], buckets=START_BUCKETS,
            registry=self.registry)
        self._snapshot = None
        self._lock = threading.Lock()
        self.registry.register(_Gauges(self))

    def observe(self, queue, failed, wait, duration):
        self.completed.labels(queue).inc()
        if failed:
            self.failed.labels(queue).inc()
        if duration is not None:
            self.run_duration.labels(queue).observe(max(duration, 0.0))
        if wait is not None:
            self.start_latency.labels(queue).observe(max(wait, 0.0))

    def render(self, root, now=None):
        """The exposition text (bytes), reading gauges from `root`."""
        snapshot = gauges(root, now)
        for name, queue in api.queuesOf(root):
            for metric in (self.completed, self.failed):
                metric.labels(name)  # 0 until a job completes
        with self._lock:
            self._snapshot = snapshot
            try:
                return generate_latest(self.registry)
            finally:
                self._snapshot = None
