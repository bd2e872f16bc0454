"""Unique jobs (issue 14): while a job put with a key is pending or
running, a put with the same key returns it and stores nothing; the key
frees when the job completes or is removed, or, with ``unique_for``, when
the period has passed.  Concurrent puts: tests/integration/
test_unique_concurrency.py and tests/processes/test_unique_processes.py."""
import datetime
import uuid

import pytest

from zcasync import testing
from zcasync.agent import Agent
from zcasync.interfaces import COMPLETED
from zcasync.job import Job

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def double(value):
    return value * 2


@pytest.fixture
def agent(queue, clock):
    agents = testing.activeRegistration(queue, uuid.uuid4())
    agents['main'] = Agent(size=5)
    return agents['main']


def test_a_pending_job_holds_its_key(queue, conn, clock):
    first = queue.put(Job(double, 1), unique_key='report-42')
    conn.transaction_manager.commit()
    puts = queue.puts()
    second = Job(double, 2)
    assert queue.put(second, unique_key='report-42') is first
    assert len(queue) == 1 and queue.puts() == puts
    assert second._p_jar is None and second.parent is None
    assert queue.uniqueHolder('report-42') is first
    # another key is another job
    other = queue.put(Job(double, 3), unique_key='report-43')
    assert other is not first and len(queue) == 2


def test_a_running_job_holds_its_key_until_it_completes(queue, conn, agent,
                                                       clock):
    first = queue.put(Job(double, 1), unique_key='k')
    assert agent.claimJob() is first
    conn.transaction_manager.commit()
    assert queue.put(Job(double, 2), unique_key='k') is first
    assert first() == 2 and first.status == COMPLETED
    assert 'k' not in queue._unique  # freed by the completion
    again = queue.put(Job(double, 3), unique_key='k')
    assert again is not first and len(queue) == 1


def test_removing_a_job_frees_its_key(queue, clock):
    first = queue.put(Job(double, 1), unique_key='k')
    queue.remove(first)
    second = queue.put(Job(double, 2), unique_key='k')
    assert second is not first
    assert queue.pull() is second
    assert queue.put(Job(double, 3), unique_key='k') is not second


def test_a_completed_job_found_in_the_map_does_not_hold_its_key(
        queue, conn, clock):
    """The map may still name a job that completed without its agent (e.g.
    failed by a begin_by timeout): the put checks the job's status."""
    first = queue.put(Job(double, 1), unique_key='k')
    queue.remove(first)
    queue._unique['k'] = first  # as if never freed
    first._status = COMPLETED
    assert queue.uniqueHolder('k') is None
    second = queue.put(Job(double, 2), unique_key='k')
    assert second is not first and queue._unique['k'] is second
    assert queue.pruneUnique() == 0


def test_unique_for_holds_the_key_for_a_period(queue, conn, agent, clock):
    first = queue.put(Job(double, 1), unique_key='k',
                      unique_for=datetime.timedelta(minutes=10))
    assert first.unique_until == START + datetime.timedelta(minutes=10)
    assert agent.claimJob() is first
    conn.transaction_manager.commit()
    first()
    # completed, but the period has not passed
    assert queue.put(Job(double, 2), unique_key='k') is first
    clock.advance(601)
    second = queue.put(Job(double, 2), unique_key='k')
    assert second is not first and len(queue) == 1


def test_pruneUnique_drops_keys_no_job_holds(queue, clock):
    for i in range(5):
        queue.put(Job(double, i), unique_key='k%d' % i,
                  unique_for=datetime.timedelta(seconds=10 + i))
    clock.advance(12)
    assert queue.pruneUnique(limit=2) == 2
    assert queue.pruneUnique() == 1
    assert sorted(queue._unique.keys()) == ['k3', 'k4']


@pytest.mark.parametrize('kw, error, text', [
    ({'unique_key': 42}, TypeError, 'unique_key must be a string'),
    ({'unique_key': b'k'}, TypeError, 'unique_key must be a string'),
    ({'unique_key': ''}, ValueError, 'must not be empty'),
    ({'unique_for': datetime.timedelta(1)}, ValueError, 'needs a unique_key'),
    ({'unique_key': 'k', 'unique_for': 60}, TypeError, 'timedelta'),
    ({'unique_key': 'k', 'unique_for': datetime.timedelta(0)}, ValueError,
     'positive'),
])
def test_bad_unique_arguments_are_refused_and_nothing_stored(queue, kw,
                                                             error, text):
    job = Job(double, 1)
    with pytest.raises(error, match=text):
        queue.put(job, **kw)
    assert len(queue) == 0 and len(queue._unique) == 0
    assert job.parent is None and job.unique_key is None
