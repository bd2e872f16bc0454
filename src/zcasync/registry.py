"""The dispatcher registry of a queue: which processes are alive.

``queue.dispatchers`` maps a dispatcher UUID to its ``DispatcherAgents``:
the persistent representative of that process in that queue, holding its
agents (name -> Agent) and its life-cycle data.

Liveness is a ring: each dispatcher pings (``queue.dispatchers.ping``) and
at the same time looks at the *next* activated dispatcher in UUID order
(wrapping around); if that one has not pinged within its
``ping_death_interval`` it is deactivated, which recovers its jobs:

=========  =============================================================
status     what deactivation (and activation) does with a held job
=========  =============================================================
NEW        goes back to the front of the queue
ACTIVE     a ``handleInterrupt`` job is queued for it (its retry policy
           decides: run again, reschedule, or fail with AbortedError)
CALLBACKS  a ``resumeCallbacks`` job is queued for it
COMPLETED  moves to its agent's ``completed`` collection
=========  =============================================================

An ACTIVE or CALLBACKS job is handed to its recovery job together with a
fresh run token (see ``zcasync.job``, "ownership"): whatever the run that
held it still does is never committed.  The recovery jobs use
``RetryCommonForever`` and log failures at CRITICAL.

A dispatcher's own process does not trust clocks for the ring: it declares
its neighbour dead only after watching it not ping for a whole death
interval while it could see the database itself (``zcasync.liveness``).
"""
import datetime
import logging

import BTrees.OOBTree
import persistent
import zope.event
import zope.interface
import zope.minmax

from zcasync import interfaces
from zcasync import retry
from zcasync import utils
from zcasync.interfaces import NEW, ACTIVE, CALLBACKS, COMPLETED


@zope.interface.implementer(interfaces.IDispatcherAgents)
class DispatcherAgents(utils.StoredMapping, persistent.Persistent):
    """agent name -> Agent, for one dispatcher in one queue.

    ``parent`` is the queue (records stored before this was so have the
    queue's ``Dispatchers`` as parent until their next activation; use
    ``queue``).  ``last_ping`` is a max register (``zope.minmax.Maximum``,
    as in zc.async): read and write its ``value``; concurrent pings resolve
    to the latest."""

    _mapped = '_agents'

    parent = None
    activated = None

    def __init__(self, uuid):
        self.UUID = uuid
        self._agents = BTrees.OOBTree.OOBTree()
        self.last_ping = zope.minmax.Maximum()
        self.ping_interval = datetime.timedelta(seconds=30)
        self.ping_death_interval = datetime.timedelta(seconds=60)

    def __setstate__(self, state):
        last = state.get('last_ping')
        if not isinstance(last, zope.minmax.Maximum):
            # stored when last_ping was a plain datetime: a register that
            # is stored with this record at its next write (``_setPing``)
            state = dict(state)
            state['last_ping'] = zope.minmax.Maximum(last)
        super().__setstate__(state)

    def _setPing(self, when):
        register = self.last_ping
        register.value = when
        if register._p_jar is None and register._p_oid is None:
            self._p_changed = True  # upgraded from a plain datetime

    @property
    def name(self):
        return self.UUID

    # -- mapping ---------------------------------------------------------

    def __setitem__(self, name, agent):
        if not interfaces.IAgent.providedBy(agent):
            raise ValueError(
                'only agents (zcasync.agent.Agent) may be added to a '
                'dispatcher, not %r' % (agent,))
        if not isinstance(name, str):
            raise TypeError('agent names are strings, not %r' % (name,))
        old = self._agents.get(name)
        if old is not None and old is not agent and len(old):
            raise ValueError(
                'agent %r holds %d job(s) and cannot be replaced; wait for '
                'them or deactivate the dispatcher first' % (name, len(old)))
        if agent.parent is not None and agent.parent is not self:
            raise ValueError('%r already belongs to another dispatcher'
                             % (agent,))
        self._agents[name] = agent
        agent.name = name
        agent.parent = self
        if old is not None and old is not agent:
            old.parent = None

    def __delitem__(self, name):
        agent = self._agents[name]
        if len(agent):
            raise ValueError(
                'agent %r holds %d job(s) and cannot be removed; wait for '
                'them or deactivate the dispatcher first' % (name, len(agent)))
        del self._agents[name]
        agent.parent = None

    # -- life cycle ------------------------------------------------------

    @property
    def queue(self):
        parent = self.parent
        if parent is None or interfaces.IQueue.providedBy(parent):
            return parent
        return parent.parent  # stored before: the queue's Dispatchers

    @property
    def dead(self):
        stamps = [s for s in (self.last_ping.value, self.activated) if s]
        if not stamps:
            return False
        return max(stamps) + self.ping_death_interval < utils.now()

    def activate(self):
        if self.activated:
            raise ValueError('dispatcher %s is already activated' % self.UUID)
        self._cleanup()
        queue = self.queue
        if queue is not None and self.parent is not queue:
            self.parent = queue
        self.activated = now = utils.now()
        self._setPing(now)
        zope.event.notify(interfaces.DispatcherActivated(self))

    def deactivate(self):
        if not self.activated:
            raise ValueError('dispatcher %s is not activated' % self.UUID)
        self._cleanup()
        self.activated = None
        zope.event.notify(interfaces.DispatcherDeactivated(self))

    def _recover(self, method, token):
        from zcasync.job import Job
        self.queue.put(Job(method, token),
                       failure_log_level=logging.CRITICAL,
                       retry_policy_factory=retry.RetryCommonForever)

    def _cleanup(self):
        for agent in self._agents.values():
            for job in list(agent):
                self.handBack(agent, job)

    def handBack(self, agent, job):
        """Stop holding `job` in `agent` and leave it to a state that some
        process acts on (see the table in the module docstring).  A run
        in progress loses the job: its token is replaced by the recovery's
        (writing the job, so that the run's own commit conflicts)."""
        status = job._status
        if status == NEW:
            agent.remove(job)
            self.queue.putBack(job)
        elif status == ACTIVE:
            agent._release(job)
            if job._inner is None:
                self._recover(job.handleInterrupt, job._handBack())
        elif status == CALLBACKS:
            agent._release(job)
            self._recover(job.resumeCallbacks, job._handBack())
        elif status == COMPLETED:
            agent.jobCompleted(job)

    def __repr__(self):
        return '<zcasync.registry.DispatcherAgents %s %s>' % (
            self.UUID, 'activated' if self.activated else 'deactivated')

