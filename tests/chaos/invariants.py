"""The invariants of a chaos run, checked over everything it recorded.

Pure functions over plain data, so that they are tested on their own
(``test_invariants.py``) and a run's verdict does not depend on the
processes still being there:

- ``runs``: every execution of a job function, from the external log
  (``Run``: job number, pid, run id, begin and end in ``monotonic_ns``;
  end None when the process died or stopped before it);
- ``faults``: what the harness did (``Fault``: kind, target pid, start and
  end in ``monotonic_ns``);
- ``jobs``: the final state of every normal job, read from the database
  (``JobState``: status, whether the result is the job's own return
  value, the committed effects);
- ``controlled``: the jobs the harness cancelled or put with a time
  limit (``Controlled``: job number, what was done to it, whether it is
  a coroutine job, whether it heeds a stop request, when the cancel was
  asked, its grace or time limit, what ``cancel()`` returned) and their
  final state (``JobState`` as above);
- the rest: poison jobs, what agents and the queue still hold, worker
  exits, death declarations found in the workers' logs.

Every invariant is counted over all jobs, not sampled; each count comes
with evidence lines naming the jobs, runs and faults involved.
"""
import collections

from zcasync.interfaces import ASSIGNED, ACTIVE, CALLBACKS, COMPLETED

KILL, STOP, ZEO_RESTART, PG_TERMINATE, POISON, CANCEL = (
    'kill', 'stop', 'zeo-restart', 'pg-terminate', 'poison', 'cancel')
FAULT_KINDS = (KILL, STOP, ZEO_RESTART, PG_TERMINATE, POISON, CANCEL)

#: what the harness did to a controlled job
CANCEL_PENDING, CANCEL_RUNNING, TIME_LIMIT = (
    'cancel-pending', 'cancel-running', 'time-limit')

Run = collections.namedtuple('Run', 'n pid run begin end outcome',
                             defaults=(None,))
Controlled = collections.namedtuple(
    'Controlled', 'n what coroutine cooperative asked seconds detail')
Fault = collections.namedtuple('Fault', 'kind pid at until detail')
JobState = collections.namedtuple('JobState', 'n status ok result effects')

#: rows that must be zero, in table order, with what each one means
VIOLATIONS = (
    ('lost', 'normal jobs not COMPLETED at the end'),
    ('committed twice', 'completed jobs whose effect committed > 1 time'),
    ('effect missing', 'successful jobs whose effect never committed'),
    ('failed results', 'completed jobs whose result is not their return '
     'value'),
    ('stuck', 'jobs ASSIGNED/ACTIVE/CALLBACKS, agent entries or queue '
     'entries left when all is idle'),
    ('overlapping runs', 'pairs of runs of one job by different live '
     'processes at the same time'),
    ('queue blocked', 'normal jobs put after a poison job and not '
     'completed'),
    ('poison not parked', 'poison jobs neither failed nor parked'),
    ('cancel not honoured', 'cancelled jobs not COMPLETED with '
     'CancelledError'),
    ('time limit not honoured', 'jobs past their time limit not COMPLETED '
     'with TimeLimitError'),
    ('stopped run committed', 'cancelled or time-limited jobs whose '
     'effect committed'),
    ('slots over size', 'moments a worker ran more jobs at once than its '
     'agent size'),
    ('unexpected exits', 'workers that died or exited non-zero without '
     'being killed'),
    ('stalled after SIGCONT', 'resumed workers that never ran a job '
     'again while others did'),
)
#: rows shown for information
INFO = ('external re-runs', 'excused overlaps', 'deaths declared',
        'coroutine jobs', 'cancelled before start', 'cancelled running',
        'past time limit', 'stop ignored', 'stop heeded',
        'most runs at once')

MAX_EVIDENCE = 8
#: a resumed worker must begin a job again once this many jobs began
#: elsewhere after its SIGCONT
STALL_JOBS = 20


def seconds(ns, origin):
    return (ns - origin) / 1e9


