"""Component registrations zcasync needs (``base()``, idempotent), and
``start()``: the one call that sets up a process the way zc.async's
``configure.start`` did (queues, a dispatcher in its own thread, agents).
"""
import persistent.interfaces
import ZODB.interfaces
import zope.component
import zope.event
import zope.interface

from zcasync import instanceuuid
from zcasync import interfaces
from zcasync import job
from zcasync import queue
from zcasync import retry


def _jobForCallable(ob):
    if callable(ob):
        return job.Job(ob)
    return None


def _provideUUID(value):
    if zope.component.queryUtility(interfaces.IUUID) is None:
        zope.component.getGlobalSiteManager().registerUtility(
            value, interfaces.IUUID)


def base():
    """Register callables -> IJob adaptation, the built-in retry policy
    names and the default policies (IRetryPolicy adapters of jobs, the
    unnamed one and 'callback'), the default queue as the IQueue adapter
    of persistent objects and connections, and the instance UUID as the
    IUUID utility.  Safe to call more than once.

    The IUUID utility is registered at once if this process already read
    its UUID, otherwise when something first needs it (making a
    dispatcher): a process that only queues jobs reads and needs no UUID
    file (and its jobs name no assigner)."""
    gsm = zope.component.getGlobalSiteManager()
    registered = {(r.required, r.provided, r.name)
                  for r in gsm.registeredAdapters()}
    if ((zope.interface.Interface,), interfaces.IJob, '') not in registered:
        gsm.registerAdapter(_jobForCallable, (zope.interface.Interface,),
                            interfaces.IJob)
    for name, factory in retry.POLICIES.items():
        if zope.component.queryUtility(
                interfaces.IRetryPolicyFactory, name) is None:
            gsm.registerUtility(factory, interfaces.IRetryPolicyFactory,
                                name)
    # the default policies, as zc.async found them: adapters of jobs
    for name, factory in (('', retry.RetryCommonFourTimes),
                          (retry.CALLBACK, retry.RetryCommonForever)):
        if ((interfaces.IJob,), interfaces.IRetryPolicy, name) not in \
                registered:
            gsm.registerAdapter(factory, (interfaces.IJob,),
                                interfaces.IRetryPolicy, name)
    for required in (persistent.interfaces.IPersistent,
                     ZODB.interfaces.IConnection):
        if ((required,), interfaces.IQueue, '') not in registered:
            gsm.registerAdapter(queue.getDefaultQueue, (required,),
                                interfaces.IQueue)
    instanceuuid.whenKnown(_provideUUID)


def start(db, poll_interval=5, db_name=None, agent_chooser=None,
          agent_size=3, twisted=False):
    """Set up this process as zc.async's ``configure.start`` did: the base
    registrations; subscribers that install the queues (in the database
    `db_name` of a multi-database set-up if given), start a dispatcher
    (in a thread of its own, or on Twisted's global reactor with
    `twisted`) and give it an agent 'main' (`agent_chooser`,
    `agent_size`) in each queue when it activates; then announce that
    `db` was opened, which sets it all going.  The dispatcher is then
    ``zcasync.dispatcher.get()``."""
    # zope.component's handlers hear zope.event's events once this is
    # imported (zope.component alone does not hook them in)
    import zope.component.event  # noqa: F401
    from zcasync import subscribers
    base()
    if db_name is None:
        zope.component.provideHandler(subscribers.queue_installer)
    else:
        zope.component.provideHandler(
            subscribers.QueueInstaller(db_name=db_name))
    if twisted:
        zope.component.provideHandler(
            subscribers.TwistedDispatcherInstaller(
                poll_interval=poll_interval))
    else:
        zope.component.provideHandler(
            subscribers.ThreadedDispatcherInstaller(
                poll_interval=poll_interval))
    zope.component.provideHandler(subscribers.AgentInstaller(
        'main', chooser=agent_chooser, size=agent_size))
    zope.event.notify(interfaces.DatabaseOpened(db))
