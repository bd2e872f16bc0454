"""``zcasync.local``: what a running job can know about where it runs.

``import zcasync.local`` (or ``from zcasync.local import
setLiveAnnotation``) gives the functions of ``zcasync.threadlocal``, where
they live with the thread-local state behind them::

    zcasync.local.setLiveAnnotation('progress', (3, 8))
    job = zcasync.local.getJob()

See ``zcasync.threadlocal`` for what each one does.
"""
from zcasync.threadlocal import (  # noqa: F401
    getJob, getQueue, getDispatcher, getReactor, getAgentName,
    setLiveAnnotation, getLiveAnnotation, getLiveAnnotationAsync,
    checkPlainValue,
    pushJob, popJob, setDispatcherContext, cancelled, snooze,
    getRunControl, setRunControl)

__all__ = ['getJob', 'getQueue', 'getDispatcher', 'getReactor',
           'getAgentName', 'setLiveAnnotation', 'getLiveAnnotation',
           'getLiveAnnotationAsync', 'cancelled', 'snooze', 'getRunControl']
