"""Periodic jobs fired by worker processes over ZEO (issue 14).

- three workers and a schedule every second for about 20 s, while one
  worker is killed with SIGKILL and restarted: each tick produced exactly
  one job, none missing;
- all workers down for longer than the grace period: the missed ticks are
  skipped, or with ``catch_up=True`` the last one runs once, late.

Ticks are read back from the jobs' ``zcasync.tick`` annotations.
"""
import datetime
import signal
import time

from tests.processes import jobfuncs
from tests.processes.conftest import Client, waitFor, DEATH

SECOND = datetime.timedelta(seconds=1)


def setSchedule(client, name, *args, **kw):
    for attempt in client.tm.attempts(10):
        with attempt:
            client.queue().schedule(name, jobfuncs.record, *args, **kw)


def pauseSchedules(client, *names):
    for attempt in client.tm.attempts(10):
        with attempt:
            for name in names:
                client.queue().schedules[name].pause()


def jobsOf(client, name):
    """Every job of schedule `name`: pending, held or completed."""
    queue = client.queue()
    jobs = list(queue)
    for agents in queue.dispatchers.values():
        for agent in agents.values():
            jobs.extend(agent)
            jobs.extend(agent.completed)
    return [job for job in jobs
            if job.annotations.get('zcasync.schedule') == name]


def allCompleted(client, name):
    from zcasync.interfaces import COMPLETED
    return all(job.status == COMPLETED for job in jobsOf(client, name))


def test_three_workers_fire_each_tick_once_through_a_kill(processes, zeo,
                                                          tmp_path):
    log = str(tmp_path / 'runs.log')
    workers = [processes.worker('w%d' % i, zeo.uri) for i in range(3)]
    client = Client(zeo.uri)
    try:
        waitFor(lambda: len(client.activeDispatchers()) == 3, 60,
                'three workers')
        setSchedule(client, 'beat', 1, log, every=SECOND)
        created = client.queue().schedules['beat'].last_tick
        time.sleep(6)
        victim = workers[0]
        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        time.sleep(4)
        # restarted with its UUID file: it waits for its old record to
        # be found dead, then joins again
        processes.worker('w0-again', zeo.uri, tmp_path / 'w0.uuid')
        waitFor(lambda: len(client.activeDispatchers()) == 3, DEATH + 30,
                'the restarted worker')
        deadline = created + datetime.timedelta(seconds=20)
        waitFor(lambda: client.queue().schedules['beat'].last_tick >=
                deadline, 30, '20 s of ticks')
        pauseSchedules(client, 'beat')
        waitFor(lambda: allCompleted(client, 'beat'), 30,
                'the jobs of the schedule to complete')

        schedule = client.queue().schedules['beat']
        ticks = sorted(job.annotations['zcasync.tick']
                       for job in jobsOf(client, 'beat'))
        assert len(ticks) >= 20
        assert len(set(ticks)) == len(ticks), 'a tick fired twice'
        gaps = {b - a for a, b in zip(ticks, ticks[1:])}
        assert gaps == {SECOND}, 'a tick is missing: gaps %s' % gaps
        assert ticks[0] - created <= SECOND  # the first tick after setting
        assert ticks[-1] == schedule.last_tick
        assert schedule.fired == len(ticks)
        # each job ran (which process fires a tick is a race: often the
        # same one wins them all)
        for job in jobsOf(client, 'beat'):
            assert job.result[0] == 1 and job.annotations['runs'] >= 1
    finally:
        client.close()


def test_ticks_missed_while_all_workers_are_down(processes, zeo, tmp_path):
    log = str(tmp_path / 'runs.log')
    every, grace = datetime.timedelta(seconds=3), datetime.timedelta(
        seconds=2)
    worker = processes.worker('only', zeo.uri)
    client = Client(zeo.uri)
    try:
        waitFor(lambda: len(client.activeDispatchers()) == 1, 60,
                'the worker')
        setSchedule(client, 'skip', 1, log, every=every, grace=grace)
        setSchedule(client, 'catch', 2, log, every=every, grace=grace,
                    catch_up=True)
        waitFor(lambda: client.queue().schedules['catch'].fired >= 1, 20,
                'a first tick')
        assert worker.stop() == 0
        time.sleep(10)  # three ticks or more, all older than the grace
        processes.worker('again', zeo.uri, tmp_path / 'only.uuid')
        waitFor(lambda: len(client.activeDispatchers()) == 1, DEATH + 30,
                'the restarted worker')
        fired = client.queue().schedules['catch'].fired
        waitFor(lambda: client.queue().schedules['catch'].fired >= fired + 2,
                20, 'two ticks after the restart')
        pauseSchedules(client, 'skip', 'catch')
        waitFor(lambda: allCompleted(client, 'skip') and
                allCompleted(client, 'catch'), 30, 'the jobs to complete')

        def late(name):
            """Jobs put more than the grace after their tick."""
            return [job for job in jobsOf(client, name)
                    if job.begin_after - job.annotations['zcasync.tick'] >
                    grace]
        skipped = sorted(j.annotations['zcasync.tick']
                         for j in jobsOf(client, 'skip'))
        outage = max(b - a for a, b in zip(skipped, skipped[1:]))
        assert outage >= 3 * every  # ticks were skipped...
        assert late('skip') == []   # ...and none ran late
        [caught] = late('catch')    # the last missed tick, run once
        tick = caught.annotations['zcasync.tick']
        caught_ticks = sorted(j.annotations['zcasync.tick']
                              for j in jobsOf(client, 'catch'))
        assert len(set(caught_ticks)) == len(caught_ticks)
        following = caught_ticks[caught_ticks.index(tick) + 1]
        assert following - tick == every  # no missed tick after it
        previous = caught_ticks[caught_ticks.index(tick) - 1]
        assert tick - previous >= 2 * every  # older missed ticks skipped
    finally:
        client.close()
