"""The dispatcher: the engine of one process.

Driven by a reactor (Twisted's, or anything with the five ``IReactor``
methods), a dispatcher polls the database from the reactor's thread: for
each queue it registers and activates itself, pings, and asks each of its
agents for jobs, which it hands to that agent's worker threads.  Each
worker thread holds one database connection for its life and runs jobs
(``job()``), recording the outcome in a short in-memory history that
operators query (``getJobInfo``, ``getStatistics``, ``getStatusInfo``).

Polls happen every ``poll_interval`` seconds, and also as soon as a
committed transaction touches one of the dispatcher's queues or agents
(see ``zcasync.invalidations``), so a job put in a queue starts within milliseconds.
"""
import datetime
import logging
import random
import threading

import transaction
import transaction.interfaces

from zcasync import instanceuuid
from zcasync import interfaces
from zcasync import invalidations
from zcasync import utils
from zcasync.history import (  # noqa: F401 (part of this module's API)
    JobHistory, Poll, PollHistory, pollKey, POLL_HISTORY, JOB_HISTORY,
    RESULT_LIMIT)
from zcasync.workers import AgentThreadPool

STOPPED = 'STOPPED'
STARTING = 'STARTING'
RUNNING = 'RUNNING'
STUCK = 'STUCK'


class Dispatcher:
    """``Dispatcher(db, reactor, poll_interval=5, uuid=None)``."""

    def __init__(self, db, reactor, poll_interval=5, uuid=None):
        self.db = db
        self.reactor = reactor
        self.poll_interval = poll_interval
        self.UUID = uuid if uuid is not None else instanceuuid.UUID
        self.polls = PollHistory()
        self.activated = None
        self.claiming = True
        self.conn = None
        self._pools = {}  # (queue name, agent name) -> AgentThreadPool
        self._pool_added = 0
        self._pool_lock = threading.Lock()
        self._activated_in = set()
        self._pinged = set()
        self.history = JobHistory(self.polls)
        self._next_call = None
        self._polling = False
        self._last_poll = None
        self._last_logged = None
        self._sequence = (0, 0)
        self._reactor_thread = None
        self._trigger = None
        self._watch = None
        self._watched = frozenset()  # oids: a change calls for a poll
        self._urgent = frozenset()  # oids: ... at once (new jobs)
        self._poll_instance = None
        self._soon = None  # the delay of the poll already asked for
        self._missed = []  # oids heard of while a poll ran
        self._conflicted = False  # a claim lost a race in this poll
        self._invalidation_lock = threading.Lock()
        self._last_heartbeat = None

    # -- life cycle ------------------------------------------------------

    def activate(self):
        if self.activated:
            raise ValueError('dispatcher %s is already activated' % self.UUID)
        utils.log.info('attempting to activate dispatcher %s', self.UUID)
        self.activated = utils.now()
        self.claiming = True
        self._last_poll = None
        self._growPool(1)
        self._trigger = self.reactor.addSystemEventTrigger(
            'before', 'shutdown', self._shutdown)
        self.reactor.callWhenRunning(self._start)

    def _growPool(self, difference):
        with self._pool_lock:
            self.db.setPoolSize(self.db.getPoolSize() + difference)
            self._pool_added += difference

    def _start(self):
        if not self.activated or self.conn is not None:
            return  # deactivated, or started by an earlier activate()
        self._reactor_thread = threading.get_ident()
        self.conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        self._poll_instance = self.conn._storage
        self._watch = invalidations.watch(self.db, self._invalidated)
        self.poll()

    def _shutdown(self):
        self._trigger = None  # firing now: nothing to remove
        if self.activated:
            self.deactivate()

    def deactivate(self):
        """Deactivate in every queue (recovering this dispatcher's
        unfinished jobs), stop the worker threads and give back the
        connections this dispatcher added to the database pool."""
        if not self.activated:
            raise ValueError('dispatcher %s is not activated' % self.UUID)
        self.activated = None
        # a later activate() registers its own shutdown trigger
        remove = getattr(self.reactor, 'removeSystemEventTrigger', None)
        if self._trigger is not None and remove is not None:
            try:
                remove(self._trigger)
            except ValueError:
                pass  # already fired
        self._trigger = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = None
        if self.conn is not None:
            try:
                self._deactivateInQueues()
            except Exception:
                utils.safeLog(
                    utils.log, logging.ERROR,
                    'dispatcher %s could not record its deactivation; its '
                    'siblings will find it dead after its '
                    'ping_death_interval and recover its jobs:\n%s',
                    self.UUID, utils.formatException())
            try:
                self.conn.transaction_manager.abort()
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        self._activated_in.clear()
        self._pinged.clear()
        for pool in list(self._pools.values()):
            pool.close()
        self._pools.clear()
        self._growPool(-self._pool_added)
        utils.log.info('deactivated dispatcher %s', self.UUID)

    def _deactivateInQueues(self):
        is_connected = getattr(self.db.storage, 'is_connected', None)
        if is_connected is not None and not is_connected():
            # a ZEO client without its server would wait for it here
            raise RuntimeError('the storage server is not connected')
        tm = self.conn.transaction_manager
        for attempt in tm.attempts(5):
            with attempt:
                queues = self.conn.root().get(interfaces.KEY)
                for name in self._activated_in:
                    queue = queues.get(name) if queues else None
                    agents = queue.dispatchers.get(self.UUID) \
                        if queue is not None else None
                    if agents is not None and agents.activated:
                        agents.deactivate()

    # -- reactor helpers -------------------------------------------------

    def inReactorThread(self):
        return threading.get_ident() == self._reactor_thread

    def callInReactor(self, func, *args, timeout=60):
        """Run func in the reactor's thread and return its result (from
        another thread: wait for it)."""
        if self.inReactorThread():
            return func(*args)
        done = threading.Event()
        outcome = {}

        def call():
            try:
                outcome['value'] = func(*args)
            except BaseException as e:
                outcome['error'] = e
            finally:
                done.set()
        self.reactor.callFromThread(call)
        if not done.wait(timeout):
            raise RuntimeError('the reactor did not answer within %s s'
                               % timeout)
        if 'error' in outcome:
            raise outcome['error']
        return outcome['value']

    def _getConnection(self, database_name):
        if self.conn is None:
            raise ValueError('dispatcher %s is not running' % self.UUID)
        if database_name is None or \
                database_name == self.db.database_name:
            return self.conn
        return self.conn.get_connection(database_name)

    def _setLiveAnnotation(self, job_id, name, value):
        oid, database_name = job_id
        conn = self._getConnection(database_name)
        tm = self.conn.transaction_manager
        for attempt in tm.attempts(10):
            with attempt:
                conn.get(oid).annotations[name] = value

    def _getLiveAnnotation(self, job_id, name, default):
        oid, database_name = job_id
        conn = self._getConnection(database_name)
        self.conn.transaction_manager.begin()
        try:
            return conn.get(oid).annotations.get(name, default)
        finally:
            self.conn.transaction_manager.abort()

    # -- polling ---------------------------------------------------------

    #: Seconds a poll waits when only room was freed (a job completed), so
    #: that completions arriving together are claimed for in one commit.
    room_delay = 0.002

    def _invalidated(self, oids, committing_instance):
        """Invalidation listener (any thread): a commit touched what this
        dispatcher watches -> poll soon; at once when jobs were added.
        The poll's own commits are ignored."""
        if committing_instance is not None and \
                committing_instance is self._poll_instance:
            return
        with self._invalidation_lock:
            if self._polling:
                # the running poll may have read the database before this
                # commit, with a watch list about to change: decide when it
                # ends
                self._missed.append(oids)
                return
            delay = self._delayFor(oids)
            if delay is None or (self._soon is not None and
                                 self._soon <= delay):
                return
            self._soon = delay
        self.reactor.callFromThread(self._pollSoon, delay)

    def _delayFor(self, oids):
        """0 when `oids` include new jobs, room_delay when they free room,
        None when they do not concern this dispatcher."""
        if self._watched.isdisjoint(oids):
            return None
        return 0 if not self._urgent.isdisjoint(oids) else self.room_delay

    def _pollSoon(self, delay):
        if self.activated and self.conn is not None:
            self._schedule(delay)

    def _schedule(self, delay):
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = self.reactor.callLater(delay, self.poll)

    def poll(self):
        """Poll now (in the reactor's thread)."""
        if not self.activated or self.conn is None:
            return
        self._next_call = None
        with self._invalidation_lock:
            self._polling = True
            self._soon = None
        self._next_due = None
        now = utils.now()
        heartbeat = self._last_heartbeat is None or (
            now - self._last_heartbeat).total_seconds() >= \
            self.poll_interval * 0.9
        if heartbeat:
            self._last_heartbeat = now
        self._heartbeat = heartbeat
        watched, urgent = set(), set()
        poll = self._newPoll()
        complete = False
        try:
            self._pollQueues(poll, watched, urgent)
            complete = True
        except transaction.interfaces.TransientError:
            # e.g. the ping or the activation commit conflicted
            self.conn.transaction_manager.abort()
            self._conflicted = True
        except Exception:
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s: poll failed:\n%s',
                          self.UUID, utils.formatException())
            self.conn.transaction_manager.abort()
        finally:
            self._last_poll = poll.utc_timestamp
            self.polls.add(poll)
            if poll != self._last_logged:
                self._last_logged = poll
                utils.tracelog.debug('poll %s: %r', poll.key, dict(poll))
            with self._invalidation_lock:
                if watched and complete:
                    # a partial list would miss what the poll did not reach
                    self._watched = frozenset(watched)
                    self._urgent = frozenset(urgent)
                missed, self._missed = self._missed, []
                self._polling = False
                delay = self._delay()
                if self._conflicted:
                    self._conflicted = False
                    delay = min(delay, random.uniform(0, 4 * self.room_delay))
                for oids in missed:
                    soon = self._delayFor(oids)
                    if soon is not None and soon < delay:
                        delay = soon
            if self.activated:
                self._schedule(delay)

    def _delay(self):
        """Seconds to the next heartbeat poll, or to the next scheduled job
        coming due if that is sooner."""
        delay = self.poll_interval
        if self._next_due is not None:
            due = (self._next_due - utils.now()).total_seconds()
            delay = max(0, min(delay, due))
        return delay

    def _newPoll(self):
        poll = Poll()
        started = utils.now()
        micros = utils.toMicros(started)
        last_micros, sequence = self._sequence
        sequence = min(sequence + 1, 15) if micros == last_micros else 0
        self._sequence = (micros, sequence)
        poll.key = pollKey(micros, sequence)
        poll.utc_timestamp = started
        return poll

    def _pollQueues(self, poll, watched, urgent):
        tm = self.conn.transaction_manager
        tm.begin()
        root = self.conn.root()
        urgent.add(root._p_oid)
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
        for key in [k for k in self._pools if k[0] not in names]:
            self._pools.pop(key).close()

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
            if uuid != self.UUID and not everyone:
                continue
            watched.add(agents._agents._p_oid)
            for agent in agents.values():
                watched.add(agent._p_oid)
                watched.add(agent._jobs._p_oid)
        self._noteDue(queue.nextDue())
        schedules = queue.existingSchedules()
        if schedules is not None:
            urgent.add(schedules.changes._p_oid)  # a schedule set or removed

    def _activateIn(self, tm, name, queue):
        agents = queue.dispatchers.get(self.UUID)
        if agents is None:
            agents = queue.dispatchers.register(self.UUID)
        elif agents.activated:
            if not agents.dead:
                tm.abort()
                utils.log.error(
                    'dispatcher %s: UUID %s is already activated in queue '
                    '%r and not dead (last ping %s): another process seems '
                    'to use this UUID.  Give every process its own UUID '
                    'file (ZC_ASYNC_UUID); skipping this queue.',
                    self.UUID, self.UUID, name, agents.last_ping)
                return None
            agents.deactivate()
        agents.activate()
        tm.commit()
        self._activated_in.add(name)
        return agents

    def _pollQueue(self, tm, name, queue, poll):
        # a queue removed and added again under this name no longer
        # knows this dispatcher: register there afresh
        if name not in self._activated_in or \
                self.UUID not in queue.dispatchers:
            if self._activateIn(tm, name, queue) is None:
                return None
        if self._heartbeat or name not in self._pinged:
            # pings and the look at the next dispatcher in the ring belong
            # to the heartbeat, not to every poll a commit calls for
            queue.dispatchers.ping(self.UUID)
            tm.commit()
            self._pinged.add(name)
        self._fireSchedules(tm, name, queue)
        agents = queue.dispatchers[self.UUID]
        info = {}
        seen = set()
        for agent_name, agent in agents.items():
            seen.add(agent_name)
            info[agent_name] = self._pollAgent(
                tm, name, agent_name, agent, poll)
        for key in [k for k in self._pools
                    if k[0] == name and k[1] not in seen]:
            self._pools.pop(key).close()
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

    def _noteDue(self, when):
        if when is not None and (self._next_due is None or
                                 when < self._next_due):
            self._next_due = when

    def _pollAgent(self, tm, queue_name, agent_name, agent, poll):
        pool = self._pools.get((queue_name, agent_name))
        if pool is None:
            pool = self._pools[(queue_name, agent_name)] = AgentThreadPool(
                self, queue_name, agent_name)
        pool.setSize(agent.size)
        record = {'size': agent.size, 'len': len(agent), 'error': None,
                  'new jobs': [], 'active jobs': pool.activeJobIds()}
        if not self.claiming:
            return record
        claimed = []
        try:
            while True:
                job = agent.claimJob()
                if job is None:
                    break
                job._activate()  # claim and start recorded in one commit
                claimed.append(job)
            if claimed:
                tm.commit()
        except transaction.interfaces.TransientError:
            # another dispatcher claimed the same job: try again soon, at a
            # random moment so that the losers do not collide again
            tm.abort()
            claimed = []
            self._conflicted = True
        except Exception:
            failure = utils.makeFailure()
            tm.abort()
            record['error'] = failure
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s: agent %r failed to claim:\n%s',
                          self.UUID, agent_name, failure.getTraceback())
            claimed = []
        for job in claimed:
            job_id = utils.jobId(job)
            record['new jobs'].append(job_id)
            pool.perform(job_id, poll.key)
        return record

    # -- running jobs (worker threads) ----------------------------------

    def _perform(self, conn, tm, job_id, poll_key, pool):
        oid, database_name = job_id
        record = {
            'call': 'job %r' % (job_id,), 'started': utils.now(),
            'completed': None, 'failed': False, 'result': None,
            'thread': threading.get_ident(), 'poll id': poll_key,
            'quota names': (),
        }
        self.history.start(job_id, record, pool.queue_name, pool.agent_name)
        try:
            tm.begin()
            if database_name and database_name != self.db.database_name:
                job = conn.get_connection(database_name).get(oid)
            else:
                job = conn.get(oid)
            record['call'] = call = repr(job)
            record['quota names'] = tuple(job.quota_names)
        except Exception:
            # e.g. the storage server went away since the claim; the job
            # stays ACTIVE and is recovered with this dispatcher
            tm.abort()
            failure = utils.makeFailure()
            record.update(completed=utils.now(), failed=True,
                          result=failure.getTraceback()[:RESULT_LIMIT])
            utils.safeLog(utils.log, logging.ERROR,
                          'dispatcher %s could not load claimed %s:\n%s',
                          self.UUID, record['call'], record['result'])
            return
        try:
            job._runClaimed()
        except (interfaces.BadStatusError, interfaces.ReassignedError):
            # another process took the job: its outcome is theirs
            tm.abort()
            self._finish(job, call, record, utils.makeFailure())
            return
        except Exception:
            # the job machinery failed outside the job's own code: fail the
            # job, so that it does not stay ACTIVE holding its agent slot
            failure = utils.makeFailure()
            tm.abort()
            self._failInPlace(job, tm, failure)
            self._finish(job, call, record, failure)
            return
        except BaseException:
            utils.safeLog(
                utils.log, logging.CRITICAL,
                '%s was interrupted in thread %s; recovering it:\n%s',
                call, threading.get_ident(), utils.formatException())
            # this run failed (it must not be reported as a success)
            interruption = utils.makeFailure()
            tm.abort()
            try:
                for attempt in tm.attempts(5):
                    with attempt:
                        job.handleInterrupt()
            finally:
                self._finish(job, call, record, interruption)
            raise
        self._finish(job, call, record, job.result)
        tm.abort()

    def _failInPlace(self, job, tm, failure):
        try:
            for attempt in tm.attempts(5):
                with attempt:
                    if job._status == interfaces.ACTIVE and job._inner is None:
                        job._complete(failure)
        except Exception:
            utils.safeLog(
                utils.log, logging.CRITICAL,
                'could not store the failure of %r; it stays ACTIVE until '
                'this dispatcher is deactivated:\n%s',
                job, utils.formatException())

    def _finish(self, job, call, record, result):
        failed = utils.isFailure(result)
        if failed:
            text = result.getTraceback(detail='verbose')
        elif isinstance(result, str):
            text = repr(result)
        else:
            text = utils.shortRepr(result, RESULT_LIMIT)
        text = text[:RESULT_LIMIT]
        record.update(completed=utils.now(), failed=failed, result=text)
        if failed:
            level = job.failure_log_level or logging.ERROR
            utils.tracelog.log(
                level, '%s failed in thread %s with result:\n%s',
                call, record['thread'], text)
        else:
            utils.tracelog.info(
                '%s succeeded in thread %s with result:\n%s',
                call, record['thread'], text)

    # -- queries ---------------------------------------------------------

    def getJobInfo(self, oid, database_name=None):
        if database_name is None:
            database_name = self.db.database_name
        return self.history.getJobInfo(oid, database_name)

    def getPollInfo(self, at=None, before=None):
        return self.polls.find(at, before)

    def getStatistics(self, at=None, before=None, since=None, queue=None,
                      agent=None):
        return self.history.getStatistics(
            self.getActiveJobIds(), at, before, since, queue, agent)

    def getActiveJobIds(self, queue=None, agent=None):
        ids = []
        for (queue_name, agent_name), pool in list(self._pools.items()):
            if queue is not None and queue != queue_name:
                continue
            if agent is not None and agent != agent_name:
                continue
            ids.extend(pool.activeJobIds())
        return ids

    def getStatusInfo(self):
        info = {'poll interval': datetime.timedelta(
            seconds=self.poll_interval)}
        if not self.activated:
            info.update({'status': STOPPED, 'time since last poll': None,
                         'uptime': None, 'uuid': self.UUID})
            return info
        now = utils.now()
        last = self._last_poll
        if last is None:
            status = STARTING
        elif self._polling:
            status = RUNNING
        else:
            slack = max(self.poll_interval, 1) * 2 + 5
            overdue = (now - last).total_seconds() > \
                self.poll_interval + slack
            status = STUCK if overdue else RUNNING
        info.update({
            'status': status,
            'time since last poll': (now - last) if last else None,
            'uptime': now - self.activated,
        })
        return info