class Report:

    def __init__(self, storage, jobs, duration, faults, origin):
        self.storage = storage
        self.jobs = jobs
        self.duration = duration
        self.faults = faults
        self.origin = origin
        self.counts = collections.OrderedDict(
            (name, 0) for name, _ in VIOLATIONS)
        self.info = collections.OrderedDict((name, 0) for name in INFO)
        self.evidence = collections.defaultdict(list)
        self.notes = []

    def count(self, name, evidence=None, amount=1):
        if name in self.counts:
            self.counts[name] += amount
        else:
            self.info[name] = self.info.get(name, 0) + amount
        if evidence is not None:
            self.evidence[name].append(evidence)

    @property
    def violations(self):
        return {name: n for name, n in self.counts.items() if n}

    def faultsByKind(self):
        kinds = collections.Counter(f.kind for f in self.faults)
        return ', '.join('%s %d' % (k, kinds[k]) for k in FAULT_KINDS
                         if kinds[k]) or 'none'

    def table(self):
        rows = [('storage', self.storage),
                ('faults', self.faultsByKind()),
                ('jobs', str(self.jobs))]
        rows += [(name, '%d%s' % (n, '  <-- VIOLATED' if n else ''))
                 for name, n in self.counts.items()]
        rows += [(name, str(n)) for name, n in self.info.items()]
        rows.append(('duration', '%.1f s' % self.duration))
        width = max(len(name) for name, _ in rows)
        lines = ['chaos run: %s' % ('PASSED' if not self.violations
                                    else 'FAILED')]
        lines += ['  %-*s  %s' % (width, name, value)
                  for name, value in rows]
        for name in list(self.counts) + list(self.info):
            found = self.evidence.get(name)
            if not found:
                continue
            lines.append('%s:' % name)
            lines += ['  ' + line for line in found[:MAX_EVIDENCE]]
            if len(found) > MAX_EVIDENCE:
                lines.append('  ... and %d more' % (len(found) - MAX_EVIDENCE))
        lines += self.notes
        return '\n'.join(lines)


def describeRun(run, origin):
    end = '-' if run.end is None else '%.2f' % seconds(run.end, origin)
    return 'pid %d run %s [%.2f, %s]' % (
        run.pid, run.run, seconds(run.begin, origin), end)


def describeFault(fault, origin):
    text = '%s' % fault.kind
    if fault.pid is not None:
        text += ' pid %d' % fault.pid
    text += ' at %.2f' % seconds(fault.at, origin)
    if fault.until is not None:
        text += '-%.2f' % seconds(fault.until, origin)
    if fault.detail:
        text += ' (%s)' % fault.detail
    return text


def runInterval(run, faults):
    """(begin, end) of a run; a run without an end ends when its process
    was killed, else never (it is still going, or vanished)."""
    if run.end is not None:
        return run.begin, run.end
    kills = [f.at for f in faults
             if f.kind == KILL and f.pid == run.pid and f.at >= run.begin]
    return run.begin, min(kills) if kills else float('inf')


def faultedBy(run, faults):
    """The SIGSTOP or SIGKILL faults of the run's own process during the
    run (such a process may legitimately be thought dead)."""
    begin, end = runInterval(run, faults)
    found = []
    for fault in faults:
        if fault.pid != run.pid or fault.kind not in (KILL, STOP):
            continue
        until = fault.until if fault.until is not None else fault.at
        if fault.at <= end and until >= begin:
            found.append(fault)
    return found


def nearbyFaults(runs, faults, origin):
    """Faults that touched the processes of `runs` or everyone (a server
    restart, terminated backends) while they ran."""
    pids = {r.pid for r in runs}
    begin = min(r.begin for r in runs)
    end = max(runInterval(r, faults)[1] for r in runs)
    found = []
    for fault in faults:
        until = fault.until if fault.until is not None else fault.at
        if (fault.pid is None or fault.pid in pids) and \
                fault.at <= end and until >= begin - 3e9:
            found.append(describeFault(fault, origin))
    return '; '.join(found) or 'no fault nearby'


def checkRuns(report, runs, faults):
    """Overlapping runs and external re-runs."""
    origin = report.origin
    byJob = collections.defaultdict(list)
    for run in runs:
        byJob[run.n].append(run)
    killed = {f.pid for f in faults if f.kind == KILL}
    for n, its in sorted(byJob.items()):
        report.count('external re-runs', amount=len(its) - 1)
        for run in its:
            if run.end is None and run.pid not in killed:
                # the job function logs its end even when it raises
                report.count('stuck', 'job %d: %s never ended, and its '
                             'process was not killed' % (
                                 n, describeRun(run, origin)))
        for i, a in enumerate(its):
            for b in its[i + 1:]:
                if a.pid == b.pid:
                    continue  # one process retrying in place
                a0, a1 = runInterval(a, faults)
                b0, b1 = runInterval(b, faults)
                if a0 > b1 or b0 > a1:
                    continue
                pair = 'job %d: %s and %s' % (
                    n, describeRun(a, origin), describeRun(b, origin))
                excuse = faultedBy(a, faults) + faultedBy(b, faults)
                if excuse:
                    report.count('excused overlaps', '%s; %s' % (
                        pair, ', '.join(describeFault(f, origin)
                                        for f in excuse)))
                else:
                    report.count('overlapping runs', '%s; %s' % (
                        pair, nearbyFaults([a, b], faults, origin)))
    return byJob


