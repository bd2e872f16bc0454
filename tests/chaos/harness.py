"""The chaos engine: real processes, faults on a schedule, a verdict.

``ChaosRun(directory, storage, uri=..., jobs=..., duration=...).run()``

1. starts a ZEO server (``zcasync server``, ZEO variant; the caller gives
   a throw-away PostgreSQL database for the RelStorage variant) and three
   ``zcasync worker`` processes (poll 0.3 s, ping 0.5 s, dead after 2.5 s,
   agent size 3, ``--import tests.chaos.chaosjobs``);
2. puts ``jobs`` jobs (``chaosjobs.work``, one in three its coroutine twin
   ``chaosjobs.awork``; default retry policy) spread
   over the first three quarters of ``duration``, each put recorded in
   ``root['chaos-jobs']`` in the same transaction, so that a put retried
   after an ambiguous commit failure never queues a job twice;
3. meanwhile injects faults every ``fault_every`` seconds, each logged
   with its kind, target pid and ``monotonic_ns`` interval:

   - ``kill``: SIGKILL a worker while it runs a job, start a replacement
     with a new UUID file;
   - ``stop``: SIGSTOP a worker running a job for longer than the death
     interval, then SIGCONT (a false death: it must keep working);
   - ``zeo-restart``: stop the ZEO server, restart it on the same port
     and file after ``outage`` seconds (ZEO variant);
   - ``pg-terminate``: ``pg_terminate_backend`` on every connection to the
     database, the LISTEN ones included (RelStorage variant);
   - ``poison``: a job whose callable lives in a module only this process
     can import (a file in a temporary directory on this process's
     ``sys.path``), followed by normal jobs;
   - ``cancel``: puts controlled jobs (``chaosjobs.slow``/``aslow``, sync
     and coroutine, cooperative and ignoring, numbered from
     ``CONTROL_BASE``): two scheduled an hour ahead, cancelled at once
     (pending); four cancelled with ``grace`` once the run log shows them
     begun (running); four put with a time limit of ``limit`` seconds that
     they exceed (an ignoring one long enough to be forced);

4. waits (bounded) until every normal job is COMPLETED and the workers
   hold nothing, reads the final state, stops the workers with SIGTERM
   and checks the invariants (``invariants.py``) over everything.

Everything runs on the loopback interface and stops by itself: the run,
the waits and every process are bounded in time.
"""
import contextlib
import logging
import os
import pathlib
import re
import signal
import sys
import threading
import time
import uuid as uuidmodule

import BTrees.OOBTree
import ZODB.utils

from tests.chaos import chaosjobs
from tests.chaos import invariants
from tests.chaos.invariants import (
    Run, Fault, JobState, Controlled, KILL, STOP, ZEO_RESTART, PG_TERMINATE,
    POISON, CANCEL, CANCEL_PENDING, CANCEL_RUNNING, TIME_LIMIT)
from tests.processes.conftest import (  # noqa: F401 (Unavailable, ...)
    Unavailable, throwawayPostgres,
    Client, Processes, ZEOServer, zcasync, postgresReachable, POLL, PING,
    DEATH)

JOBS_MODULE = 'tests.chaos.chaosjobs'
JOBS_KEY, POISON_KEY = 'chaos-jobs', 'chaos-poison'
CONTROL_KEY = 'chaos-control'
#: controlled jobs are numbered from here (their effects' keys exist from
#: the start, CONTROL_MAX of them)
CONTROL_BASE, CONTROL_MAX = 10 ** 6, 400
PARKED = 'parked-status'  # the name the core's fix gives a parked job


def ns():
    return time.monotonic_ns()


class Worker:

    def __init__(self, name, process, uuid_file):
        self.name = name
        self.process = process
        self.uuid_file = uuid_file
        self.killed = False
        self.stopped = False
        self.reported = False  # an unexpected exit was recorded


