"""What the dashboard learns from completed jobs: an hour of per-queue
buckets (completions, failures, put-to-start and run times) for the
overview and the charts, and the Prometheus counters and histograms.

An ``Observer`` reads each newly completed job once.  Agents keep their
completed jobs newest first (``agent.completed.iter(start)``), so a
refresh walks each collection only down to what it had seen, less a
``LOOKBACK`` for commits that land a little after their completion
stamp (jobs already seen are recognised by oid without being loaded).
The first sight of a collection reads back up to an hour, at most
``BACKFILL_LIMIT`` jobs per refresh; ``since()`` says from when the
figures are complete.  Counters and histograms count only jobs that
completed after the observer started (a restart does not count the past
again).  Jobs that never pass through an agent (callbacks) are not
counted.
"""
import random
import threading

from zcasync import utils
from zcasync.web import api

BUCKET_SECONDS = 10
WINDOW_SECONDS = 3600
LOOKBACK_SECONDS = 10
BACKFILL_LIMIT = 5000
SAMPLES = 200
_MICROS = 1000000


class Bucket:
    """One queue's completions in BUCKET_SECONDS (latencies sampled)."""

    __slots__ = ('completed', 'failed', 'waits', 'durations', '_count')

    def __init__(self):
        self.completed = self.failed = self._count = 0
        self.waits = []
        self.durations = []

    def add(self, failed, wait, duration):
        self.completed += 1
        self.failed += bool(failed)
        self._count += 1
        for samples, value in ((self.waits, wait),
                               (self.durations, duration)):
            if value is None:
                continue
            if len(samples) < SAMPLES:
                samples.append(value)
            else:  # reservoir sampling keeps a fair sample
                slot = random.randrange(self._count)
                if slot < SAMPLES:
                    samples[slot] = value


class _Collection:
    __slots__ = ('newest', 'seen')

    def __init__(self, newest):
        self.newest = newest  # micros: the newest completion seen
        self.seen = {}  # oid -> completion micros, within the lookback


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(
        fraction * (len(ordered) - 1)))))
    return ordered[index]


