"""The chaos suite's checks on made-up records: each invariant counts
what it must, and only that (a harness that cannot see a violation would
prove nothing).  Fast, in-process."""
import re

from zcasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, PENDING

from tests.chaos import invariants
from tests.chaos.harness import RunLog, PARKED
from tests.chaos.invariants import (
    Run, Fault, JobState, KILL, STOP, ZEO_RESTART, POISON)

S = 10 ** 9  # one second in ns


def report(faults=()):
    return invariants.Report('zeo', 3, 1.0, list(faults), origin=0)


def run(n, pid, begin, end, name=None):
    return Run(n, pid, name or 'r%d-%d-%d' % (n, pid, begin), begin * S,
               None if end is None else end * S)


def test_overlapping_runs_of_two_live_processes_are_violations():
    r = report()
    invariants.checkRuns(r, [run(1, 100, 1, 3), run(1, 200, 2, 4)], [])
    assert r.counts['overlapping runs'] == 1
    [line] = r.evidence['overlapping runs']
    assert line.startswith('job 1: pid 100 ') and 'pid 200' in line
    assert r.info['external re-runs'] == 1


def test_runs_one_after_the_other_or_in_one_process_do_not_overlap():
    r = report()
    invariants.checkRuns(r, [run(1, 100, 1, 2), run(1, 200, 3, 4),
                             run(2, 100, 1, 3), run(2, 100, 2, 4)], [])
    assert r.counts['overlapping runs'] == 0
    assert r.info['external re-runs'] == 2


def test_a_stopped_or_killed_process_excuses_the_overlap():
    faults = [Fault(STOP, 100, 2 * S, 6 * S, ''),
              Fault(KILL, 300, 12 * S, None, '')]
    r = report(faults)
    invariants.checkRuns(r, [
        run(1, 100, 1, 7), run(1, 200, 5, 5.5),  # 100 stopped meanwhile
        run(2, 300, 11, None), run(2, 200, 11.5, 12.5),  # 300 killed
    ], faults)
    assert r.counts['overlapping runs'] == 0
    assert r.info['excused overlaps'] == 2


def test_a_killed_run_ends_at_the_kill():
    faults = [Fault(KILL, 300, 12 * S, None, '')]
    r = report(faults)
    invariants.checkRuns(r, [run(2, 300, 11, None), run(2, 200, 13, 14)],
                         faults)
    assert r.counts['overlapping runs'] == 0
    assert r.info['excused overlaps'] == 0


def test_a_run_that_never_ended_in_a_live_process_is_stuck():
    faults = [Fault(KILL, 300, 12 * S, None, '')]
    r = report(faults)
    invariants.checkRuns(r, [run(1, 300, 11, None), run(2, 100, 1, None)],
                         faults)
    assert r.counts['stuck'] == 1
    assert r.evidence['stuck'][0].startswith('job 2: pid 100 ')


def test_a_stop_of_another_time_does_not_excuse():
    faults = [Fault(STOP, 100, 20 * S, 25 * S, ''),
              Fault(ZEO_RESTART, None, 1 * S, 2 * S, '')]
    r = report(faults)
    invariants.checkRuns(r, [run(1, 100, 1, 3), run(1, 200, 2, 4)], faults)
    assert r.counts['overlapping runs'] == 1
    assert 'zeo-restart at 1.00-2.00' in r.evidence['overlapping runs'][0]


