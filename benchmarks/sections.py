"""The benchmark sections: each runs its measurements ``runs`` times and
records every value in ``ctx.results`` (``report.py`` turns them into the
table).  ``run.py`` calls them in ``ORDER``."""
import json
import os
import subprocess
import sys
import tempfile

from benchmarks import support
from benchmarks.report import HUEY, POSTGRES, PROCRASTINATE, ZCASYNC
from benchmarks.support import BenchmarkError


class Context:
    def __init__(self, sizes, runs, workdir, results, progress):
        self.sizes = sizes
        self.runs = runs
        self.workdir = workdir
        self.results = results
        self.progress = progress
        self.commands = {}

    def newDirectory(self, name):
        return tempfile.mkdtemp(prefix=name + '-', dir=self.workdir)

    def add(self, key, value, system=ZCASYNC):
        self.results.add(system, key, value)


def _latencies(ctx, prefix, values, system=ZCASYNC):
    ctx.add(prefix + ' p50', support.percentile(values, 0.50), system)
    ctx.add(prefix + ' p99', support.percentile(values, 0.99), system)


def inprocess(ctx):
    """Enqueue, then drain the same jobs with an in-process dispatcher."""
    from benchmarks import zcasync_bench
    for run in range(ctx.runs):
        figures = zcasync_bench.enqueueAndDrain(
            ctx.newDirectory('inprocess'), ctx.sizes)
        for key, value in figures.items():
            ctx.add(key, value)
        ctx.progress('in-process run %d/%d: enqueue %.0f/s, drain %.0f/s, '
                     '%.2f commits per job, bulk enqueue %.0f/s', run + 1,
                     ctx.runs, figures['enqueue'], figures['drain'],
                     figures['commits per job'], figures['bulk enqueue'])


def latency(ctx):
    from benchmarks import zcasync_bench
    for run in range(ctx.runs):
        values = zcasync_bench.latency(ctx.newDirectory('latency'),
                                       ctx.sizes)
        _latencies(ctx, 'latency', values)
        ctx.progress('latency run %d/%d: p50 %.1f ms, p99 %.1f ms',
                     run + 1, ctx.runs, support.percentile(values, 0.5),
                     support.percentile(values, 0.99))


def scale(ctx, priorities=False):
    import time
    from benchmarks import zcasync_bench
    prefix = 'priority ' if priorities else ''
    # with priorities: CPU time, which measures the queue's own cost
    clock = time.process_time if priorities else time.perf_counter
    for pending in (ctx.sizes.scale_small, ctx.sizes.scale_large):
        queue = zcasync_bench.QueueScale(ctx.newDirectory('scale'), pending,
                                         ctx.sizes, priorities=priorities)
        try:
            for run in range(ctx.runs):
                figures = queue.measure(clock)
                ctx.add('%sput at %d' % (prefix, pending), figures['put'])
                ctx.add('%sclaim at %d' % (prefix, pending),
                        figures['claim'])
                ctx.progress('%squeue scale at %d pending, run %d/%d: put '
                             '%.0f/s, claim %.0f/s', prefix, pending,
                             run + 1, ctx.runs, figures['put'],
                             figures['claim'])
        finally:
            queue.close()


def priority(ctx):
    """Queue scale with priorities 0-9 and scheduled jobs mixed in."""
    scale(ctx, priorities=True)


def zeo(ctx):
    from benchmarks import zeo_bench
    for workers in (1, 3):
        cluster = zeo_bench.Cluster(ctx.newDirectory('zeo%d' % workers),
                                    workers, ctx.sizes)
        with cluster:
            ctx.commands['zeo %d' % workers] = cluster.commands
            for run in range(ctx.runs):
                rate, commits = cluster.drain(ctx.sizes.jobs)
                ctx.add('drain zeo %d' % workers, rate)
                ctx.add('commits per job zeo %d' % workers, commits)
                ctx.progress('ZEO, %d worker(s), run %d/%d: drain %.0f/s, '
                             '%.2f commits per job', workers, run + 1,
                             ctx.runs, rate, commits)
                if workers == 1:
                    values = cluster.latency()
                    _latencies(ctx, 'latency zeo', values)
                    ctx.progress('ZEO latency run %d/%d: p50 %.1f ms, p99 '
                                 '%.1f ms', run + 1, ctx.runs,
                                 support.percentile(values, 0.5),
                                 support.percentile(values, 0.99))


