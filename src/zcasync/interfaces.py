"""Constants, interfaces, events and exceptions of zcasync.

Everything another module or an application needs to *name* lives here:
the database root key, the job status constants, the interfaces of the
main objects (jobs, queues, agents, dispatchers, retry policies, reactors),
the dispatcher life-cycle events and the exceptions.
"""
import zope.interface
import zope.interface.common.mapping
import zope.interface.interfaces

#: The key of the queues mapping (`zcasync.queue.Queues`) in the database
#: root.  It is the old zc.async key, so that a database keeps one home for
#: its queues across the migration.
KEY = 'zc.async'

# Job status constants.  A job is *stored* NEW, ACTIVE, CALLBACKS or
# COMPLETED; while stored NEW it *reads* PENDING when it waits in a queue,
# PARKED when its queue set it aside because it cannot be run (see
# ``zcasync.queue``, parked jobs), and ASSIGNED when an agent has claimed
# it.
NEW = 'new-status'
PENDING = 'pending-status'
PARKED = 'parked-status'
ASSIGNED = 'assigned-status'
ACTIVE = 'active-status'
CALLBACKS = 'callback-status'
COMPLETED = 'completed-status'

STATUSES = (NEW, PENDING, PARKED, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)


# --- exceptions -----------------------------------------------------------

class AbortedError(Exception):
    """The job was interrupted (its process died) and will not be retried."""


class TimeoutError(Exception):
    """The job could not start before its ``begin_by`` deadline."""


class TimeLimitError(TimeoutError):
    """A run went on longer than its job's time limit (``job.timeout``,
    ``queue.put(job, timeout=...)``) and was stopped.  A TimeoutError, so
    that code catching start deadlines catches time limits too; the job's
    retry policy decides whether it runs again."""


class CancelledError(Exception):
    """The job was cancelled (``job.cancel()``, ``zcasync cancel``, the
    dashboard): its result when it was pending, or when its run was asked
    to stop.  Never retried."""


class BadStatusError(Exception):
    """The job is not in a status that allows the requested operation."""


class ReassignedError(Exception):
    """The job was taken over by another dispatcher while it ran."""


class UnknownQuotaError(ValueError):
    """A pending job was given a quota name its queue does not have.
    ``args`` are ``('unknown quota name', name)``, as zc.async's
    ValueError."""

    def __init__(self, name):
        super().__init__('unknown quota name', name)

    def __str__(self):
        return ('unknown quota name %r: the queue of the job has no such '
                'quota; create it first with queue.quotas.create(%r, size)'
                % (self.args[1], self.args[1]))


# --- reactor --------------------------------------------------------------

class IReactor(zope.interface.Interface):
    """What a dispatcher needs of a reactor (Twisted's reactors have it)."""

    def callFromThread(callable, *args, **kw):
        """Have callable run in the reactor's thread, by the reactor, ASAP.

        Intended to be called from a thread other than the reactor's.
        """

    def callInThread(callable, *args, **kw):
        """Have callable run in a separate thread, ASAP.

        Called in the reactor's thread.
        """

    def callLater(seconds, callable, *args, **kw):
        """Have callable run in the reactor at least `seconds` from now.

        Called in the reactor's thread.
        """

    def addSystemEventTrigger(phase, event, callable, *args, **kw):
        """Install a callable to be run in `phase` of `event`.

        Must support phase 'before' and event 'shutdown'.
        """

    def callWhenRunning(callable, *args, **kw):
        """Run callable now if the reactor runs, or when it starts."""


# --- jobs -----------------------------------------------------------------

class IRetryPolicy(zope.interface.Interface):
    """Decides what happens when a job fails, its commit fails, or it was
    interrupted.

    Each decision answers True (retry now), False (give up), or a
    ``datetime``/``timedelta`` (reschedule the job in its queue at that
    time; zero or past means the front of the queue).
    """

    def jobError(failure, data_cache):
        """The job's callable raised; `failure` describes it."""

    def commitError(failure, data_cache):
        """Committing the job's result failed; `failure` describes it."""

    def interrupted():
        """The job was ACTIVE when its process died."""

    def updateData(data_cache):
        """Write the counts held in `data_cache` back onto the job.

        Called after an abort, which undoes what the policy had written.
        """