def test_jobs_lost_stuck_blocked_committed_twice_or_without_effect():
    runs = [run(0, 100, 1, 2, 'a'), run(0, 200, 3, 4, 'b'),
            run(1, 100, 1, 2, 'c'), run(4, 100, 1, 2, 'd')]
    jobs = [
        JobState(0, COMPLETED, True, '0', ((100, 'a'), (200, 'b'))),
        JobState(1, COMPLETED, True, '1', ()),
        JobState(2, PENDING, False, 'None', ()),
        JobState(3, ACTIVE, False, 'None', ()),
        JobState(4, COMPLETED, False, 'ValueError: x', ((100, 'd'),)),
        JobState(5, COMPLETED, True, '5', ((100, 'e'),)),
    ]
    r = report()
    byJob = invariants.checkRuns(r, runs, [])
    invariants.checkJobs(r, jobs, byJob, [], afterPoison={2, 5})
    assert r.counts['committed twice'] == 1
    assert 'job 0 committed by pid 100 run a' in \
        r.evidence['committed twice'][0]
    assert 'and pid 200 run b' in r.evidence['committed twice'][0]
    assert r.counts['effect missing'] == 1  # job 1
    assert r.counts['lost'] == 2  # jobs 2 and 3
    assert r.counts['stuck'] == 1  # job 3
    assert r.counts['queue blocked'] == 1  # job 2
    assert r.counts['failed results'] == 1  # job 4
    assert set(r.violations) == {'committed twice', 'effect missing', 'lost',
                                 'stuck', 'queue blocked', 'failed results'}


def test_poison_must_end_failed_or_parked():
    r = report()
    invariants.checkPoison(r, [('1', COMPLETED, 'Failure'), ('2', PARKED, ''),
                               ('3', PENDING, ''), ('4', ASSIGNED, '')],
                           (COMPLETED, PARKED))
    assert r.counts['poison not parked'] == 2
    assert r.evidence['poison not parked'] == [
        'poison job 3 is pending-status', 'poison job 4 is assigned-status']


def test_leftovers_workers_and_stalls():
    faults = [Fault(STOP, 100, 1 * S, 5 * S, ''),
              Fault(KILL, 300, 2 * S, None, '')]
    r = report(faults)
    invariants.checkLeftovers(r, [('u', 'main', 'job x', COMPLETED)],
                              [('job y', PENDING)])
    assert r.counts['stuck'] == 2
    invariants.checkWorkers(
        r, [('w1', 100, False, 0), ('w2', 200, False, 1),
            ('w3', 300, True, None), ('w4', 400, False, None)],
        [run(n, 200, 9, 9.1) for n in range(invariants.STALL_JOBS)],
        faults)
    assert r.counts['unexpected exits'] == 2  # exit 1 and no exit
    assert r.counts['stalled after SIGCONT'] == 1
    r = report(faults)
    invariants.checkWorkers(
        r, [], [run(99, 100, 6, 7)] +
        [run(n, 200, 9, 9.1) for n in range(invariants.STALL_JOBS)], faults)
    assert r.counts['stalled after SIGCONT'] == 0


def test_table_names_every_row_and_the_verdict():
    r = report([Fault(KILL, 1, 0, None, ''), Fault(KILL, 2, 0, None, ''),
                Fault(POISON, None, 0, 0, '')])
    assert r.table().splitlines()[0] == 'chaos run: PASSED'
    r.count('lost', 'job 7 is pending-status')
    table = r.table()
    assert table.splitlines()[0] == 'chaos run: FAILED'
    assert 'kill 2, poison 1' in table
    assert re.search(r'\n  lost +1  <-- VIOLATED\n', table)
    for name, _ in invariants.VIOLATIONS:
        assert name in table
    assert 'job 7 is pending-status' in table


def test_the_run_log_is_read_as_it_grows(tmp_path):
    path = tmp_path / 'runs.log'
    log = RunLog(str(path))
    log.read()  # no file yet
    with open(path, 'w') as f:
        f.write('begin 1 100 abc 5\nbegin 2 100 def 6\nend 1 10')
    log.read()
    assert log.open == {100: {(1, 'abc'): 5, (2, 'def'): 6}}
    with open(path, 'a') as f:
        f.write('0 abc 9 ok\n')
    assert log.runs() == [Run(1, 100, 'abc', 5, 9, 'ok'),
                          Run(2, 100, 'def', 6, None)]
    assert log.open == {100: {(2, 'def'): 6}}


def test_a_bad_line_in_the_run_log_is_an_error(tmp_path):
    import pytest
    path = tmp_path / 'runs.log'
    path.write_text('begin 1 100 abc 5\nstart 2\n')
    with pytest.raises(AssertionError, match="bad line .*start 2"):
        RunLog(str(path)).read()


def controlled(n, what, asked=None, seconds=1.0, cooperative=True):
    return invariants.Controlled(n, what, False, cooperative, asked,
                                 seconds, 'stopping')


