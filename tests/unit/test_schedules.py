"""Schedules (issue 14): ticks of cron expressions and intervals, firing,
missed ticks and catch-up, daylight-saving changes in a schedule's time
zone, next runs, updates, pause/resume/remove, bad input.  Schedules are
fired by calling ``Schedules.fire`` as a dispatcher's poll does, with an
injected clock (FixedClock); dispatchers firing them are in
tests/integration/test_schedules_dispatch.py and tests/processes/
test_schedules_processes.py."""
import datetime
import zoneinfo

import pytest

from zcasync import testing
from zcasync.interfaces import COMPLETED
from zcasync.schedules import Schedule

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')
HOUR = datetime.timedelta(hours=1)  # polls in these tests are 10 min apart
_calls = []


def report(name, when=None):
    _calls.append((name, when))
    return name


def at(*args, tz=UTC):
    return datetime.datetime(*args, tzinfo=tz)


def ticks(queue):
    """The tick of each job in the queue, in claim order."""
    return [job.annotations['zcasync.tick'] for job in queue]


def fire(queue):
    return queue.schedules.fire(queue)


def test_every_fires_one_job_per_tick(queue, clock):
    schedule = queue.schedule('beat', report, 'beat', when='now',
                              every=datetime.timedelta(seconds=10))
    assert isinstance(schedule, Schedule) and queue.schedules['beat'] is \
        schedule
    assert fire(queue) == (0, at(2030, 1, 1, 12, 0, 40))
    clock.advance(10)  # 12:00:40
    count, soonest = fire(queue)
    assert (count, soonest) == (1, at(2030, 1, 1, 12, 0, 50))
    assert fire(queue) == (0, soonest)  # the tick is taken
    job = queue[0]
    assert (job.args[0], job.kwargs['when']) == ('beat', 'now')
    assert job.annotations['zcasync.schedule'] == 'beat'
    # a poll a little late fires each tick passed, one job each
    clock.advance(25)  # 12:01:05: ticks :50 and :00
    assert fire(queue)[0] == 2
    assert ticks(queue) == [at(2030, 1, 1, 12, 0, 40),
                            at(2030, 1, 1, 12, 0, 50),
                            at(2030, 1, 1, 12, 1, 0)]
    assert schedule.last_tick == at(2030, 1, 1, 12, 1, 0)
    assert schedule.fired == 3 and schedule.last_job is queue[2]


def test_cron_ticks_in_utc_and_next_runs(queue, clock):
    schedule = queue.schedule('five', report, 'five', cron='*/5 * * * *')
    assert schedule.next_runs(3) == [at(2030, 1, 1, 12, 5),
                                     at(2030, 1, 1, 12, 10),
                                     at(2030, 1, 1, 12, 15)]
    assert fire(queue) == (0, at(2030, 1, 1, 12, 5))
    clock.now = at(2030, 1, 1, 12, 5, 0, 100)
    assert fire(queue)[0] == 1
    assert ticks(queue) == [at(2030, 1, 1, 12, 5)]
    assert schedule.nextRuns(1) == [at(2030, 1, 1, 12, 10)]


def test_missed_ticks_are_skipped_by_default(queue, clock):
    schedule = queue.schedule('m', report, 'm', cron='* * * * *')
    clock.now = at(2030, 1, 1, 13, 0, 40)  # an hour without dispatchers
    assert fire(queue) == (0, at(2030, 1, 1, 13, 1))
    assert len(queue) == 0
    clock.now = at(2030, 1, 1, 13, 1, 5)
    assert fire(queue)[0] == 1
    assert ticks(queue) == [at(2030, 1, 1, 13, 1)]
    assert schedule.fired == 1


def test_catch_up_runs_the_last_missed_tick_once(queue, clock):
    schedule = queue.schedule('c', report, 'c', cron='0 * * * *',
                              catch_up=True)
    clock.now = at(2030, 1, 1, 15, 20)  # 13:00, 14:00, 15:00 missed
    assert fire(queue)[0] == 1
    assert ticks(queue) == [at(2030, 1, 1, 15, 0)]
    assert fire(queue)[0] == 0  # once
    clock.now = at(2030, 1, 1, 16, 0, 1)
    assert fire(queue)[0] == 1
    assert ticks(queue)[-1] == at(2030, 1, 1, 16, 0)
    assert schedule.fired == 2