class IJob(zope.interface.Interface):
    """A persistent call: a callable, arguments, a result and a life cycle."""

    parent = zope.interface.Attribute(
        'The container of the job: a queue, an agent or another job '
        '(for callbacks), or None.')
    callable = zope.interface.Attribute('What the job calls.')
    args = zope.interface.Attribute('Positional arguments (a list).')
    kwargs = zope.interface.Attribute('Keyword arguments (a mapping).')
    annotations = zope.interface.Attribute('A BTree for metadata.')
    callbacks = zope.interface.Attribute('The callback jobs.')
    status = zope.interface.Attribute('One of the status constants.')
    result = zope.interface.Attribute('The result, or None.')
    begin_after = zope.interface.Attribute(
        'Aware UTC datetime before which the job does not start.')
    begin_by = zope.interface.Attribute(
        'timedelta after begin_after by which the job must start, or None.')
    quota_names = zope.interface.Attribute('Tuple of quota names.')
    timeout = zope.interface.Attribute(
        'timedelta: the time limit of a run (stopped, then failed with '
        'TimeLimitError), or None.')
    failure_log_level = zope.interface.Attribute(
        'Logging level for a failure, or None for the default.')
    retry_policy_factory = zope.interface.Attribute(
        'None (the default), a callable, or a registered name.')
    active_start = zope.interface.Attribute('When the job became ACTIVE.')
    active_end = zope.interface.Attribute('When the job COMPLETED.')
    assignerUUID = zope.interface.Attribute(
        'The instance UUID of the process that queued the job.')
    queue = zope.interface.Attribute('The queue reached through parents.')
    agent = zope.interface.Attribute('The agent reached through parents.')

    def __call__(*args, **kwargs):
        """Run the job (extra arguments are added for this call only)."""

    def addCallback(callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Add a callback that receives the job's final result."""

    def addCallbacks(success=None, failure=None, failure_log_level=None,
                     retry_policy_factory=None):
        """Add a callback routed by success or failure."""

    def handleInterrupt():
        """Recover a job that was ACTIVE when its process died."""

    def cancel(grace=None):
        """Cancel the job: one that has not started completes with
        CancelledError; a running one is asked to stop and completed with
        CancelledError after `grace` seconds whatever it does."""

    def fail(e=None):
        """Fail a job that has not started (default TimeoutError)."""

    def resumeCallbacks():
        """Finish the callbacks of a job in CALLBACKS."""

    def getRetryPolicy():
        """The retry policy for this job."""


class ICallbackProxy(zope.interface.Interface):
    """A callback of a job that chooses the job to run from the job's
    result (``job.addCallbacks(success, failure)`` returns one)."""

    parent = zope.interface.Attribute('The job it is a callback of.')
    success = zope.interface.Attribute('The job run with a result.')
    failure = zope.interface.Attribute('The job run with a Failure.')
    job = zope.interface.Attribute(
        'The job chosen by the result, or None before there is one.')
    status = zope.interface.Attribute("The chosen job's status (or NEW).")
    result = zope.interface.Attribute("The chosen job's result (or None).")
    callbacks = zope.interface.Attribute('Callbacks chained on the proxy.')

    def addCallback(callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Chain a callback: it gets the chosen job's result."""

    def addCallbacks(success=None, failure=None, failure_log_level=None,
                     retry_policy_factory=None):
        """Chain another proxy."""


class IQueue(zope.interface.Interface):
    """Where an application puts jobs, and agents claim them."""

    name = zope.interface.Attribute('The name in the Queues mapping.')
    parent = zope.interface.Attribute('The Queues mapping.')
    quotas = zope.interface.Attribute('The quotas of this queue.')
    dispatchers = zope.interface.Attribute(
        'UUID -> IDispatcherAgents registry.')

    def put(item, begin_after=None, begin_by=None, failure_log_level=None,
            retry_policy_factory=None, priority=None, unique_key=None,
            unique_for=None):
        """Queue a job (or a callable, made a job) and return the job (or
        the job already holding `unique_key`)."""

    def pause():
        """Hand out no jobs until resume() (puts are still accepted)."""

    def resume():
        """Hand out jobs again."""

    def schedule(name, callable, *args, cron=None, every=None,
                 timezone='UTC', catch_up=False, grace=None, **kwargs):
        """Add or update a periodic job (see zcasync.schedules)."""

    def putBack(job):
        """Put a job at the front of the queue."""

    def pull(index=0):
        """Remove and return the job at `index`."""

    def remove(job):
        """Remove `job`; LookupError if it is not in the queue."""

    def claim(filter=None, default=None):
        """Remove and return the first due job that fits, or default."""

    def __len__():
        """The number of jobs in the queue."""

    def __iter__():
        """The jobs in claim order."""


class IQuota(zope.interface.Interface):
    """A hard limit on the jobs of one name that run at once."""

    name = zope.interface.Attribute('The quota name.')
    size = zope.interface.Attribute('How many jobs may run at once.')
    filled = zope.interface.Attribute('True when no room is left.')

    def clean():
        """Drop jobs that finished or went back to waiting."""


class IAgent(zope.interface.Interface):
    """A persistent per-process "hand" that takes jobs from a queue."""

    name = zope.interface.Attribute('The name in its DispatcherAgents.')
    parent = zope.interface.Attribute('Its DispatcherAgents.')
    size = zope.interface.Attribute('How many jobs it runs at once.')
    chooser = zope.interface.Attribute('Picks a job from the queue, or None.')
    filter = zope.interface.Attribute('Accepts or refuses jobs, or None.')
    completed = zope.interface.Attribute('Recently completed jobs.')

    def claimJob():
        """A newly claimed job, or None when full or nothing fits."""

    def jobCompleted(job):
        """Move a completed job to the completed collection."""


class IFilterAgent(IAgent):
    """An agent that claims with its ``filter`` (it has no chooser)."""

    filter = zope.interface.Attribute(
        'Called with a job: True for the jobs this agent may take; None '
        'takes any job.')


class ICompletedCollection(zope.interface.Interface):
    """The recently completed jobs of an agent (``agent.completed``),
    newest first."""

    def __iter__():
        """The jobs, newest first."""

    def __len__():
        """How many jobs it holds."""

    def iter(start=None, stop=None):
        """The jobs completed between `start` and `stop`, newest first."""

    def first():
        """The newest job, or None."""

    def last():
        """The oldest job, or None."""

    def add(job):
        """Add a completed job."""


class IUUID(zope.interface.Interface):
    """The instance UUID of this process (a ``uuid.UUID``), registered as
    a utility by ``zcasync.configure.base()``."""


class IDispatcherAgents(zope.interface.common.mapping.IMapping):
    """The persistent representative of one dispatcher in one queue:
    a mapping of agent name -> agent, with the life-cycle data."""

    UUID = zope.interface.Attribute('The dispatcher UUID.')
    activated = zope.interface.Attribute('Activation datetime, or None.')
    last_ping = zope.interface.Attribute(
        'The last ping: a max register (zope.minmax.Maximum) whose '
        '``value`` is the datetime of the last ping, or None before it.')
    ping_interval = zope.interface.Attribute('timedelta between pings.')
    ping_death_interval = zope.interface.Attribute(
        'timedelta without ping after which the dispatcher is dead.')
    dead = zope.interface.Attribute('True when considered dead.')

    def activate():
        """Clean up held jobs and mark activated."""

    def deactivate():
        """Clean up held jobs and mark deactivated."""


class IQueues(zope.interface.common.mapping.IMapping):
    """The mapping name -> queue stored at root[KEY]."""


# --- events ---------------------------------------------------------------

class IDispatcherRegistered(zope.interface.interfaces.IObjectEvent):
    """A dispatcher registered in a queue (object: its DispatcherAgents)."""


class IDispatcherUnregistered(zope.interface.interfaces.IObjectEvent):
    """A dispatcher was unregistered from a queue."""


class IDispatcherActivated(zope.interface.interfaces.IObjectEvent):
    """A dispatcher was activated in a queue."""


class IDispatcherDeactivated(zope.interface.interfaces.IObjectEvent):
    """A dispatcher was deactivated in a queue."""


class IDispatcherReactivated(zope.interface.interfaces.IObjectEvent):
    """A dispatcher found itself deactivated by a sibling and
    re-activated itself."""


class IDatabaseOpenedEvent(zope.interface.Interface):
    """A database was opened (the start-up subscribers of
    ``zcasync.subscribers`` listen to it)."""

    database = zope.interface.Attribute('The ZODB DB.')


@zope.interface.implementer(IDatabaseOpenedEvent)
class DatabaseOpened:

    def __init__(self, database):
        self.database = database


class IObjectAdded(zope.interface.interfaces.IObjectEvent):
    """An object (queues, a queue, an agent) was added by the start-up
    subscribers."""

    parent = zope.interface.Attribute('Where it was added.')
    name = zope.interface.Attribute('The name it was added under.')


class _ObjectEvent:

    def __init__(self, object):
        self.object = object


@zope.interface.implementer(IObjectAdded)
class ObjectAdded(_ObjectEvent):

    def __init__(self, object, parent, name):
        super().__init__(object)
        self.parent = parent
        self.name = name


@zope.interface.implementer(IDispatcherRegistered)
class DispatcherRegistered(_ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherUnregistered)
class DispatcherUnregistered(_ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherActivated)
class DispatcherActivated(_ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherDeactivated)
class DispatcherDeactivated(_ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherReactivated)
class DispatcherReactivated(_ObjectEvent):
    pass


class IRetryPolicyFactory(zope.interface.Interface):
    """Called with a job, returns an IRetryPolicy.  Register named
    utilities providing this to make a name usable as a job's
    ``retry_policy_factory``; the names 'default' and 'callback' replace
    the defaults for queued jobs and for callbacks."""

    def __call__(job):
        """Return an IRetryPolicy for job."""


class DatabaseFormatError(Exception):
    """The database holds data this version of zcasync cannot run on: a
    zc.async database not yet migrated (``zcasync migrate``), or a format
    newer than this code."""
