"""What a dispatcher's poll does in each queue (a base class of
``zcasync.dispatcher.Dispatcher``; no persistent class lives here).

For each queue, in the poll's transaction (its own connection, the reactor
thread):

1. *activation*: register and activate the dispatcher there the first
   time (recovering what a previous process with this UUID left behind),
   refusing a UUID that another live process uses;
2. *ping*: when this dispatcher's ``ping_interval`` has passed, and at
   each heartbeat, ping and look at the next dispatcher in the ring,
   judged by what this process watched itself (``zcasync.liveness``);
3. *reconcile* (at each heartbeat, and at once when a worker thread lost a
   run): hand back every job an agent holds that no run of this process
   will finish (``zcasync.runner``);
4. *settle and claim*: for each agent, the bookkeeping of the jobs that
   completed in this process since the last poll (a worker's own commit
   writes only its job), then, for idle threads, claims marked ACTIVE in
   the same commit, each under a new run token; and jobs claimed ahead
   (held by the agent, not started) that the threads start one by one,
   each in the commit that completes their previous job -- one commit per
   job in steady state (``zcasync.runner``);
5. *schedules*: fire the due ticks of periodic jobs, each tick claimed
   in one commit with its job (``zcasync.schedules``);
6. remember what, when a commit changes it, calls for the next poll.

State shared with the dispatcher: ``UUID``, ``runner``, ``deaths``,
``claiming``, and per poll ``_heartbeat``, ``_known`` (the runs' tokens,
None when not reconciling), ``_next_due``, ``_next_ping``,
``_conflicted``, ``_reconcile``.
"""
import datetime
import logging

import transaction.interfaces

from zcasync import coroutines
from zcasync import interfaces
from zcasync import liveness
from zcasync import stable
from zcasync import utils
from zcasync.interfaces import ACTIVE, CALLBACKS, COMPLETED, NEW
from zcasync.runner import Run


