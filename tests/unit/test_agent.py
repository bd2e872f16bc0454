"""Agents (issue 3, section 5): claiming with a filter or a chooser,
holding jobs, completion and the completed-jobs collection."""
import datetime
import uuid

import pytest

from zcasync import testing
from zcasync.agent import Agent, COMPLETED_KEEP, CompletedJobs
from zcasync.interfaces import ASSIGNED, COMPLETED, IAgent, PENDING
from zcasync.job import Job

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# module level: stored on persistent agents by reference

def double(value):
    return value * 2


def even(job):
    return job.args[0] % 2 == 0


def chooseLargest(agent):
    """A chooser: claims the pending job with the largest argument."""
    queue = agent.queue
    best = max(queue, key=lambda job: job.args[0], default=None)
    if best is None:
        return None
    return queue.claim(lambda job: job is best)



@pytest.fixture
def agents(queue, clock):
    return testing.activeRegistration(queue, uuid.uuid4())


def addAgent(agents, name='main', **kw):
    agents[name] = Agent(**kw)
    return agents[name]


def put(queue, *values):
    return [queue.put(Job(double, v)) for v in values]


# --- construction ---------------------------------------------------------

def test_defaults(agents):
    agent = Agent()
    assert IAgent.providedBy(agent)
    assert (agent.size, agent.chooser, agent.filter) == (3, None, None)
    assert agent.name is None and agent.parent is None
    agents['main'] = agent
    assert agent.name == 'main' and agent.parent is agents


def test_chooser_and_filter_together_refused():
    with pytest.raises(ValueError, match='a chooser or a filter, not both'):
        Agent(chooser=chooseLargest, filter=even)


def test_bad_size_refused():
    for bad in (-1, 2.5, '3', None):
        with pytest.raises(ValueError, match='integer >= 0'):
            Agent(size=bad)
    agent = Agent(size=1)
    with pytest.raises(ValueError, match='integer >= 0'):
        agent.size = -2
    assert agent.size == 1


def test_claim_outside_a_queue_refused():
    with pytest.raises(ValueError, match='belongs to no queue'):
        Agent().claimJob()


# --- claiming -------------------------------------------------------------

def test_claim_job(queue, agents):
    agent = addAgent(agents)
    job, = put(queue, 1)
    assert agent.claimJob() is job
    assert job.status == ASSIGNED and job.parent is agent
    assert job.agent is agent and job.queue is queue
    assert len(queue) == 0


def test_claim_none_when_nothing_fits(queue, agents):
    agent = addAgent(agents, filter=even)
    assert agent.claimJob() is None  # empty queue
    odd, = put(queue, 1)
    assert agent.claimJob() is None
    assert list(queue) == [odd] and len(agent) == 0


def test_claim_none_when_full(queue, agents):
    agent = addAgent(agents, size=2)
    jobs = put(queue, 1, 2, 3)
    assert [agent.claimJob(), agent.claimJob()] == jobs[:2]
    assert agent.claimJob() is None
    assert list(queue) == [jobs[2]] and len(agent) == 2
    agent.size = 3  # resizing takes effect at once
    assert agent.claimJob() is jobs[2]


def test_size_zero_claims_nothing(queue, agents):
    agent = addAgent(agents, size=0)
    put(queue, 1)
    assert agent.claimJob() is None and len(queue) == 1


def test_filter(queue, agents):
    agent = addAgent(agents, filter=even)
    jobs = put(queue, 1, 2, 3, 4)
    assert [agent.claimJob(), agent.claimJob()] == [jobs[1], jobs[3]]
    assert agent.claimJob() is None
    assert list(queue) == [jobs[0], jobs[2]]


def test_chooser_picks(queue, agents):
    agent = addAgent(agents, chooser=chooseLargest)
    jobs = put(queue, 5, 9, 2)
    assert agent.claimJob() is jobs[1]
    assert agent.claimJob() is jobs[0]
    assert jobs[1].status == ASSIGNED and jobs[1].agent is agent
    assert list(queue) == [jobs[2]]


def test_held_jobs_len_iter_index_remove(queue, agents, clock):
    agent = addAgent(agents, size=5)
    jobs = put(queue, 1, 2, 3)
    for i in range(3):
        agent.claimJob()
        clock.advance(1)
    assert len(agent) == 3 and list(agent) == jobs
    assert [agent.index(j) for j in jobs] == [0, 1, 2]
    assert jobs[1] in agent
    assert agent.remove(jobs[1]) is jobs[1]
    assert jobs[1].parent is None and jobs[1] not in agent
    assert list(agent) == [jobs[0], jobs[2]] and agent.index(jobs[2]) == 1
    with pytest.raises(LookupError, match='is not held by agent'):
        agent.remove(jobs[1])
    with pytest.raises(ValueError, match='is not held by agent'):
        agent.index(jobs[1])
    # a removed job can be queued again
    queue.put(jobs[1])
    assert jobs[1].status == PENDING


# --- completion -----------------------------------------------------------

def runClaimed(agent, conn, clock, count):
    """Claim and run `count` jobs, one clock minute apart."""
    done = []
    for i in range(count):
        # a live dispatcher pings as time goes by
        agent.queue.dispatchers.ping(agent.parent.UUID)
        job = agent.claimJob()
        conn.transaction_manager.commit()
        job()
        done.append(job)
        clock.advance(60)
    return done


