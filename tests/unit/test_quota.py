"""Quotas (issue 3, section 3): create/remove/lookup, size, filled, len,
iteration, clean(), and their effect on claims.  The hard limit across
connections is in tests/integration/test_queue_concurrency.py."""
import datetime
import uuid

import pytest

from zcasync import testing
from zcasync.agent import Agent
from zcasync.interfaces import ASSIGNED, COMPLETED, PENDING
from zcasync.job import Job
from zcasync.queue import Quota


def double(value):
    return value * 2


@pytest.fixture
def agents(queue, clock):
    return testing.activeRegistration(queue, uuid.uuid4())


@pytest.fixture
def agent(agents):
    agents['main'] = Agent(size=10)
    return agents['main']


def quotaJob(queue, value, *names):
    job = Job(double, value)
    job.quota_names = names
    return queue.put(job)


# --- the Quotas mapping ---------------------------------------------------

def test_create_and_lookup(queue):
    quotas = queue.quotas
    assert len(quotas) == 0 and list(quotas) == []
    quotas.create('db')
    db = quotas['db']
    quotas.create('mail', size=3)
    mail = quotas['mail']
    assert isinstance(db, Quota)
    assert (db.name, db.size, db.parent) == ('db', 1, quotas)
    assert (mail.name, mail.size) == ('mail', 3)
    assert quotas['db'] is db and quotas.get('mail') is mail
    assert quotas.get('nope') is None and 'db' in quotas
    assert list(quotas) == ['db', 'mail'] and len(quotas) == 2
    assert quotas.values() == [db, mail]
    assert quotas.parent is queue
    with pytest.raises(KeyError):
        quotas['nope']


def test_create_refuses_a_duplicate(queue):
    queue.quotas.create('db', size=2)
    first = queue.quotas['db']
    with pytest.raises(ValueError, match="quota 'db' already exists"):
        queue.quotas.create('db', size=5)
    assert queue.quotas['db'] is first and first.size == 2


def test_create_refuses_bad_names_and_sizes(queue):
    with pytest.raises(TypeError, match='quota names are strings'):
        queue.quotas.create(('db',))
    for bad in (-1, 1.5, '2', True, None):
        with pytest.raises(ValueError, match='integer >= 0'):
            queue.quotas.create('db', size=bad)
    assert len(queue.quotas) == 0


def test_remove(queue):
    queue.quotas.create('db')
    quota = queue.quotas['db']
    assert queue.quotas.remove('db') is None  # as zc.async
    assert quota.parent is None and 'db' not in queue.quotas
    with pytest.raises(KeyError):
        queue.quotas.remove('db')


def test_put_refuses_a_removed_quota_name(queue):
    queue.quotas.create('db')
    queue.quotas.remove('db')
    with pytest.raises(ValueError, match='unknown quota name'):
        quotaJob(queue, 1, 'db')
    assert len(queue) == 0


def test_a_removed_quota_no_longer_limits(queue, agent):
    queue.quotas.create('db')
    first, second = quotaJob(queue, 1, 'db'), quotaJob(queue, 2, 'db')
    assert agent.claimJob() is first
    assert agent.claimJob() is None
    queue.quotas.remove('db')
    assert agent.claimJob() is second


# --- a Quota --------------------------------------------------------------

def test_filled_len_and_iteration(queue, agent):
    queue.quotas.create('db', size=2)
    quota = queue.quotas['db']
    jobs = [quotaJob(queue, i, 'db') for i in range(3)]
    assert len(quota) == 0 and not quota.filled and list(quota) == []
    assert agent.claimJob() is jobs[0]
    assert len(quota) == 1 and not quota.filled
    assert agent.claimJob() is jobs[1]
    assert len(quota) == 2 and quota.filled
    assert list(quota) == jobs[:2]
    assert jobs[0] in quota and jobs[2] not in quota
    assert agent.claimJob() is None
    assert list(queue) == [jobs[2]]
    assert repr(quota) == "<zcasync.queue.Quota 'db' 2/2>"


def test_size_change_takes_effect_on_later_claims(queue, agent):
    queue.quotas.create('db', size=1)
    quota = queue.quotas['db']
    jobs = [quotaJob(queue, i, 'db') for i in range(4)]
    assert agent.claimJob() is jobs[0]
    assert agent.claimJob() is None
    quota.size = 3
    assert agent.claimJob() is jobs[1]
    assert agent.claimJob() is jobs[2]
    assert agent.claimJob() is None
    quota.size = 1  # shrinking does not evict: 3 still run
    assert list(quota) == jobs[:3] and quota.filled
    assert agent.claimJob() is None
    for bad in (-1, 'many'):
        with pytest.raises(ValueError, match='integer >= 0'):
            quota.size = bad
    assert quota.size == 1


