"""The chaos suite's checks on made-up records: each invariant counts
what it must, and only that (a harness that cannot see a violation would
prove nothing).  Fast, in-process."""
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
    assert 'lost                   1  <-- VIOLATED' in table
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
    assert log.runs() == [Run(1, 100, 'abc', 5, 9), Run(2, 100, 'def', 6,
                                                         None)]
    assert log.open == {100: {(2, 'def'): 6}}


def test_a_bad_line_in_the_run_log_is_an_error(tmp_path):
    import pytest
    path = tmp_path / 'runs.log'
    path.write_text('begin 1 100 abc 5\nstart 2\n')
    with pytest.raises(AssertionError, match="bad line .*start 2"):
        RunLog(str(path)).read()
