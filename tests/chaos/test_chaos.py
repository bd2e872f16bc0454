"""Short chaos runs in the default test run: the ZEO variant and the
RelStorage variant (skipped when PostgreSQL is not reachable on
127.0.0.1:5432), each about a minute: 200 jobs, a fault every 4 s for
30 s, every kind of fault at least once (``cancel``: ten controlled
jobs, cancelled pending or running, or past a time limit), a third of the
normal jobs coroutine jobs.  See ``harness.py`` for what a
run does and ``invariants.py`` for what it checks; ``run.py`` is the long
version.

The schedule is random (a fresh seed each run, printed, and settable with
``CHAOS_SEED``), the order of the first four faults is fixed.
"""
import os
import random

import pytest

from tests.chaos.harness import ChaosRun, Unavailable, throwawayPostgres
from tests.chaos.invariants import (
    KILL, STOP, ZEO_RESTART, PG_TERMINATE, POISON, CANCEL)

JOBS, DURATION = 200, 40.0


def seed():
    value = int(os.environ.get('CHAOS_SEED') or random.randrange(10 ** 6))
    print('CHAOS_SEED=%d' % value)
    return value


def check(report, kinds):
    print(report.table())
    assert not report.violations, report.table()
    injected = {fault.kind for fault in report.faults}
    assert injected >= set(kinds), report.table()
    assert report.jobs == JOBS
    # the run exercised what it checks: coroutine jobs, cancels of pending
    # and running jobs, time limits (each counted by its invariants)
    assert report.info['coroutine jobs'] == len(range(1, JOBS, 3))
    assert report.info['cancelled before start'] >= 2, report.table()
    assert report.info['cancelled running'] >= 1, report.table()
    assert report.info['past time limit'] >= 4, report.table()


@pytest.mark.timeout(400)
def test_chaos_zeo(tmp_path):
    report = ChaosRun(tmp_path, 'zeo', jobs=JOBS, duration=DURATION,
                      seed=seed()).run()
    check(report, (KILL, STOP, ZEO_RESTART, POISON, CANCEL))


@pytest.fixture
def postgres():
    """The URI of a throw-away RelStorage database (skip without one)."""
    try:
        with throwawayPostgres('zcasync_chaos') as uri:
            yield uri
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.mark.timeout(400)
def test_chaos_relstorage(tmp_path, postgres):
    report = ChaosRun(tmp_path, 'postgres', postgres, jobs=JOBS,
                      duration=DURATION, seed=seed()).run()
    check(report, (KILL, STOP, PG_TERMINATE, POISON, CANCEL))