def test_size_zero_holds_every_job(queue, agent):
    queue.quotas.create('db', size=0)
    job = quotaJob(queue, 1, 'db')
    free = queue.put(Job(double, 2))
    assert agent.claimJob() is free
    assert agent.claimJob() is None
    assert list(queue) == [job]


def test_a_job_with_two_quotas_needs_room_in_both(queue, agent):
    queue.quotas.create('db', size=2)
    db = queue.quotas['db']
    queue.quotas.create('mail', size=1)
    mail = queue.quotas['mail']
    mailer = quotaJob(queue, 1, 'mail')
    both = quotaJob(queue, 2, 'db', 'mail')
    dbonly = quotaJob(queue, 3, 'db')
    assert agent.claimJob() is mailer
    # `both` is blocked by mail; nothing is taken in db for it
    assert agent.claimJob() is dbonly
    assert list(db) == [dbonly] and list(mail) == [mailer]
    assert list(queue) == [both]


def test_clean_drops_finished_jobs(queue, agent, conn):
    queue.quotas.create('db', size=1)
    quota = queue.quotas['db']
    first, second = quotaJob(queue, 1, 'db'), quotaJob(queue, 2, 'db')
    assert agent.claimJob() is first
    conn.transaction_manager.commit()
    assert first() == 2 and first.status == COMPLETED
    assert list(quota) == [first]  # still listed until cleaned
    quota.clean()
    assert list(quota) == [] and not quota.filled
    assert agent.claimJob() is second
    assert list(quota) == [second] and second.status == ASSIGNED


def test_a_claim_cleans_a_full_quota(queue, agent, conn):
    queue.quotas.create('db', size=1)
    quota = queue.quotas['db']
    first, second = quotaJob(queue, 1, 'db'), quotaJob(queue, 2, 'db')
    agent.claimJob()
    conn.transaction_manager.commit()
    first()
    assert agent.claimJob() is second
    assert list(quota) == [second]


def test_a_job_put_back_keeps_its_slot_one_rescheduled_for_later_not(
        queue, agent, clock):
    # zc.async's rule: a job holds its slot until CALLBACKS or COMPLETED,
    # or until it is rescheduled for later
    queue.quotas.create('db', size=2)
    quota = queue.quotas['db']
    first, second = quotaJob(queue, 1, 'db'), quotaJob(queue, 2, 'db')
    third = quotaJob(queue, 3, 'db')
    assert agent.claimJob() is first
    assert agent.claimJob() is second
    agent.remove(first)
    queue.putBack(first)  # what deactivation does with a job not started
    assert first.status == PENDING and second.status == ASSIGNED
    quota.clean()
    assert list(quota) == [first, second]
    assert agent.claimJob() is first  # its own slot
    assert agent.claimJob() is None   # `third` waits
    assert list(quota) == [first, second]
    agent.remove(second)
    queue.put(second, begin_after=clock.now + datetime.timedelta(hours=1))
    quota.clean()
    assert list(quota) == [first]
    assert agent.claimJob() is third


def test_clean_without_changes_writes_nothing(queue, agent, conn):
    queue.quotas.create('db', size=2)
    quota = queue.quotas['db']
    quotaJob(queue, 1, 'db')
    agent.claimJob()
    conn.transaction_manager.commit()
    before = conn.db().storage.lastTransaction()
    quota.clean()
    assert quota._p_changed is False
    conn.transaction_manager.commit()
    assert conn.db().storage.lastTransaction() == before


def test_jobs_put_back_by_deactivation_keep_their_slots(queue, agents,
                                                         agent):
    queue.quotas.create('db', size=2)
    quota = queue.quotas['db']
    jobs = [quotaJob(queue, i, 'db') for i in range(3)]
    assert [agent.claimJob(), agent.claimJob()] == jobs[:2]
    assert quota.filled
    agents.deactivate()
    assert list(queue) == jobs  # the two went back to the front
    quota.clean()
    assert list(quota) == jobs[:2]  # their slots wait for them
    agents.activate()
    assert [agent.claimJob(), agent.claimJob()] == jobs[:2]
