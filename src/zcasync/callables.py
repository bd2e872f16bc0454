"""What a job may call, and how the call is stored.

A job stores its callable *by reference*, so that another process can find
it again: module-level functions, builtins and classes are pickled by
name; a method of a persistent object is stored as the object and the
method name (``tree.__setitem__``, ``Length().change``); a persistent
callable is stored as itself.  Anything else (a lambda, a nested function,
a method of an object that cannot be pickled) is refused when the job is
made, with an error that says what to use instead.
"""
import pickle
import types

import persistent
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