def test_cancelled_and_time_limited_jobs_must_fail_with_their_error():
    jobs = [controlled(1, invariants.CANCEL_RUNNING, asked=2 * S),
            controlled(2, invariants.CANCEL_PENDING, asked=1 * S),
            controlled(3, invariants.TIME_LIMIT, seconds=0.5),
            controlled(4, invariants.CANCEL_RUNNING, asked=2 * S),
            controlled(5, invariants.TIME_LIMIT),
            controlled(6, invariants.CANCEL_PENDING, asked=1 * S)]
    runs = {1: [run(1, 100, 1, 4)], 3: [run(3, 100, 1, 2)],
            4: [run(4, 100, 1, 3)], 5: [run(5, 100, 1, 9)]}
    jobs.append(controlled(7, invariants.TIME_LIMIT))
    states = {
        1: (JobState(1, COMPLETED, False, 'CancelledError: cancelled', ()),
            ('CancelledError',)),
        # completed twice (its callback committed two outcomes)
        2: (JobState(2, COMPLETED, False, 'CancelledError: before', ()),
            ('CancelledError', 'CancelledError')),
        3: (JobState(3, COMPLETED, False, 'TimeLimitError: exceeded', ()),
            ('TimeLimitError',)),
        # a cancelled running job that returned its result and committed
        4: (JobState(4, COMPLETED, True, '4', ((100, 'r4-100-1'),)),
            ('int',)),
        # past its limit and still running at the end
        5: (JobState(5, ACTIVE, False, 'None', ()), ()),
        # 6 is missing; 7's callbacks never ran
        7: (JobState(7, COMPLETED, False, 'TimeLimitError: exceeded', ()),
            ()),
    }
    r = report()
    invariants.checkControlled(r, jobs, states, runs, [])
    assert r.counts['cancel not honoured'] == 3  # 2, 4 and 6
    assert r.counts['time limit not honoured'] == 2  # 5 and 7
    assert r.counts['stuck'] == 1  # 5
    assert r.counts['stopped run committed'] == 1  # 4
    assert 'job 4' in r.evidence['stopped run committed'][0]
    assert r.info['cancelled running'] == 2
    assert r.info['cancelled before start'] == 2
    assert r.info['past time limit'] == 3


def test_a_worker_running_more_jobs_than_its_size_is_counted_once():
    runs = [run(1, 100, 1, 5), run(2, 100, 2, 6), run(3, 100, 3, 7),
            run(4, 100, 4, 4.5), run(5, 100, 4.2, 4.8),  # 5 at once
            run(6, 200, 1, 2), run(7, 200, 2, 3), run(8, 200, 3, 4)]
    r = report()
    invariants.checkSlots(r, runs, [], [], size=3)
    assert r.counts['slots over size'] == 1
    assert r.evidence['slots over size'][0].startswith('pid 100 ran 4 jobs')
    assert r.info['most runs at once'] == 5


def test_a_stopped_run_frees_its_slot_at_its_grace_or_time_limit():
    # job 1 cancelled at 2 s with 1 s grace, job 2 limited to 1 s: both go
    # on (they ignore the stop) while jobs 3-5 take their slots
    jobs = [controlled(1, invariants.CANCEL_RUNNING, asked=2 * S,
                       cooperative=False),
            controlled(2, invariants.TIME_LIMIT, seconds=1.0,
                       cooperative=False)]
    runs = [run(1, 100, 1, 9), run(2, 100, 1, 9), run(3, 100, 3.5, 5),
            run(4, 100, 3.5, 5), run(5, 100, 3.5, 5)]
    r = report()
    invariants.checkSlots(r, runs, [], jobs, size=3)
    assert r.counts['slots over size'] == 0
    r = report()  # the same without the stops: over
    invariants.checkSlots(r, runs, [], [], size=3)
    assert r.counts['slots over size'] == 1
    # a SIGSTOPped process's runs are left out
    faults = [Fault(STOP, 100, 2 * S, 6 * S, '')]
    r = report(faults)
    invariants.checkSlots(r, runs, faults, [], size=3)
    assert r.counts['slots over size'] == 0
