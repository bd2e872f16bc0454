"""Helpers for the dashboard's unit tests (no tests here).

- ``TickingClock``: moves 1 ms at every reading (the ``ticking`` fixture
  of conftest.py installs one);
- ``putJobs(conn, *calls, queue='')``: queue Job(func, *args) per call;
- ``runJobs(conn)``: run every due job as a worker would (immediate mode:
  claimed by an agent, completed into its ``completed`` collection);
- ``startJob(conn, queue)``: claim the first job with a real, activated
  agent and mark it ACTIVE, as a dispatcher does before running it.
"""
import datetime
import uuid as uuidmodule

from zcasync import testing
from zcasync.interfaces import KEY

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
WORKER = uuidmodule.UUID('12345678-1234-1234-1234-1234567890ab')


class TickingClock:

    def __init__(self, start=START, step=0.001):
        self.now = start
        self.step = datetime.timedelta(seconds=step)

    def __call__(self):
        self.now += self.step
        return self.now

    def advance(self, seconds):
        self.now += datetime.timedelta(seconds=seconds)
        return self.now


def putJobs(conn, *calls, queue='', **kw):
    from zcasync.job import Job
    target = conn.root()[KEY][queue]
    jobs = [target.put(Job(call[0], *call[1:]), **kw) for call in calls]
    conn.transaction_manager.commit()
    return jobs


def runJobs(conn):
    return testing.runQueuedJobs(conn)


def worker(conn, queue='', size=3):
    """The activated registration of WORKER with an agent 'main'."""
    from zcasync.agent import Agent
    target = conn.root()[KEY][queue]
    agents = target.dispatchers.get(WORKER)
    if agents is None:
        agents = testing.activeRegistration(target, WORKER)
        agents['main'] = Agent(size=size)
        conn.transaction_manager.commit()
    return agents


def startJob(conn, queue=''):
    agent = worker(conn, queue)['main']
    job = agent.claimJob()
    job._activate()
    conn.transaction_manager.commit()
    return job