def test_grace_decides_what_counts_as_missed(queue, clock):
    queue.schedule('g', report, 'g', every=datetime.timedelta(seconds=1),
                   grace=datetime.timedelta(seconds=3))
    clock.advance(10)  # 12:00:40; ticks from :31 to :40; :37 is 3 s old
    assert fire(queue)[0] == 3
    assert ticks(queue) == [at(2030, 1, 1, 12, 0, 38),
                            at(2030, 1, 1, 12, 0, 39),
                            at(2030, 1, 1, 12, 0, 40)]


def test_pause_resume_update_and_remove(queue, conn, clock):
    schedule = queue.schedule('p', report, 'p',
                              every=datetime.timedelta(seconds=10))
    conn.transaction_manager.commit()
    changes = queue.schedules.changes()
    schedule.pause()
    assert schedule.next_runs(2) == []
    clock.advance(30)
    assert fire(queue) == (0, None)
    schedule.resume()  # ticks while paused are skipped
    assert fire(queue)[0] == 0
    clock.advance(10)
    assert fire(queue)[0] == 1
    # updating by name: same object, new timing, counted from now
    updated = queue.schedule('p', report, 'q', cron='0 0 * * *')
    assert updated is schedule and schedule.cron == '0 0 * * *'
    assert schedule.every is None and schedule.args == ('q',)
    assert schedule.next_runs(1) == [at(2030, 1, 2)]
    clock.advance(60)
    assert fire(queue)[0] == 0
    removed = queue.schedules.remove('p')
    assert removed is schedule and 'p' not in queue.schedules
    assert len(queue.schedules) == 0
    assert queue.schedules.changes() == changes + 4  # dispatchers notice


def test_a_schedule_whose_callable_is_gone_changes_nothing(queue, clock,
                                                          caplog):
    good = queue.schedule('good', report, 'good',
                          every=datetime.timedelta(seconds=10))
    bad = queue.schedule('bad', report, 'bad',
                         every=datetime.timedelta(seconds=10))
    bad._callable_root = 42  # as if the function could not be found
    clock.advance(10)
    assert fire(queue)[0] == 1
    assert [job.args[0] for job in queue] == ['good']
    assert good.fired == 1 and bad.fired == 0
    assert bad.last_tick == START
    assert 'cannot fire schedule' in caplog.text


def test_jobs_of_a_schedule_run(queue, conn, clock):
    import uuid
    from zcasync.agent import Agent
    agent = testing.activeRegistration(queue, uuid.uuid4())['main'] = Agent()
    queue.schedule('r', report, 'r', every=datetime.timedelta(seconds=5))
    clock.advance(5)
    fire(queue)
    job = agent.claimJob()
    conn.transaction_manager.commit()
    assert job() == 'r' and job.status == COMPLETED


# --- daylight-saving changes (Europe/Berlin, 2030: spring forward on March
# 31 at 02:00 -> 03:00, fall back on October 27 at 03:00 -> 02:00) -------

def runDays(queue, clock, start, days, step=600):
    """Poll every `step` seconds for `days` days from `start`."""
    clock.now = start
    end = start + datetime.timedelta(days=days)
    while clock.now < end:
        fire(queue)
        clock.advance(step)


def test_dst_spring_forward_neither_skips_nor_doubles(queue, clock):
    clock.now = at(2030, 3, 29, 12, tz=BERLIN)
    queue.schedule('night', report, 'n', cron='30 2 * * *',
                   timezone='Europe/Berlin', grace=HOUR)
    queue.schedule('hourly', report, 'h', cron='15 * * * *',
                   timezone='Europe/Berlin', grace=HOUR)
    runDays(queue, clock, clock.now, 4)
    nightly = [job.annotations['zcasync.tick'].astimezone(BERLIN)
               for job in queue if job.args[0] == 'n']
    # 02:30 does not exist on March 31: it runs right after the change
    assert [t.isoformat() for t in nightly] == [
        '2030-03-30T02:30:00+01:00', '2030-03-31T03:00:00+02:00',
        '2030-04-01T02:30:00+02:00', '2030-04-02T02:30:00+02:00']
    hourly = [job.annotations['zcasync.tick'] for job in queue
              if job.args[0] == 'h']
    # one run per real hour: four calendar days are 95 real hours here
    gaps = {b - a for a, b in zip(hourly, hourly[1:])}
    assert gaps == {datetime.timedelta(hours=1)}
    assert len(hourly) == len(set(hourly)) == 95