def checkJobs(report, jobs, byJob, faults, afterPoison):
    """Completion, exactly-once effects and results of the normal jobs."""
    origin = report.origin
    for state in jobs:
        its = byJob.get(state.n, [])
        if state.status != COMPLETED:
            report.count('lost', 'job %d is %s after %d run(s)' % (
                state.n, state.status, len(its)))
            if state.n in afterPoison:
                report.count('queue blocked', 'job %d (put after a poison '
                             'job) is %s' % (state.n, state.status))
            if state.status in (ASSIGNED, ACTIVE, CALLBACKS):
                report.count('stuck', 'job %d is %s' % (state.n,
                                                         state.status))
            continue
        if not state.ok:
            report.count('failed results', 'job %d: %s; %s' % (
                state.n, ' '.join(state.result.split()),
                nearbyFaults(its, faults, origin) if its else 'never ran'))
        committed = [r for r in its if (r.pid, r.run) in
                     set(state.effects)]
        if len(state.effects) > 1:
            report.count('committed twice', 'job %d committed by %s; %s' % (
                state.n, ' and '.join(describeRun(r, origin)
                                      for r in committed) or
                repr(state.effects),
                nearbyFaults(committed or its, faults, origin)))
        elif not state.effects and state.ok:
            report.count('effect missing', 'job %d completed with %r but '
                         'no run committed its effect (%d run(s))' % (
                             state.n, state.result, len(its)))


def checkPoison(report, poison, accepted):
    """poison: [(oid text, status, result text)]."""
    for oid, status, result in poison:
        if status not in accepted:
            report.count('poison not parked', 'poison job %s is %s' % (
                oid, status))
        else:
            report.notes.append('poison job %s ended %s: %s' % (
                oid, status, result))


def checkLeftovers(report, held, queued):
    """held: [(dispatcher uuid, agent name, job text, status)] still in
    agents; queued: [(job text, status)] still in the queue (poison jobs
    excluded) once every normal job completed and the workers are idle."""
    for uuid, agent, job, status in held:
        report.count('stuck', 'agent %s/%s still holds %s (%s)' % (
            uuid, agent, job, status))
    for job, status in queued:
        report.count('stuck', 'queue still holds %s (%s)' % (job, status))


def checkWorkers(report, workers, runs, faults):
    """workers: [(name, pid, killed, exit code or None if still running at
    the end)], checked after the harness stopped them with SIGTERM."""
    origin = report.origin
    for name, pid, killed, code in workers:
        if killed:
            continue
        if code != 0:
            report.count('unexpected exits', '%s (pid %d) exited with %s'
                         % (name, pid, code))
    killedPids = {f.pid for f in faults if f.kind == KILL}
    for fault in faults:
        if fault.kind != STOP or fault.pid in killedPids or \
                fault.until is None:
            continue
        mine = [r for r in runs if r.pid == fault.pid and
                r.begin > fault.until]
        others = [r for r in runs if r.pid != fault.pid and
                  r.begin > fault.until + 3e9]
        if not mine and len(others) >= STALL_JOBS:
            report.count('stalled after SIGCONT', 'pid %d resumed at %.2f '
                         'and began no job; %d began elsewhere' % (
                             fault.pid, seconds(fault.until, origin),
                             len(others)))


def checkDeaths(report, declared, pidsByUUID, faults):
    """declared: [(declaring pid, dead uuid)] from the workers' logs."""
    kinds = collections.defaultdict(set)
    for fault in faults:
        kinds[fault.pid].add(fault.kind)
    for by, uuid in declared:
        pid = pidsByUUID.get(uuid)
        why = sorted(kinds.get(pid, ())) if pid is not None else []
        report.count('deaths declared', '%s (pid %s, faults: %s) declared '
                     'dead by pid %d' % (uuid, pid, ', '.join(why) or
                                         'none', by))


