"""Component registrations zcasync needs (``base()``), idempotent."""
import zope.component
import zope.interface

from zcasync import interfaces
from zcasync import job
from zcasync import retry


def _jobForCallable(ob):
    if callable(ob):
        return job.Job(ob)
    return None


def base():
    """Register callables -> IJob adaptation and the built-in retry policy
    names.  Safe to call more than once."""
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