class Observer:
    """See the module docstring.  ``refresh(root)`` runs in one thread
    (inside its transaction); the queries may come from any thread."""

    def __init__(self, sink=None):
        self.sink = sink  # observe(queue, failed, wait, duration)
        self.started = utils.now()
        self._started_micros = utils.toMicros(self.started)
        self._lock = threading.Lock()
        self._buckets = {}  # queue name -> {bucket index: Bucket}
        self._collections = {}  # collection oid -> _Collection
        self._since = None
        self.refreshes = 0

    # -- reading the database ------------------------------------------------

    def refresh(self, root):
        """Read the jobs completed since the last refresh; returns how
        many were new."""
        now = utils.now()
        now_micros = utils.toMicros(now)
        if self._since is None:
            self._since = now_micros - WINDOW_SECONDS * _MICROS
        budget = [BACKFILL_LIMIT]
        observed = []
        present = set()
        for name, queue in api.queuesOf(root):
            for agents in queue.dispatchers.values():
                for agent in agents.values():
                    collection = agent.completed
                    key = collection._p_oid or id(collection)
                    present.add(key)
                    state = self._collections.get(key)
                    if state is None:
                        self._collections[key] = self._backfill(
                            collection, name, now_micros, budget, observed)
                    else:
                        self._scan(collection, name, state, now_micros,
                                   observed)
        for key in set(self._collections) - present:
            del self._collections[key]
        self._store(observed, now_micros)
        self.refreshes += 1
        return len(observed)

    def _record(self, job, name, now_micros):
        try:
            end, start = job.active_end, job.active_start
            begin = job.begin_after
            failed = utils.isFailure(job.result)
        except Exception:
            return None  # unreadable: not counted
        end_micros = utils.toMicros(end) if end is not None else now_micros
        wait = (start - begin).total_seconds() \
            if start is not None and begin is not None else None
        duration = (end - start).total_seconds() \
            if start is not None and end is not None else None
        return (name, end_micros, failed, wait, duration,
                end_micros >= self._started_micros)

    def _backfill(self, collection, name, now_micros, budget, observed):
        state = _Collection(now_micros)
        horizon = utils.fromMicros(now_micros - WINDOW_SECONDS * _MICROS)
        cutoff = now_micros - LOOKBACK_SECONDS * _MICROS
        for job in collection.iter(start=horizon):
            record = self._record(job, name, now_micros)
            if record is None:
                continue
            if budget[0] <= 0:
                # older figures are incomplete from here down
                self._since = max(self._since, record[1])
                break
            budget[0] -= 1
            observed.append(record)
            if record[1] >= cutoff:
                state.seen[job._p_oid] = record[1]
        return state

    def _scan(self, collection, name, state, now_micros, observed):
        start = utils.fromMicros(state.newest - LOOKBACK_SECONDS * _MICROS)
        seen = state.seen
        for job in collection.iter(start=start):
            oid = job._p_oid
            if oid in seen:
                continue  # recognised without loading it
            record = self._record(job, name, now_micros)
            if record is None:
                seen[oid] = now_micros
                continue
            observed.append(record)
            seen[oid] = record[1]
            if record[1] > state.newest:
                state.newest = record[1]
        cutoff = state.newest - LOOKBACK_SECONDS * _MICROS
        if any(m < cutoff for m in seen.values()):
            state.seen = {o: m for o, m in seen.items() if m >= cutoff}

    def _store(self, observed, now_micros):
        width = BUCKET_SECONDS * _MICROS
        oldest = (now_micros - WINDOW_SECONDS * _MICROS) // width
        with self._lock:
            for name, end, failed, wait, duration, live in observed:
                index = end // width
                if index < oldest:
                    continue
                buckets = self._buckets.setdefault(name, {})
                bucket = buckets.get(index)
                if bucket is None:
                    bucket = buckets[index] = Bucket()
                bucket.add(failed, wait, duration)
            for buckets in self._buckets.values():
                for index in [i for i in buckets if i < oldest]:
                    del buckets[index]
        if self.sink is not None:
            for name, end, failed, wait, duration, live in observed:
                if live:
                    self.sink.observe(name, failed, wait, duration)

    # -- queries --------------------------------------------------------------

    def since(self):
        """From when the figures are complete (None before the first
        refresh)."""
        if self._since is None:
            return None
        return utils.fromMicros(self._since)

    def _select(self, queue, start_index):
        with self._lock:
            return [(i, b) for name, buckets in self._buckets.items()
                    if queue is None or name == queue
                    for i, b in buckets.items() if i >= start_index]

    def queueSummary(self, name, now=None):
        now_micros = utils.toMicros(now or utils.now())
        width = BUCKET_SECONDS * _MICROS
        hour = self._select(name, (now_micros - 3600 * _MICROS) // width)
        recent_start = (now_micros - 300 * _MICROS) // width
        recent = sum(b.completed for i, b in hour if i >= recent_start)
        return {
            'completed_last_hour': sum(b.completed for i, b in hour),
            'failed_last_hour': sum(b.failed for i, b in hour),
            'throughput_per_minute': round(recent / 5.0, 2),
        }

    def series(self, queue=None, minutes=60, bucket=60, now=None):
        """Per-bucket figures over the last `minutes` (bucket: seconds, a
        multiple of BUCKET_SECONDS)."""
        if not 1 <= minutes <= WINDOW_SECONDS // 60:
            raise api.ApiError(400, 'minutes must be from 1 to %d' % (
                WINDOW_SECONDS // 60))
        if bucket < BUCKET_SECONDS or bucket % BUCKET_SECONDS or \
                bucket > minutes * 60:
            raise api.ApiError(400, 'bucket must be a multiple of %d '
                                    'seconds, at most the whole range'
                               % BUCKET_SECONDS)
        now = now or utils.now()
        now_micros = utils.toMicros(now)
        width = bucket * _MICROS
        count = (minutes * 60) // bucket
        last = now_micros // width
        first = last - count + 1
        fine = self._select(queue, first * width // (
            BUCKET_SECONDS * _MICROS))
        merged = [Bucket() for i in range(count)]
        for index, b in fine:
            slot = index * BUCKET_SECONDS * _MICROS // width - first
            if 0 <= slot < count:
                target = merged[slot]
                target.completed += b.completed
                target.failed += b.failed
                target.waits.extend(b.waits)
                target.durations.extend(b.durations)
        return {
            'queue': queue,
            'bucket_seconds': bucket,
            'start': api.iso(utils.fromMicros(first * width)),
            'end': api.iso(now),
            'since': api.iso(self.since()),
            'times': [api.iso(utils.fromMicros((first + i) * width))
                      for i in range(count)],
            'completed': [b.completed for b in merged],
            'failed': [b.failed for b in merged],
            'wait_p50': [percentile(b.waits, 0.5) for b in merged],
            'wait_p95': [percentile(b.waits, 0.95) for b in merged],
            'duration_p50': [percentile(b.durations, 0.5) for b in merged],
            'duration_p95': [percentile(b.durations, 0.95)
                             for b in merged],
        }