class RunLog:
    """Reads the external log as it grows: completed runs and the runs
    open right now, by pid."""

    LINE = re.compile(r'^(begin|end) (\d+) (\d+) (\w+) (\d+)( \w+)?$')

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b''
        self.begins = {}  # (n, pid, run) -> ns
        self.ends = {}
        self.outcomes = {}
        self.open = {}  # pid -> {(n, run): begin}

    def read(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, 'rb') as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b'\n')
        self.partial = lines.pop()
        for line in lines:
            match = self.LINE.match(line.decode())
            if match is None:
                raise AssertionError('bad line in %s: %r' % (self.path, line))
            what, n, pid, run, stamp, outcome = match.groups()
            n, pid, stamp = int(n), int(pid), int(stamp)
            if outcome:
                self.outcomes[(n, pid, run)] = outcome.strip()
            if what == 'begin':
                self.begins[(n, pid, run)] = stamp
                self.open.setdefault(pid, {})[(n, run)] = stamp
            else:
                self.ends[(n, pid, run)] = stamp
                self.open.get(pid, {}).pop((n, run), None)

    def runs(self):
        self.read()
        return sorted((Run(n, pid, run, begin, self.ends.get((n, pid, run)),
                           self.outcomes.get((n, pid, run)))
                       for (n, pid, run), begin in self.begins.items()),
                      key=lambda r: r.begin)