class QueuePolls:
    """The per-queue part of a poll (see the module docstring)."""

    def _pollQueues(self, poll, watched, urgent):
        tm = self.conn.transaction_manager
        tm.begin()
        root = self.conn.root()
        urgent.add(root._p_oid)
        stable.checkFormat(root)
        queues = root.get(interfaces.KEY)
        if queues is None:
            watched.update(urgent)
            return
        urgent.add(queues._data._p_oid)
        for name, queue in queues.items():
            poll[name] = self._pollQueue(tm, name, queue, poll)
            self._watch_queue(queue, watched, urgent)
        watched.update(urgent)
        names = set(poll)
        self.runner.closePools(lambda key: key[0] in names)

    def _watch_queue(self, queue, watched, urgent):
        """Remember what, when changed by a commit, calls for a poll: a
        put (not a claim: other processes' claims add no work), the
        registry, this dispatcher's agents, and the held jobs of its agents
        (room freed) -- of every agent when the queue has quotas (a job
        completing elsewhere frees room in a quota)."""
        urgent.add(queue.puts._p_oid)
        registry = queue.dispatchers
        urgent.add(registry._data._p_oid)
        everyone = len(queue.quotas) > 0
        for uuid, agents in registry.items():
            if uuid == self.UUID:
                # (this process's own runs tell it when they end)
                watched.add(agents._agents._p_oid)
                for agent in agents.values():
                    watched.add(agent._p_oid)
            elif everyone:
                # a job of another dispatcher completing frees quota room:
                # its completed count changes at any size of its agent
                for agent in agents.values():
                    watched.add(agent.completed._length._p_oid)
        self._noteDue(queue.nextDue())
        schedules = queue.existingSchedules()
        if schedules is not None:
            urgent.add(schedules.changes._p_oid)  # a schedule set or removed

    def _noteDue(self, when):
        if when is not None and (self._next_due is None or
                                 when < self._next_due):
            self._next_due = when

    def _activateIn(self, tm, name, queue):
        agents = queue.dispatchers.get(self.UUID)
        if agents is None:
            queue.dispatchers.register(self.UUID)
            agents = queue.dispatchers[self.UUID]
        elif agents.activated:
            if not agents.dead:
                tm.abort()
                utils.log.error(
                    'dispatcher %s: UUID %s is already activated in queue '
                    '%r and not dead (last ping %s): another process seems '
                    'to use this UUID.  Give every process its own UUID '
                    'file (ZC_ASYNC_UUID); skipping this queue.',
                    self.UUID, self.UUID, name, agents.last_ping.value)
                return None
            agents.deactivate()
        problem = liveness.checkIntervals(agents.ping_interval,
                                          agents.ping_death_interval)
        if problem:
            utils.log.error('dispatcher %s in queue %r: %s', self.UUID, name,
                            problem)
        agents.activate()
        tm.commit()
        self._activated_in.add(name)
        return agents

    def _ping(self, tm, name, queue):
        """Ping when due (every ping_interval of this dispatcher's record,
        whatever the poll interval) and, at each heartbeat, look at the
        next dispatcher in the ring; remember when the next ping is due."""
        agents = queue.dispatchers[self.UUID]
        now = utils.now()
        last = agents.last_ping.value
        due = last is None or now - last >= agents.ping_interval
        if due or self._heartbeat or name not in self._pinged:
            queue.dispatchers.ping(
                self.UUID,
                lambda following: self.deaths.isDead(name, following, now))
            tm.commit()
            self._pinged.add(name)
        next_ping = agents.last_ping.value + agents.ping_interval + \
            datetime.timedelta(milliseconds=5)
        if self._next_ping is None or next_ping < self._next_ping[0]:
            self._next_ping = (
                next_ping, agents.ping_interval.total_seconds() / 10)
        return agents

    def _pollQueue(self, tm, name, queue, poll):
        # a queue removed and added again under this name no longer
        # knows this dispatcher: register there afresh
        if name not in self._activated_in or \
                self.UUID not in queue.dispatchers:
            if self._activateIn(tm, name, queue) is None:
                return None
        agents = self._ping(tm, name, queue)
        self._fireSchedules(tm, name, queue)
        info = {}
        seen = set()
        for agent_name, agent in agents.items():
            seen.add(agent_name)
            info[agent_name] = self._pollAgent(
                tm, name, agents, agent_name, agent, poll)
        self.runner.closePools(
            lambda key: key[0] != name or key[1] in seen)
        return info

    def _fireSchedules(self, tm, name, queue):
        """Periodic jobs (``zcasync.schedules``): claim the due ticks and
        put their jobs in one commit, before claiming; remember when the
        next tick is due."""
        schedules = queue.existingSchedules()
        if schedules is None or not self.claiming:
            return
        try:
            fired, soonest = schedules.fire(queue)
            if fired:
                tm.commit()
        except transaction.interfaces.TransientError:
            # another dispatcher fired these ticks: look again soon
            tm.abort()
            self._conflicted = True
            return
        self._noteDue(soonest)

    def _settle(self, agent, finished):
        """The agent's bookkeeping of the jobs whose runs ended in this
        process since the last poll (their own commits wrote only the
        job): a completed job still held leaves its slot for the completed
        collection.  Batched here, with the claims, in one commit."""
        settled = 0
        for job_id in finished:
            oid, database_name = job_id
            job = self._getConnection(database_name).get(oid)
            if job._status == COMPLETED and job.parent is agent:
                agent.jobCompleted(job)
                settled += 1
        return settled

    def _reconcileAgent(self, agents, agent, key=None):
        """Hand back every job `agent` holds that no run of this process
        will finish (see the module docstring); returns how many."""
        known = self._known
        held, lost = set(), []
        for job in agent:
            status = job._status
            token = job._run_token
            if status in (ACTIVE, CALLBACKS) and token in known:
                held.add(token)
            elif status in (NEW, ACTIVE) and utils.jobId(job) in known:
                # claimed ahead: not started yet, or being started by a
                # thread (its start may have committed after the snapshot)
                held.add(token)
            else:
                lost.append(job)
        for job in lost:
            if job._status in (ACTIVE, CALLBACKS, NEW):
                utils.safeLog(
                    utils.log, logging.WARNING,
                    'dispatcher %s: no worker thread runs %r (%s), held by '
                    'agent %r; handing it back to its retry policy',
                    self.UUID, job, job.status, agent.name)
            agents.handBack(agent, job)
        self.runner.forget(held, key)
        return len(lost)

    def _claimAhead(self, agent, pool):
        """Jobs to claim beyond the agent's size, for its threads to start
        as they free up (each in the commit that ends their previous job):
        refilled in batches, when half the buffer is used."""
        prefetch = self.prefetchFor(agent.size, pool.duration)
        buffered = pool.buffered()
        claimAhead = getattr(agent, 'claimAhead', None)
        if not prefetch or claimAhead is None or buffered > prefetch // 2:
            return []
        return claimAhead(prefetch - buffered)

    def _pollAgent(self, tm, queue_name, agents, agent_name, agent, poll):
        pool = self.runner.pool(queue_name, agent_name)
        pool.setSize(agent.size)
        finished = pool.takeFinished()
        record = {'size': agent.size, 'len': len(agent), 'error': None,
                  'new jobs': [], 'active jobs': pool.activeJobIds()}
        claimed, ahead = [], []
        try:
            changed = self._settle(agent, finished)
            if self._known is not None:
                changed += self._reconcileAgent(agents, agent,
                                                (queue_name, agent_name))
            if changed:
                record['len'] = len(agent)
            if self.claiming:
                while True:
                    job = agent.claimJob()
                    if job is None:
                        break
                    # claim and start recorded in one commit
                    claimed.append((job, job._activate()))
                ahead = self._claimAhead(agent, pool)
            if changed or claimed or ahead:
                tm.commit()
        except transaction.interfaces.TransientError:
            # another dispatcher claimed the same job: try again soon, at a
            # random moment so that the losers do not collide again
            tm.abort()
            pool.giveBackFinished(finished)
            claimed, ahead = [], []
            self._conflicted = True
            if self._known is not None:
                self._reconcile = True
        except Exception:
            failure = utils.makeFailure()
            tm.abort()
            pool.giveBackFinished(finished)
            record['error'] = failure
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s: agent %r failed to claim:\n%s',
                          self.UUID, agent_name, failure.getTraceback())
            claimed, ahead = [], []
        for job, token in claimed:
            job_id = utils.jobId(job)
            record['new jobs'].append(job_id)
            pool.perform(Run(job_id, token, poll.key,
                             coroutines.isCoroutineJob(job)))
        if ahead:
            runs = [Run(utils.jobId(job), None, poll.key,
                        coroutines.isCoroutineJob(job)) for job in ahead]
            record['new jobs'].extend(run.job_id for run in runs)
            pool.addBuffered(runs)
        return record