def checkControlled(report, controlled, states, byJob, faults):
    """controlled: [Controlled]; states: {n: (JobState, outcomes)}, where
    outcomes are the type names its callback committed, one per
    completion.  A cancelled job must end COMPLETED with CancelledError,
    a job past its time limit with TimeLimitError (the default retry
    policy does not retry it), exactly once (one outcome, that one), and
    neither may have committed its effect: a run asked to stop that
    returns anyway (``stop ignored``) has its work discarded."""
    origin = report.origin
    for job in controlled:
        state, outcomes = states.get(job.n, (None, ()))
        its = byJob.get(job.n, [])
        kind = '%s %s job %d (%s)' % (
            'coroutine' if job.coroutine else 'sync',
            'cooperative' if job.cooperative else 'ignoring', job.n,
            job.what)
        if job.what == TIME_LIMIT:
            row, expected = 'time limit not honoured', 'TimeLimitError'
            report.count('past time limit')
        else:
            row, expected = 'cancel not honoured', 'CancelledError'
            started = job.asked is not None and any(
                r.begin < job.asked for r in its)
            report.count('cancelled running' if started
                         else 'cancelled before start')
        for run in its:
            if run.outcome == 'ok':
                report.count('stop ignored')
            elif run.outcome == 'stopped':
                report.count('stop heeded')
        where = nearbyFaults(its, faults, origin) if its else 'never ran'
        if state is None:
            report.count(row, '%s: not found in the database' % kind)
            continue
        if state.status != COMPLETED:
            report.count(row, '%s is %s; cancel: %s; %s' % (
                kind, state.status, job.detail, where))
            if state.status in (ASSIGNED, ACTIVE, CALLBACKS):
                report.count('stuck', '%s is %s' % (kind, state.status))
        elif not state.result.startswith(expected + ':'):
            report.count(row, '%s ended with %s; cancel: %s; %s' % (
                kind, ' '.join(state.result.split())[:120], job.detail,
                where))
        elif outcomes != (expected,):
            report.count(row, '%s completed %d time(s), with %s; '
                         'cancel: %s; %s' % (
                             kind, len(outcomes), ', '.join(outcomes) or
                             '-', job.detail, where))
        if state.effects:
            committed = [r for r in its if (r.pid, r.run) in
                         set(state.effects)]
            report.count('stopped run committed', '%s committed by %s; '
                         'cancel: %s; %s' % (
                             kind, ' and '.join(describeRun(r, origin)
                                                for r in committed) or
                             repr(state.effects), job.detail, where))


def slotEnd(run, faults, controlled):
    """Until when a run holds its agent slot as far as the records can
    tell: its end (or its process's kill), but no later than the moment
    its job may have been taken from it -- a cancel's grace after the
    cancel was asked, or the time limit after the run began (the job's
    deadline counts from before the run's first line, and its forcing
    comes `time_limit_grace` later, so this is early, never late)."""
    end = runInterval(run, faults)[1]
    job = controlled.get(run.n)
    if job is None:
        return end
    if job.what == TIME_LIMIT:
        return min(end, run.begin + int(job.seconds * 1e9))
    if job.asked is not None:
        return min(end, job.asked + int(job.seconds * 1e9))
    return end


def checkSlots(report, runs, faults, controlled, size):
    """No process runs more than `size` jobs at once (one agent per
    worker): counted from the runs' intervals, less the time a stopped
    run goes on after its job was taken from it, and less the runs of a
    SIGSTOPped process (declared dead, it may rightly find its jobs
    gone); each excess episode of a process counts once.  The most runs
    one process had at once is shown for information."""
    controlled = {job.n: job for job in controlled}
    byPid = collections.defaultdict(list)
    for run in runs:
        if faultedBy(run, faults) and any(
                f.kind == STOP for f in faultedBy(run, faults)):
            continue
        end = slotEnd(run, faults, controlled)
        if end == float('inf'):
            continue  # never ended: counted as stuck
        byPid[run.pid].append((run.begin, 1, run))
        byPid[run.pid].append((end, -1, run))
    for pid, events in sorted(byPid.items()):
        events.sort(key=lambda e: (e[0], e[1]))  # ends before begins
        open_ = set()
        over = False
        for stamp, delta, run in events:
            if delta < 0:
                open_.discard(run)
                over = over and len(open_) > size
                continue
            open_.add(run)
            report.info['most runs at once'] = max(
                report.info['most runs at once'], len(open_))
            if len(open_) > size and not over:
                over = True
                report.count('slots over size', 'pid %d ran %d jobs at '
                             '%.2f: %s' % (
                                 pid, len(open_),
                                 seconds(stamp, report.origin),
                                 '; '.join('job %d %s' % (
                                     r.n, describeRun(r, report.origin))
                                     for r in sorted(open_,
                                                     key=lambda r: r.begin))))