def test_job_completed_moves_to_completed(queue, agents, conn, clock):
    agent = addAgent(agents)
    put(queue, 1, 2)
    first, second = runClaimed(agent, conn, clock, 2)
    assert first.status == COMPLETED and first.result == 2
    assert len(agent) == 0 and list(agent) == []
    completed = agent.completed
    assert len(completed) == 2 and completed
    assert list(completed) == [second, first]  # newest first
    assert completed.first() is second and completed.last() is first


def test_job_completed_by_hand(queue, agents, clock):
    agent = addAgent(agents)
    job, = put(queue, 1)
    agent.claimJob()
    agent.jobCompleted(job)
    assert len(agent) == 0 and list(agent.completed) == [job]


def test_completed_jobs_keep_agent_and_queue(queue, agents, conn, clock):
    agent = addAgent(agents)
    put(queue, 1)
    job, = runClaimed(agent, conn, clock, 1)
    assert job.agent is agent and job.queue is queue
    other = conn.db().open()
    try:
        stored = other.get(job._p_oid)
        assert stored.agent._p_oid == agent._p_oid
        assert stored.queue._p_oid == queue._p_oid
    finally:
        other.close()


def test_empty_completed_collection(agents):
    completed = addAgent(agents).completed
    assert len(completed) == 0 and not completed
    assert completed.first() is None and completed.last() is None
    assert list(completed) == [] and list(completed.iter()) == []


def test_completed_iter_by_time_range(queue, agents, conn, clock):
    agent = addAgent(agents, size=5)
    put(queue, 1, 2, 3, 4)
    jobs = runClaimed(agent, conn, clock, 4)  # completed at 0, 1, 2, 3 min
    ends = [job.active_end for job in jobs]
    assert ends == [START + datetime.timedelta(minutes=i) for i in range(4)]
    completed = agent.completed
    assert list(completed.iter()) == jobs[::-1]
    assert list(completed.iter(start=ends[1])) == [jobs[3], jobs[2], jobs[1]]
    assert list(completed.iter(stop=ends[1])) == [jobs[1], jobs[0]]
    assert list(completed.iter(ends[1], ends[2])) == [jobs[2], jobs[1]]
    between = ends[1] + datetime.timedelta(seconds=30)
    assert list(completed.iter(between, ends[2])) == [jobs[2]]
    assert list(completed.iter(ends[3] + datetime.timedelta(1))) == []


def test_completed_iter_refuses_naive_datetimes(agents):
    completed = addAgent(agents).completed
    with pytest.raises(ValueError, match='naive'):
        list(completed.iter(start=datetime.datetime(2030, 1, 1)))


def test_completed_jobs_within_a_week_are_kept(queue, agents, conn, clock):
    assert datetime.timedelta(days=6) < COMPLETED_KEEP <= \
        datetime.timedelta(days=8)
    agent = addAgent(agents, size=5)
    put(queue, 1, 2)
    old, = runClaimed(agent, conn, clock, 1)
    clock.advance(datetime.timedelta(days=6).total_seconds())
    recent, = runClaimed(agent, conn, clock, 1)
    assert list(agent.completed) == [recent, old]
    assert len(agent.completed) == 2


def test_completed_jobs_older_than_a_week_are_pruned(
        queue, agents, conn, clock):
    agent = addAgent(agents, size=5)
    shards = CompletedJobs.SHARDS
    put(queue, *range(shards + 2))
    old, = runClaimed(agent, conn, clock, 1)
    clock.advance(datetime.timedelta(days=6).total_seconds())
    recent, = runClaimed(agent, conn, clock, 1)
    clock.advance(datetime.timedelta(days=2).total_seconds())
    # pruning looks at the shard written and one other in turn, so within
    # one round of completions every shard has been looked at
    newest = runClaimed(agent, conn, clock, shards)
    assert list(agent.completed) == list(reversed(newest)) + [recent]
    assert len(agent.completed) == shards + 1
    assert agent.completed.last() is recent


def test_repr(agents):
    agent = addAgent(agents, size=4)
    assert repr(agent) == "<zcasync.agent.Agent 'main' (0/4)>"


# --- retention per queue (issue 14) ----------------------------------------

def test_a_queue_sets_how_long_completed_jobs_are_kept(queue, agents, conn,
                                                       clock):
    assert queue.completed_keep == COMPLETED_KEEP  # the default
    queue.completed_keep = datetime.timedelta(hours=1)
    agent = addAgent(agents, size=5)
    put(queue, *range(CompletedJobs.SHARDS + 2))
    old, = runClaimed(agent, conn, clock, 1)
    clock.advance(3600)
    newest = runClaimed(agent, conn, clock, CompletedJobs.SHARDS)
    assert old not in list(agent.completed)
    assert list(agent.completed) == list(reversed(newest))


def test_completed_keep_none_keeps_jobs_until_pruned(queue, agents, conn,
                                                     clock):
    queue.completed_keep = None
    agent = addAgent(agents, size=5)
    put(queue, *range(4))
    old = runClaimed(agent, conn, clock, 2)
    clock.advance(datetime.timedelta(days=30).total_seconds())
    recent = runClaimed(agent, conn, clock, 2)
    assert len(agent.completed) == 4
    removed, resume = agent.completed.prune(
        clock.now - datetime.timedelta(days=1), limit=1)
    assert removed == 1 and resume is not None
    removed, resume = agent.completed.prune(
        clock.now - datetime.timedelta(days=1), resume=resume)
    assert removed == 1 and resume is None
    assert list(agent.completed) == list(reversed(recent))
    assert old[0] not in list(agent.completed)
