"""Composite jobs: ``serial(*jobs)`` and ``parallel(*jobs)``.

Each returns a main job that, run from a queue, queues the given jobs --
one after another, or all at once -- and then a postprocess job that gets
the completed jobs appended to its arguments (by default it returns the
list of their results).  The main job returns the postprocess job, so it
stays ACTIVE and takes the postprocess's result (see ``zcasync.job``).

Progress is driven by callbacks on the inner jobs, which run wherever each
inner job completes; every step is durable, so interrupting the main job
or any inner job at any point still ends with the right result once the
interrupted jobs are recovered.  Two inner jobs of a parallel set that
complete at once both try to queue the postprocess: both write it, so one
of them conflicts, retries, and finds it queued.
"""
from zcasync import interfaces
from zcasync import threadlocal
from zcasync import utils
from zcasync.interfaces import NEW, CALLBACKS, COMPLETED


def Job(*args, **kwargs):
    """A ``zcasync.job.Job`` (imported on use: job.py exports this
    module's functions, so importing it here at the top would be a
    cycle)."""
    from zcasync.job import Job
    return Job(*args, **kwargs)


def route(success, failure, result):
    """The callable of an ``addCallbacks`` callback: route the result."""
    if utils.isFailure(result):
        return failure(result) if failure is not None else result
    return success(result) if success is not None else result


def passThrough(result):
    """The job of a missing side of ``addCallbacks``: pass the outcome
    on."""
    return result


def serial(*jobs, postprocess=None):
    """A job that runs `jobs` one after another, then `postprocess` with the
    completed jobs appended to its arguments; its result is the
    postprocess's (by default, the list of the jobs' results)."""
    return _composite(_runSerial, jobs, postprocess)


def parallel(*jobs, postprocess=None):
    """Like `serial`, but the jobs are queued all at once."""
    return _composite(_runParallel, jobs, postprocess)


def _composite(runner, jobs, postprocess):
    jobs = [j if interfaces.IJob.providedBy(j) else Job(j) for j in jobs]
    if postprocess is None:
        postprocess = Job(_results)
    elif not interfaces.IJob.providedBy(postprocess):
        postprocess = Job(postprocess)
    return Job(runner, *jobs, postprocess=postprocess)


def _results(*jobs):
    return [job.result for job in jobs]


def _unplaced(job):
    return job._status == NEW and job.parent is None


def _prepare(main, jobs, postprocess, callback):
    if postprocess._status == NEW and postprocess.parent is None:
        postprocess.parent = main  # held back until every job is done
    for job in jobs:
        job.addCallback(Job(callback, main))


def _runSerial(*jobs, postprocess):
    main = threadlocal.getJob()
    _prepare(main, jobs, postprocess, _serialNext)
    _serialStep(main)
    return postprocess


def _runParallel(*jobs, postprocess):
    main = threadlocal.getJob()
    _prepare(main, jobs, postprocess, _parallelNext)
    queue = main.queue
    for job in jobs:
        if _unplaced(job):
            queue.put(job)
    _parallelNext(main)
    return postprocess


def _serialStep(main):
    for job in main.args:
        if job._status not in (CALLBACKS, COMPLETED):
            if _unplaced(job):
                main.queue.put(job)
            return
    _schedulePostprocess(main)


def _serialNext(main, result=None):
    _serialStep(main)


def _parallelNext(main, result=None):
    if all(job._status in (CALLBACKS, COMPLETED) for job in main.args):
        _schedulePostprocess(main)


def _schedulePostprocess(main):
    postprocess = main.kwargs['postprocess']
    if postprocess._status == NEW and postprocess.parent is main:
        postprocess.parent = None
        postprocess.args.extend(main.args)
        main.queue.put(postprocess)


# Public names of the functions above that stored jobs refer to (see
# zcasync.stable): the same objects; records keep naming the private ones.
runSerial = _runSerial
runParallel = _runParallel
serialNext = _serialNext
parallelNext = _parallelNext
results = _results
