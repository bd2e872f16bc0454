"""What a job may call, and how the call is stored.

A job stores its callable *by reference*, so that another process can find
it again: module-level functions, builtins and classes are pickled by
name; a method of a persistent object is stored as the object and the
method name (``tree.__setitem__``, ``Length().change``); a persistent
callable is stored as itself.  Anything else (a lambda, a nested function,
a method of an object that cannot be pickled) is refused when the job is
made, with an error that says what to use instead.

A process that cannot import what a stored job refers to gets a broken
stand-in from ZODB, and could not store that job again;
``loadProblem(job)`` says so, in words that name the module and the
remedy (queues park such jobs instead of failing every claim).
"""
import pickle
import types

import persistent
import ZODB.broken
import ZODB.utils

from zcasync import utils


def callableError(value, reason):
    return TypeError(
        'cannot store %r as a job\'s callable: %s.  Use a function defined '
        'at module level (importable by name), a builtin, a class, a '
        'persistent callable or a method of a persistent object; lambdas, '
        'nested functions and methods of objects that cannot be pickled '
        'cannot be stored' % (value, reason))


def splitCallable(value):
    """(root, method name or None) under which a callable is stored."""
    if not callable(value):
        raise TypeError('a job needs a callable, not %r' % (value,))
    if isinstance(value, persistent.Persistent):
        return value, None
    bound = getattr(value, '__self__', None)
    name = getattr(value, '__name__', None)
    if (bound is not None and name and
            not isinstance(bound, (types.ModuleType, type))):
        if not isinstance(bound, persistent.Persistent):
            _checkPicklable(value, bound, 'its object cannot be pickled')
        return bound, name
    _checkPicklable(value, value, 'it cannot be pickled by reference')
    return value, None


def _checkPicklable(value, ob, problem):
    try:
        pickle.dumps(ob)
    except Exception as e:
        raise callableError(value, '%s (%s)' % (problem, e)) from None


def describeCallable(root, name):
    def describe(ob):
        if isinstance(ob, (types.FunctionType, type)):
            return '%s.%s' % (ob.__module__, ob.__qualname__)
        if isinstance(ob, persistent.Persistent) and ob._p_oid is not None:
            return '<%s.%s (oid %d)>' % (
                type(ob).__module__, type(ob).__qualname__,
                ZODB.utils.u64(ob._p_oid))
        return utils.shortRepr(ob)
    if name is None:
        return describe(root)
    return '%s.%s' % (describe(root), name)


def _brokenName(value):
    """'module.name' when `value` stands in for something ZODB could not
    import (a broken class or object), else None."""
    if isinstance(value, type) and issubclass(value, ZODB.broken.Broken):
        return '%s.%s' % (value.__module__, value.__name__)
    if isinstance(value, ZODB.broken.Broken):
        kind = type(value)
        return '%s.%s' % (kind.__module__, kind.__name__)
    return None


def loadProblem(job):
    """Why this process cannot run (or even rewrite) `job`, as a message
    that names the module and the remedy; None when it can.

    A job whose callable (or retry policy factory) lives in a module this
    process cannot import unpickles with a broken stand-in, and storing
    the job again would fail; a job whose state cannot be unpickled at all
    fails to load.  Errors of the storage itself (a lost connection, a
    conflict) are not the job's problem: they propagate."""
    try:
        job._p_activate()
    except Exception as e:
        if isStorageError(e):
            raise
        return ('it cannot be loaded in this process (%s: %s); fix what its '
                'stored state needs (usually a module or class that moved), '
                'then "zcasync retry" it' % (type(e).__name__, e))
    name = _brokenName(job)
    if name is not None:
        return ('its class %s cannot be imported in this process; make that '
                'module importable where workers run, then "zcasync retry" '
                'it' % name)
    d = job.__dict__
    for what, value in (('callable', d.get('_callable_root')),
                        ('retry policy', d.get('_retry_policy_factory'))):
        name = _brokenName(value)
        if name is not None:
            module = name.rsplit('.', 1)[0]
            return ('its %s %s cannot be imported in this process (module %r '
                    'is missing or lacks it); make it importable where '
                    'workers run (install it, or "zcasync worker --import '
                    '%s"), then "zcasync retry" the job'
                    % (what, name, module, module))
    return None


#: Base classes, by qualified name, of the errors of storages' database
#: drivers (so that the drivers need not be installed).
DRIVER_ERRORS = ('psycopg2.Error', 'relstorage.adapters.interfaces.'
                 'ReplicaClosedException')


def isStorageError(error):
    """Whether `error` comes from the storage (transient: a lost
    connection, a conflict, an unavailable server) rather than from what
    a stored object refers to."""
    import transaction.interfaces
    import ZODB.POSException
    if isinstance(error, (transaction.interfaces.TransientError,
                          ZODB.POSException.StorageError, OSError)):
        return True
    names = {'%s.%s' % (k.__module__, k.__name__)
             for k in type(error).__mro__}
    return not names.isdisjoint(DRIVER_ERRORS)