def ceilings(ctx):
    """Each storage's own commit ceiling (see ``ceilings.py``)."""
    import ZODB
    import ZODB.FileStorage
    from benchmarks import ceilings as ceiling, pg_bench, zeo_bench
    seconds = ctx.sizes.ceiling_seconds
    reason = pg_bench.unavailable()
    if reason is not None:
        ctx.results.skip(POSTGRES, reason)
    for run in range(ctx.runs):
        figures = {}
        directory = ctx.newDirectory('ceiling-fs')
        db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'Data.fs')))
        try:
            for threads in (1, 4):
                figures['ceiling fs %d' % threads] = ceiling.threads(
                    db, threads, seconds)
        finally:
            db.close()
        directory = ctx.newDirectory('ceiling-zeo')
        commands = ctx.commands.setdefault('ceilings', [])
        server = zeo_bench.ZEOServer(directory, commands).start()
        try:
            import ZEO
            db = ZEO.DB(server.address, wait_timeout=30)
            try:
                for processes in (1, 3):
                    figures['ceiling zeo %d' % processes] = \
                        ceiling.processes(db, 'zeo://%s:%d' % server.address,
                                          processes, seconds, directory,
                                          commands)
            finally:
                db.close()
        finally:
            server.stop()
        if reason is None:
            with pg_bench.throwawayDatabase('ceiling') as name:
                db = pg_bench.openRelStorage(name)
                try:
                    for threads in (1, 2, 4):
                        figures['ceiling pg %d' % threads] = \
                            ceiling.threads(db, threads, seconds)
                finally:
                    db.close()
        for key, value in figures.items():
            ctx.add(key, value)
        ctx.progress('commit ceilings run %d/%d: %s', run + 1, ctx.runs,
                     ', '.join('%s %.0f/s' % (key[8:], value)
                               for key, value in figures.items()))


def claim(ctx):
    """One claim behind ``blocked`` jobs it passes over, against the same
    claim on an empty queue (see ``claim_bench.py``)."""
    from benchmarks import claim_bench
    for kind in ('quota', 'filter'):
        medians = {}
        for blocked, name in ((0, 'empty'), (ctx.sizes.blocked, 'blocked')):
            scene = claim_bench.ClaimScene(
                ctx.newDirectory('claim-%s-%s' % (kind, name)), kind,
                blocked, ctx.sizes)
            try:
                for run in range(ctx.runs):
                    figures = scene.measure()
                    for state, values in figures.items():
                        ms = support.median([v[0] for v in values])
                        loads = support.median([v[1] for v in values])
                        ctx.add('claim %s %s %s' % (kind, name, state), ms)
                        ctx.add('claim %s %s loads %s' % (kind, name, state),
                                loads)
                        medians.setdefault((name, state), []).append(ms)
            finally:
                scene.close()
        for state in ('cold', 'warm'):
            for empty, behind in zip(medians['empty', state],
                                     medians['blocked', state]):
                ctx.add('claim %s ratio %s' % (kind, state), behind / empty)
        ctx.progress(
            'claim behind %d %s: %s', ctx.sizes.blocked, kind, ', '.join(
                '%s %s %.1f ms' % (name, state, support.median(values))
                for (name, state), values in sorted(medians.items())))