def test_dst_fall_back_runs_a_repeated_time_once(queue, clock):
    clock.now = at(2030, 10, 25, 12, tz=BERLIN)
    queue.schedule('night', report, 'n', cron='30 2 * * *',
                   timezone='Europe/Berlin', grace=HOUR)
    queue.schedule('half', report, 'h', cron='*/30 * * * *',
                   timezone='Europe/Berlin', grace=HOUR)
    runDays(queue, clock, clock.now, 4)
    nightly = [job.annotations['zcasync.tick'].astimezone(BERLIN)
               for job in queue if job.args[0] == 'n']
    assert [t.isoformat() for t in nightly] == [
        '2030-10-26T02:30:00+02:00', '2030-10-27T02:30:00+02:00',
        '2030-10-28T02:30:00+01:00', '2030-10-29T02:30:00+01:00']
    # a schedule finer than an hour follows real time: the repeated hour
    # runs twice on the clock, once per real half hour
    half = [job.annotations['zcasync.tick'] for job in queue
            if job.args[0] == 'h']
    assert {b - a for a, b in zip(half, half[1:])} == {
        datetime.timedelta(minutes=30)}
    # four calendar days are 97 real hours here; polls stop before the
    # last half hour's tick
    assert len(half) == len(set(half)) == 97 * 2 - 1


def test_cron_in_a_time_zone_ticks_at_local_times(queue, clock):
    clock.now = at(2030, 7, 1, 12)
    schedule = queue.schedule('tokyo', report, 't', cron='0 9 * * *',
                              timezone='Asia/Tokyo')
    assert schedule.next_runs(2) == [at(2030, 7, 2, 0), at(2030, 7, 3, 0)]


# --- bad input: a clear error, nothing stored ------------------------------

@pytest.mark.parametrize('kw, error, text', [
    ({'cron': '61 * * * *'}, ValueError, 'invalid cron expression'),
    ({'cron': 'every five minutes'}, ValueError, 'invalid cron expression'),
    ({'cron': '0 0 31 2 *'}, ValueError, 'Bad day-of-month'),
    ({'cron': 5}, TypeError, 'cron must be a string'),
    ({'cron': '* * * * *', 'timezone': 'Mars/Olympus'}, ValueError,
     'unknown time zone'),
    ({'cron': '* * * * *', 'timezone': '../etc/passwd'}, ValueError,
     'unknown time zone'),
    ({'cron': '* * * * *', 'timezone': None}, TypeError, 'IANA'),
    ({}, ValueError, 'either cron'),
    ({'cron': '* * * * *', 'every': datetime.timedelta(1)}, ValueError,
     'either cron'),
    ({'every': 60}, TypeError, 'every must be a datetime.timedelta'),
    ({'every': datetime.timedelta(0)}, ValueError, 'at least'),
    ({'every': datetime.timedelta(1), 'catch_up': 'yes'}, TypeError,
     'catch_up'),
    ({'every': datetime.timedelta(1), 'grace': 5}, ValueError, 'grace'),
])
def test_bad_schedules_are_refused_and_nothing_stored(queue, conn, kw,
                                                      error, text):
    with pytest.raises(error, match=text):
        queue.schedule('bad', report, 'x', **kw)
    assert 'bad' not in queue.schedules and len(queue.schedules) == 0


def test_a_refused_update_leaves_the_schedule_as_it_was(queue, clock):
    schedule = queue.schedule('s', report, 'x', cron='*/5 * * * *')
    with pytest.raises(ValueError, match='unknown time zone'):
        queue.schedule('s', report, 'y', cron='0 * * * *',
                       timezone='Nowhere/Land')
    with pytest.raises(TypeError, match='callable'):
        queue.schedule('s', 'not callable', cron='0 * * * *')
    assert (schedule.cron, schedule.args) == ('*/5 * * * *', ('x',))


def test_bad_names_and_callables(queue):
    with pytest.raises(TypeError, match='schedule name'):
        queue.schedule(3, report, every=datetime.timedelta(1))
    with pytest.raises(TypeError, match='cannot store'):
        queue.schedule('lambda', lambda: 1, every=datetime.timedelta(1))
    assert len(queue.schedules) == 0