class Dispatchers(utils.StoredMapping, persistent.Persistent):
    """UUID -> DispatcherAgents for one queue (``queue.dispatchers``)."""

    parent = None

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()

    def register(self, uuid):
        """Register dispatcher `uuid` (then ``self[uuid]``); returns None."""
        if uuid in self._data:
            raise ValueError('dispatcher %s is already registered' % uuid)
        agents = DispatcherAgents(uuid)
        agents.parent = self.parent  # the queue
        self._data[uuid] = agents
        zope.event.notify(interfaces.DispatcherRegistered(agents))

    def unregister(self, uuid):
        agents = self._data[uuid]
        if agents.activated:
            raise ValueError(
                'dispatcher %s is activated; deactivate it before '
                'unregistering' % uuid)
        del self._data[uuid]
        zope.event.notify(interfaces.DispatcherUnregistered(agents))
        agents.parent = None
        return agents

    def ping(self, uuid, isDead=None):
        """Record that dispatcher `uuid` is alive, then check the next one
        in the ring and deactivate it if it is dead: by default when its
        last ping is older than its death interval by this process's
        clock; ``isDead(agents)`` decides instead when given (a dispatcher
        passes what it watched itself, see ``zcasync.liveness``).  Returns
        None."""
        agents = self._data[uuid]
        now = utils.now()
        if not agents.activated:
            utils.safeLog(
                utils.log, logging.CRITICAL,
                'dispatcher %s was deactivated by a sibling that thought it '
                'dead, but it is alive; its jobs have been recovered '
                'elsewhere, and it re-activates now.  Likely causes: a '
                'ping_death_interval (%s) too short for this load, long '
                'transactions or a blocked reactor delaying pings, or '
                'clocks out of sync between machines.',
                uuid, agents.ping_death_interval)
            agents.activated = now
            agents._setPing(now)
            zope.event.notify(interfaces.DispatcherReactivated(agents))
        else:
            last = agents.last_ping.value
            if last is None or now - last >= agents.ping_interval:
                agents._setPing(now)
        following = self._next(uuid)
        if following is not None and (
                following.dead if isDead is None else isDead(following)):
            utils.safeLog(
                utils.log, logging.ERROR,
                'dispatcher %s found dispatcher %s dead (last ping %s, death '
                'interval %s); deactivating it to recover its jobs',
                uuid, following.UUID, following.last_ping.value,
                following.ping_death_interval)
            following.deactivate()

    def _next(self, uuid):
        """The next activated dispatcher after `uuid`, wrapping around."""
        after = self._data.values(min=uuid, excludemin=True)
        for agents in list(after) + list(self._data.values(max=uuid,
                                                            excludemax=True)):
            if agents.activated:
                return agents
        return None