def postgres(ctx):
    """zcasync on a history-free RelStorage/PostgreSQL: in-process enqueue,
    drain and bulk enqueue; latency; 3 worker processes.  Each on a
    throwaway database with the NOTIFY trigger installed."""
    from zcasync import pgnotify
    from benchmarks import pg_bench, zcasync_bench, zeo_bench
    reason = pg_bench.unavailable()
    if reason is not None:
        ctx.results.skip(POSTGRES, reason)
        ctx.progress('PostgreSQL benchmarks skipped: %s', reason)
        return
    sizes = ctx.sizes

    def openDB(name):
        db = pg_bench.openRelStorage(name)  # creates RelStorage's tables
        pgnotify.installTrigger(pg_bench.dsn(name))
        return db
    from benchmarks import ceilings as ceiling
    for run in range(ctx.runs):
        with pg_bench.throwawayDatabase('zcasync') as name:
            # the one-thread commit ceiling right before the enqueue, on
            # the same database (the machine's load changes by the
            # minute), before the trigger is installed: the storage's own
            db = pg_bench.openRelStorage(name)
            try:
                paired = ceiling.threads(db, 1, sizes.ceiling_seconds)
                pgnotify.installTrigger(pg_bench.dsn(name))
            except BaseException:
                db.close()
                raise
            figures = zcasync_bench.enqueueAndDrain(
                None, sizes, db=db, count=sizes.pg_jobs,
                bulk_count=sizes.pg_bulk_jobs, what='PostgreSQL in-process')
        for key in ('enqueue', 'drain', 'bulk enqueue'):
            ctx.add('pg ' + key, figures[key])
        ctx.add('pg enqueue ceiling', paired)
        ctx.add('pg enqueue of ceiling', 100 * figures['enqueue'] / paired)
        with pg_bench.throwawayDatabase('zcasync_latency') as name:
            values = zcasync_bench.latency(None, sizes, db=openDB(name),
                                           what='PostgreSQL latency')
        _latencies(ctx, 'pg latency', values)
        with pg_bench.throwawayDatabase('zcasync_workers') as name:
            # the trigger is installed as soon as the database exists,
            # before the workers start
            cluster = zeo_bench.Cluster(
                ctx.newDirectory('pg3'), 3, sizes, uri=pg_bench.uri(name),
                openDB=lambda: openDB(name))
            with cluster:
                ctx.commands['postgres 3'] = cluster.commands
                rate, heard = cluster.drain(sizes.pg_jobs)
        ctx.add('pg drain 3', rate)
        ctx.progress('PostgreSQL run %d/%d: 1-thread ceiling %.0f/s, '
                     'enqueue %.0f/s, bulk enqueue %.0f/s, drain in-process '
                     '%.0f/s, 3 worker processes %.0f/s, latency p50 '
                     '%.1f ms', run + 1, ctx.runs, paired,
                     figures['enqueue'], figures['bulk enqueue'],
                     figures['drain'], rate,
                     support.percentile(values, 0.5))


def procrastinate(ctx):
    """The PostgreSQL reference (see ``procrastinate_bench.py``)."""
    from benchmarks import pg_bench, procrastinate_bench as bench
    reason = pg_bench.unavailable()
    if reason is not None:
        ctx.results.skip(POSTGRES, reason)
        ctx.results.skip(PROCRASTINATE, reason)
        ctx.progress('Procrastinate skipped: %s', reason)
        return
    reason = bench.unavailable()
    if reason is not None:
        ctx.results.skip(PROCRASTINATE, reason)
        ctx.progress('Procrastinate skipped: %s', reason)
        return
    sizes = ctx.sizes
    for run in range(ctx.runs):
        enqueue = bench.enqueue(sizes.pg_jobs)
        drain = bench.drainInProcess(sizes.pg_jobs, sizes.size)
        drain3 = bench.drainProcesses(
            sizes.pg_jobs, 3, sizes.size, ctx.newDirectory('procrastinate'),
            ctx.commands.setdefault('procrastinate 3', []))
        values = bench.latency(sizes.latency_jobs, sizes.idle_gap,
                               sizes.size)
        ctx.add('enqueue', enqueue, PROCRASTINATE)
        ctx.add('drain', drain, PROCRASTINATE)
        ctx.add('drain 3', drain3, PROCRASTINATE)
        _latencies(ctx, 'latency', values, PROCRASTINATE)
        ctx.progress('Procrastinate run %d/%d: enqueue %.0f/s, drain '
                     'in-process %.0f/s, 3 processes %.0f/s, latency p50 '
                     '%.1f ms', run + 1, ctx.runs, enqueue, drain, drain3,
                     support.percentile(values, 0.5))


def rss(ctx):
    """One worker (an in-process dispatcher in a child process) runs
    ``rss_jobs`` jobs; its RSS before and after."""
    from benchmarks import zcasync_bench
    sizes = ctx.sizes
    directory = ctx.newDirectory('rss')
    data = zcasync_bench.Database(directory)
    try:
        me = zcasync_bench.newUUID()
        data.addAgent(me, 0)
        data.fill(sizes.rss_jobs, sizes.fill_batch)
    finally:
        data.close()
    command = [sys.executable, '-m', 'benchmarks.rss_worker', directory,
               str(me), str(sizes.rss_jobs), str(sizes.size),
               '%g' % sizes.poll_interval]
    ctx.commands['rss'] = command
    log = os.path.join(directory, 'worker.log')
    output = os.path.join(directory, 'worker.out')
    with open(output, 'wb') as out:
        child = support.spawn(command, log, stdout=out)
    try:
        child.wait(sizes.rss_jobs / 25 + 180)
    except subprocess.TimeoutExpired:
        raise BenchmarkError('the RSS worker did not finish in time')
    finally:
        support.stop(child)
    with open(log, errors='replace') as f:
        errors = f.read()[-3000:]
    if child.returncode != 0:
        raise BenchmarkError('the RSS worker exited with code %s:\n%s'
                             % (child.returncode, errors))
    with open(output) as f:
        figures = json.loads(f.read().strip().splitlines()[-1])
    for key in ('rss before', 'rss after', 'rss peak'):
        ctx.add(key, figures[key] / 2**20)
    ctx.add('rss growth', (figures['rss after'] - figures['rss before'])
            / 2**20)
    ctx.add('rss drain', figures['drain'])
    ctx.progress('RSS worker: %.1f MB before, %.1f MB after %d jobs '
                 '(drained at %.0f/s)', figures['rss before'] / 2**20,
                 figures['rss after'] / 2**20, sizes.rss_jobs,
                 figures['drain'])