class ChaosRun:

    def __init__(self, directory, storage='zeo', uri=None, jobs=200,
                 duration=40.0, fault_every=4.0, pause=0.3, workers=3,
                 size=3, outage=2.0, kinds=None, settle=60.0, seed=None,
                 grace=1.0, limit=0.5, out=print):
        if storage not in ('zeo', 'postgres'):
            raise ValueError('storage is zeo or postgres, not %r' % storage)
        if storage == 'postgres' and not uri:
            raise ValueError('the postgres variant needs the uri of a '
                             'throw-away RelStorage database')
        self.directory = str(directory)
        self.storage = storage
        self.uri = uri
        self.jobs = jobs
        self.duration = duration
        self.fault_every = fault_every
        self.pause = pause
        self.nworkers = workers
        self.size = size
        self.outage = outage
        self.settle = settle
        self.grace = grace  # of the cancels of running jobs
        self.limit = limit  # the time limit of the time-limited jobs
        self.stop_for = DEATH + 1.5
        self.kinds = kinds or (
            [KILL, CANCEL, STOP, ZEO_RESTART, POISON] if storage == 'zeo'
            else [KILL, CANCEL, STOP, PG_TERMINATE, POISON])
        import random
        self.random = random.Random(seed)
        self.out = out
        self.log = RunLog(os.path.join(self.directory, 'runs.log'))
        self.processes = Processes(pathlib.Path(self.directory))
        self.server = None
        self.client = None
        self.workers = []
        self.faults = []
        self.pending = []  # [(due ns, action)] follow-ups of faults
        self.timers = []  # the SIGCONTs of stopped workers, in threads
        self.put = 0  # normal jobs put so far
        self.after_poison = set()
        self.poisoned = False
        self.outage_on = False
        self.poison_module = None
        self.waiting = None  # since when a fault waits for a busy worker
        self.controlled = {}  # n -> dict: what was done to a controlled job
        self.to_cancel = []  # [(n, since ns)] cancel once begun

    # -- output ----------------------------------------------------------

    def say(self, text, *args):
        if self.out is not None:
            self.out('[%6.2f] %s' % ((ns() - self.origin) / 1e9,
                                     text % args))

    # -- the run ---------------------------------------------------------

    def run(self):
        self.origin = ns()
        try:
            self.start()
            self.loop()
            self.waitUntilDone()
            state = self.gather()
            exits = self.stopWorkers()
            return self.verdict(state, exits)
        finally:
            self.cleanup()

    def start(self):
        if self.storage == 'zeo':
            self.server = ZEOServer(self.processes, pathlib.Path(self.directory))
            self.uri = self.server.uri
        self.client = Client(self.uri)  # creates a RelStorage schema first
        self.retrying('set up', self.setupRoot)
        for i in range(self.nworkers):
            self.startWorker()
        self.waitFor(lambda: len(self.activeDispatchers()) ==
                     self.nworkers, 60, '%d active workers' % self.nworkers)
        self.origin = ns()
        self.say('%d workers up on %s; %d jobs over %.0f s, a fault every '
                 '%.1f s', self.nworkers, self.storage, self.jobs,
                 self.duration, self.fault_every)

    def setupRoot(self):
        tm = self.client.tm
        tm.begin()
        root = self.client.conn.root()
        tree = BTrees.OOBTree.OOBTree()
        tree.update({n: () for n in range(self.jobs)})
        tree.update({n: () for n in range(CONTROL_BASE,
                                          CONTROL_BASE + CONTROL_MAX)})
        root[chaosjobs.EFFECTS] = tree
        root[JOBS_KEY] = BTrees.OOBTree.OOBTree()
        root[POISON_KEY] = BTrees.OOBTree.OOBTree()
        root[CONTROL_KEY] = BTrees.OOBTree.OOBTree()
        root[chaosjobs.OUTCOMES] = BTrees.OOBTree.OOBTree(
            {n: () for n in range(CONTROL_BASE, CONTROL_BASE + CONTROL_MAX)})
        tm.commit()

    def startWorker(self):
        name = 'worker-%d' % (len(self.workers) + 1)
        uuid_file = os.path.join(self.directory, name + '.uuid')
        process = self.processes.start(name, zcasync(
            'worker', '--db', self.uri, '--uuid-file', uuid_file,
            '--import', JOBS_MODULE, '--poll-interval', POLL,
            '--ping-interval', PING, '--ping-death-interval', DEATH,
            '--size', self.size))
        worker = Worker(name, process, uuid_file)
        self.workers.append(worker)
        return worker

    def loop(self):
        window = self.duration * 0.75
        next_fault = 2.0
        kinds = []
        while True:
            elapsed = (ns() - self.origin) / 1e9
            self.log.read()
            self.checkExits()
            for due, action in sorted(self.pending, key=lambda p: p[0]):
                if due <= ns():
                    self.pending.remove((due, action))
                    action()
            if not self.outage_on:
                self.cancelBegun()
            if not self.outage_on:
                target = min(self.jobs, int(self.jobs * elapsed / window) + 1)
                if target > self.put:
                    self.putJobs(range(self.put, target))
            if elapsed >= next_fault and elapsed < window:
                if not kinds:
                    kinds = list(self.kinds)
                    if self.faults:  # the first round in the given order
                        self.random.shuffle(kinds)
                kind = kinds[0]
                if self.inject(kind):
                    kinds.pop(0)
                    next_fault = elapsed + self.fault_every
            if self.put >= self.jobs and not self.pending and \
                    not self.to_cancel and elapsed >= window and \
                    not any(w.stopped for w in self.workers):
                return
            time.sleep(0.05)

    # -- faults ----------------------------------------------------------

    def inject(self, kind):
        """Inject one fault; False when it must wait (no target yet)."""
        if kind == POISON:
            if self.outage_on or self.put >= self.jobs:
                return self.put >= self.jobs  # too late: skip it
            self.putPoison()
            return True
        if kind == ZEO_RESTART:
            if self.outage_on:
                return False
            self.restartServer()
            return True
        if kind == PG_TERMINATE:
            self.terminateBackends()
            return True
        if kind == CANCEL:
            if self.outage_on:
                return False
            if len(self.controlled) + 10 > CONTROL_MAX:
                return True  # no more numbers: skip it
            self.putControlled()
            return True
        target = self.busyWorker()
        if target is None:
            # wait a little for a worker in the middle of a job, then take
            # any (the queue may be empty or blocked)
            if self.waiting is None:
                self.waiting = ns()
            if ns() - self.waiting < 2e9 or not self.usable():
                return False
            target = self.random.choice(self.usable())
        self.waiting = None
        if kind == KILL:
            self.kill(target)
        else:
            self.stop(target)
        return True

    def usable(self):
        return [w for w in self.workers if w.process.alive and
                not w.killed and not w.stopped]

    def busyWorker(self):
        """A live, running worker in the middle of a job begun in the last
        second (None when none is: the fault waits for one)."""
        recent = ns() - 1e9
        busy = [w for w in self.usable() if any(
            begin > recent for begin in
            self.log.open.get(w.process.pid, {}).values())]
        return self.random.choice(busy) if busy else None

    def openJobs(self, worker):
        return sorted(n for n, run in self.log.open.get(worker.process.pid,
                                                        {}))

    def kill(self, worker):
        running = self.openJobs(worker)
        at = ns()
        worker.process.signal(signal.SIGKILL)
        worker.killed = True
        worker.process.wait(10)
        self.faults.append(Fault(KILL, worker.process.pid, at, None,
                                 'running jobs %s' % running))
        replacement = self.startWorker()
        self.say('SIGKILL %s (pid %d) running jobs %s; started %s (pid %d)',
                 worker.name, worker.process.pid, running, replacement.name,
                 replacement.process.pid)

    def stop(self, worker):
        running = self.openJobs(worker)
        at = ns()
        worker.process.signal(signal.SIGSTOP)
        worker.stopped = True
        self.say('SIGSTOP %s (pid %d) running jobs %s for %.1f s',
                 worker.name, worker.process.pid, running, self.stop_for)

        def resume():
            worker.process.signal(signal.SIGCONT)
            worker.stopped = False
            self.faults.append(Fault(STOP, worker.process.pid, at, ns(),
                                     'running jobs %s' % running))
            self.say('SIGCONT %s (pid %d)', worker.name, worker.process.pid)
        # from a timer thread, not the loop: a worker stopped inside its
        # two-phase commit holds the ZEO server's commit lock, and a commit
        # of this process (a put, a cancel) then waits until it resumes
        timer = threading.Timer(self.stop_for, resume)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def restartServer(self):
        at = ns()
        self.outage_on = True
        self.server.stop()
        self.say('ZEO server stopped; restarting in %.1f s', self.outage)

        def restart():
            self.server.start()
            self.outage_on = False
            self.faults.append(Fault(ZEO_RESTART, None, at, ns(),
                                     'port %d' % self.server.port))
            self.say('ZEO server restarted on port %d', self.server.port)
        # the outage counts from the moment the server is down
        self.pending.append((ns() + int(self.outage * 1e9), restart))

    def terminateBackends(self):
        import psycopg2
        name = self.uri.split('?')[0].rsplit('/', 1)[1]
        at = ns()
        admin = psycopg2.connect(host='127.0.0.1', port=5432, user='postgres',
                                 dbname='postgres')
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(
                    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                    'WHERE datname = %s AND pid <> pg_backend_pid()', (name,))
                killed = cursor.rowcount
        finally:
            admin.close()
        self.faults.append(Fault(PG_TERMINATE, None, at, ns(),
                                 '%d backends' % killed))
        self.say('terminated %d PostgreSQL backends of %s', killed, name)

    def putPoison(self):
        import importlib
        from zcasync.job import Job
        from zcasync.interfaces import KEY
        if self.poison_module is None:
            directory = os.path.join(self.directory, 'poison')
            os.makedirs(directory, exist_ok=True)
            name = 'chaos_poison_%s' % uuidmodule.uuid4().hex[:8]
            with open(os.path.join(directory, name + '.py'), 'w') as f:
                f.write('"""Importable only by the chaos harness."""\n\n\n'
                        'def poison(n):\n    return n\n')
            sys.path.insert(0, directory)
            self.poison_module = importlib.import_module(name)
            self.poison_dir = directory
        key = len(self.faults)

        def put():
            tm = self.client.tm
            tm.begin()
            root = self.client.conn.root()
            if key not in root[POISON_KEY]:
                queue = root[KEY]['']
                root[POISON_KEY][key] = queue.put(
                    Job(self.poison_module.poison, key))
            tm.commit()
            return root[POISON_KEY][key]
        at = ns()
        job = self.retrying('put a poison job', put)
        self.poisoned = True
        self.faults.append(Fault(POISON, None, at, ns(), 'job %d@%s' % (
            ZODB.utils.u64(job._p_oid), self.poison_module.__name__)))
        self.say('put poison job %d', ZODB.utils.u64(job._p_oid))

    def putControlled(self):
        """The ``cancel`` fault: ten controlled jobs (see the module
        docstring); the pending ones are cancelled now, the running ones
        once they have begun (``cancelBegun``)."""
        import datetime
        from zcasync.job import Job
        from zcasync.interfaces import KEY
        from zcasync.utils import now
        path = self.log.path
        first = CONTROL_BASE + len(self.controlled)
        specs = []
        for coroutine in (False, True):
            specs.append((CANCEL_PENDING, coroutine, False, 6.0))
            for cooperative in (True, False):
                specs.append((CANCEL_RUNNING, coroutine, cooperative, 6.0))
                # an ignoring one outlasts the time limit and its grace
                # (5 s): it is forced
                specs.append((TIME_LIMIT, coroutine, cooperative,
                              6.0 if cooperative else self.limit + 7.0))
        numbered = list(zip(range(first, first + len(specs)), specs))

        def put():
            tm = self.client.tm
            tm.begin()
            root = self.client.conn.root()
            queue = root[KEY]['']
            jobs = root[CONTROL_KEY]
            for n, (what, coroutine, cooperative, length) in numbered:
                if n in jobs:
                    continue
                func = chaosjobs.aslow if coroutine else chaosjobs.slow
                job = Job(func, n, path, length, cooperative)
                job.addCallback(Job(chaosjobs.noteOutcome, n))
                # their failures are expected: logged at INFO, not as
                # errors (the harness's own cancels log here)
                quiet = logging.INFO
                if what == CANCEL_PENDING:
                    jobs[n] = queue.put(job, begin_after=now() +
                                        datetime.timedelta(hours=1),
                                        failure_log_level=quiet)
                elif what == TIME_LIMIT:
                    jobs[n] = queue.put(job, priority=1, timeout=(
                        datetime.timedelta(seconds=self.limit)),
                        failure_log_level=quiet)
                else:
                    jobs[n] = queue.put(job, priority=1,
                                        failure_log_level=quiet)
            tm.commit()
        at = ns()
        self.retrying('put controlled jobs', put)
        for n, (what, coroutine, cooperative, length) in numbered:
            self.controlled[n] = dict(
                what=what, coroutine=coroutine, cooperative=cooperative,
                asked=None, detail='-', seconds=(
                    self.limit if what == TIME_LIMIT else self.grace))
            if what == CANCEL_PENDING:
                self.cancel(n, self.grace)
            elif what == CANCEL_RUNNING:
                self.to_cancel.append((n, ns()))
        self.faults.append(Fault(CANCEL, None, at, ns(), 'jobs %d-%d' % (
            first, first + len(specs) - 1)))
        self.say('put controlled jobs %d-%d; cancelled %s', first,
                 first + len(specs) - 1, ', '.join(
                     '%d' % n for n, spec in numbered
                     if spec[0] == CANCEL_PENDING))

    def cancelBegun(self):
        """Cancel the jobs waiting for it whose run has begun (or after
        10 s anyway: they may be held up behind faults)."""
        if not self.to_cancel:
            return
        running = {n for runs in self.log.open.values() for n, run in runs}
        for n, since in list(self.to_cancel):
            if n in running or ns() - since > 10e9:
                self.to_cancel.remove((n, since))
                self.cancel(n, self.grace)
                self.say('cancelled job %d (%s): %s', n,
                         'running' if n in running else 'not begun',
                         self.controlled[n]['detail'])

    def cancel(self, n, grace):
        """``job.cancel(grace)`` from this process, committed (retried
        through faults); notes when and what it said."""
        from zcasync.interfaces import COMPLETED, BadStatusError
        record = self.controlled[n]

        def cancel():
            self.client.tm.begin()
            job = self.client.conn.root()[CONTROL_KEY][n]
            if job.status == COMPLETED and record['asked'] is not None:
                # an ambiguous commit of ours went through after all
                return 'completed (an earlier attempt committed)'
            try:
                return job.cancel(grace=grace)
            except BadStatusError as e:
                self.client.tm.abort()
                return 'refused: %s' % e
        record['asked'] = ns()
        record['detail'] = self.retrying('cancel job %d' % n, cancel)

    # -- jobs ------------------------------------------------------------

    def putJobs(self, numbers):
        from zcasync.job import Job
        from zcasync.interfaces import KEY
        numbers = list(numbers)
        path = self.log.path

        def put():
            tm = self.client.tm
            tm.begin()
            root = self.client.conn.root()
            jobs = root[JOBS_KEY]
            queue = root[KEY]['']
            for n in numbers:
                if n not in jobs:  # a retry after an ambiguous commit
                    func = chaosjobs.awork if n % 3 == 1 else chaosjobs.work
                    jobs[n] = queue.put(Job(func, n, path, self.pause))
            tm.commit()
        self.retrying('put jobs %s' % numbers, put)
        self.put = numbers[-1] + 1
        if self.poisoned:
            self.after_poison.update(numbers)

    def retrying(self, what, func, timeout=60):
        """func() until it does not raise (the database may be going
        through a fault); the last error after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return func()
            except Exception as e:
                self.client.tm.abort()
                if time.monotonic() > deadline:
                    raise AssertionError('could not %s within %g s: %r'
                                         % (what, timeout, e)) from e
                time.sleep(0.3)

    def checkExits(self):
        for worker in list(self.workers):
            if worker.killed or worker.reported or worker.process.alive:
                continue
            worker.reported = True
            self.say('%s (pid %d) exited by itself with %s; starting another',
                     worker.name, worker.process.pid,
                     worker.process.popen.returncode)
            self.startWorker()

    # -- the end -----------------------------------------------------------

    def waitFor(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.read()
            self.checkExits()
            try:
                if condition():
                    return True
            except Exception:
                self.client.tm.abort()
            time.sleep(0.3)
        self.say('gave up after %g s waiting for %s', timeout, what)
        return False

    def activeDispatchers(self):
        return self.client.activeDispatchers()

    def normalJobs(self):
        self.client.tm.begin()
        return list(self.client.conn.root()[JOBS_KEY].items())

    def allCompleted(self):
        from zcasync.interfaces import COMPLETED
        return all(job.status == COMPLETED for n, job in self.normalJobs()) \
            and all(job.status == COMPLETED for n, job in
                    self.client.conn.root()[CONTROL_KEY].items())

    def controlledRunsEnded(self):
        """No run of a controlled job still open in the run log (a run
        that ignored its stop goes on after its job completed), but for
        those of killed processes."""
        dead = {w.process.pid for w in self.workers if w.killed}
        return not any(n >= CONTROL_BASE for pid, runs in
                       self.log.open.items() if pid not in dead
                       for n, run in runs)

    def idle(self):
        """Nothing held by an agent, nothing in the queue but poison."""
        held, queued = self.leftovers()
        return not held and not queued

    def leftovers(self):
        """What agents hold and what the queue holds, less what other
        rows count: poison jobs, normal jobs in the queue (lost) and normal
        jobs held in a status that counts them as stuck already."""
        from zcasync.interfaces import KEY, ASSIGNED, ACTIVE, CALLBACKS
        self.client.tm.begin()
        root = self.client.conn.root()
        poison = {job._p_oid for job in root[POISON_KEY].values()}
        normal = {job._p_oid for job in root[JOBS_KEY].values()}
        normal.update(job._p_oid for job in root[CONTROL_KEY].values())
        queue = root[KEY]['']
        held = [(str(uuid), name, repr(job), job.status)
                for uuid, agents in queue.dispatchers.items()
                for name, agent in agents.items() for job in agent
                if job._p_oid not in poison and not (
                    job._p_oid in normal and
                    job.status in (ASSIGNED, ACTIVE, CALLBACKS))]
        queued = [(repr(job), job.status) for job in queue
                  if job._p_oid not in poison and job._p_oid not in normal]
        return held, queued

    def waitUntilDone(self):
        self.say('all faults injected; waiting up to %g s for every job',
                 self.settle)
        if self.waitFor(self.allCompleted, self.settle, 'every job'):
            self.say('every job completed')
            self.waitFor(self.idle, 15, 'idle agents and an empty queue')
            self.waitFor(self.controlledRunsEnded, 20,
                         'the end of every run that ignored its stop')

    def gather(self):
        from zcasync.utils import isFailure

        def state(n, job):
            result = job.result
            ok = not isFailure(result) and result == n
            text = (result.getErrorMessage() if isFailure(result)
                    else repr(result))
            if isFailure(result):
                text = '%s: %s' % (result.type.__name__, text)
            effects = tuple(self.client.conn.root()[chaosjobs.EFFECTS]
                            .get(n, ()))
            return JobState(n, job.status, ok, text[:200], effects)

        def read():
            jobs = []
            root = self.client.conn.root()
            controlled = {n: (state(n, job), tuple(
                root[chaosjobs.OUTCOMES].get(n, ())))
                for n, job in root[CONTROL_KEY].items()}
            for n, job in self.normalJobs():
                jobs.append(state(n, job))
            root = self.client.conn.root()
            poison = [('%d' % ZODB.utils.u64(job._p_oid), job.status,
                       repr(job.result)[:200])
                      for job in root[POISON_KEY].values()]
            held, queued = self.leftovers()
            uuids = {}
            for worker in self.workers:
                try:
                    with open(worker.uuid_file) as f:
                        uuid = uuidmodule.UUID(f.readline().strip())
                    uuids[str(uuid)] = worker.process.pid
                except (OSError, ValueError):
                    pass
            return jobs, poison, held, queued, uuids, controlled
        return self.retrying('read the final state', read)

    def stopWorkers(self):
        live = [w for w in self.workers if not w.killed]
        for worker in live:
            worker.process.signal(signal.SIGCONT)  # in case
            worker.process.signal(signal.SIGTERM)
        exits = []
        for worker in self.workers:
            code = None
            if worker.reported:
                code = 'exit %s during the run, by itself' % (
                    worker.process.popen.returncode,)
            elif not worker.killed:
                try:
                    code = worker.process.wait(60)
                except AssertionError:
                    code = 'no exit within 60 s of SIGTERM'
            exits.append((worker.name, worker.process.pid, worker.killed,
                          code))
        return exits

    def verdict(self, state, exits):
        jobs, poison, held, queued, uuids, controlled = state
        runs = self.log.runs()
        report = invariants.Report(self.storage, self.put,
                                   (ns() - self.origin) / 1e9, self.faults,
                                   self.origin)
        byJob = invariants.checkRuns(report, runs, self.faults)
        invariants.checkJobs(report, jobs, byJob, self.faults,
                             self.after_poison)
        report.count('coroutine jobs', amount=sum(
            1 for job in jobs if job.n % 3 == 1))
        asked = [Controlled(n, c['what'], c['coroutine'], c['cooperative'],
                            c['asked'], c['seconds'], c['detail'])
                 for n, c in sorted(self.controlled.items())]
        invariants.checkControlled(report, asked, controlled, byJob,
                                   self.faults)
        invariants.checkSlots(report, runs, self.faults, asked, self.size)
        from zcasync.interfaces import COMPLETED
        invariants.checkPoison(report, poison, (COMPLETED, PARKED))
        invariants.checkLeftovers(report, held, queued)
        invariants.checkWorkers(report, exits, runs, self.faults)
        invariants.checkDeaths(report, self.deathsDeclared(), uuids,
                               self.faults)
        report.notes.append('logs: %s' % self.directory)
        if report.violations:
            # the logs may not outlive the test's temporary directory:
            # show the end of every worker's log with the failure
            for worker in self.workers:
                lines = [line for line in worker.process.text().splitlines()
                         if ' DEBUG ' not in line and
                         ' succeeded in thread ' not in line]
                report.notes.append('--- %s (pid %d), last lines:\n%s' % (
                    worker.process.name, worker.process.pid,
                    '\n'.join(line[:300] for line in lines[-25:])))
        return report

    def deathsDeclared(self):
        found = []
        pattern = re.compile(r'\[(\d+)\]: dispatcher \S+ found dispatcher '
                             r'(\S+) dead')
        for worker in self.workers:
            for match in pattern.finditer(worker.process.text()):
                found.append((int(match.group(1)), match.group(2)))
        return found

    def cleanup(self):
        for timer in self.timers:
            timer.cancel()
        for worker in self.workers:
            if worker.process.alive:
                worker.process.signal(signal.SIGCONT)
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self.processes.reported = True  # the report names the log directory
        for worker in self.workers:
            worker.process.stop()
        self.processes.stopAll()
        if self.poison_module is not None:
            sys.modules.pop(self.poison_module.__name__, None)
            if self.poison_dir in sys.path:
                sys.path.remove(self.poison_dir)