def huey(ctx):
    from benchmarks import huey_bench
    if not huey_bench.available():
        ctx.results.missing(HUEY)
        ctx.progress('huey is not installed: no reference figures')
        return
    sizes = ctx.sizes
    for run in range(ctx.runs):
        bench = huey_bench.HueyBench(ctx.newDirectory('huey'), sizes)
        try:
            enqueue = bench.enqueue(sizes.jobs)
            drain = bench.drain(sizes.jobs)
            values = bench.latency(sizes.latency_jobs, sizes.idle_gap)
        finally:
            bench.close()
        ctx.add('enqueue', enqueue, HUEY)
        ctx.add('drain', drain, HUEY)
        _latencies(ctx, 'latency', values, HUEY)
        ctx.progress('huey run %d/%d: enqueue %.0f/s, drain %.0f/s, latency '
                     'p50 %.1f ms, p99 %.1f ms', run + 1, ctx.runs, enqueue,
                     drain, support.percentile(values, 0.5),
                     support.percentile(values, 0.99))


def dashboard(ctx):
    """Every page, API call and /metrics of ``zcasync dashboard`` on a
    database with ``dashboard_completed`` completed and
    ``dashboard_pending`` pending jobs."""
    from benchmarks import dashboard_bench
    sizes = ctx.sizes
    directory = ctx.newDirectory('dashboard')
    failed = dashboard_bench.fill(directory, sizes.dashboard_completed,
                                  sizes.dashboard_pending, sizes.fill_batch,
                                  ctx.progress)
    for run in range(ctx.runs):
        figures = dashboard_bench.measure(
            directory, failed, sizes.dashboard_requests, ctx.progress)
        overview = figures.pop('~overview')
        colds = []
        for label, (cold, warm) in figures.items():
            ctx.add('dashboard ' + label, support.percentile(warm, 0.95))
            colds.append((cold, label))
        slowest, which = max(colds)
        ctx.add('dashboard first request', slowest)
        ctx.progress('dashboard run %d/%d: slowest first request %.1f ms '
                     '(%s); the overview counts %d pending, %d completed '
                     'in the hour', run + 1, ctx.runs, slowest, which,
                     overview['totals']['pending'],
                     overview['totals']['completed_last_hour'] or 0)
        values = dashboard_bench.liveLatency(
            ctx.newDirectory('dashboard-live'), sizes,
            sizes.dashboard_requests)
        _latencies(ctx, 'dashboard live', values)
        ctx.progress('dashboard live update run %d/%d: put to changed '
                     'event p50 %.1f ms, p99 %.1f ms', run + 1, ctx.runs,
                     support.percentile(values, 0.5),
                     support.percentile(values, 0.99))


def coroutines(ctx):
    """200 ``async def`` jobs sleeping 1 s with an agent of size 200 (see
    ``coroutine_bench.py``)."""
    from benchmarks import coroutine_bench
    for run in range(ctx.runs):
        figures = coroutine_bench.measure(
            ctx.newDirectory('coroutines'),
            poll_interval=ctx.sizes.poll_interval)
        for key, value in figures.items():
            ctx.add(key, value)
        ctx.progress('coroutines run %d/%d: 200 x sleep(1) in %.2f s, %d at '
                     'once, %d worker thread(s), %d thread(s) in all',
                     run + 1, ctx.runs, figures['coroutines wall'],
                     figures['coroutines at once'],
                     figures['coroutines worker threads'],
                     figures['coroutines threads'])


ORDER = [('inprocess', inprocess), ('latency', latency), ('scale', scale),
         ('priority', priority), ('zeo', zeo), ('ceilings', ceilings),
         ('claim', claim), ('postgres', postgres),
         ('procrastinate', procrastinate), ('rss', rss),
         ('dashboard', dashboard), ('huey', huey),
         ('coroutines', coroutines)]
