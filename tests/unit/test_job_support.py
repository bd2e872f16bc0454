"""Helpers shared by the job, retry, failure and serial/parallel tests.

There are no tests here.  The callables are module-level so that jobs can
store them by reference.

- ``otherConnection(db)``: a second connection with its own transaction
  manager, to see what is committed (and only that);
- ``Crash(tm, when)``: simulates a process that dies at a chosen point of a
  job's life cycle, without BaseException tricks: once a commit on `tm`
  succeeds after which ``when()`` holds, every later commit on `tm` fails
  (in the vote, as a storage would), so the job's code stops where the
  first failed commit propagates and the database keeps exactly what was
  committed before the "death".
"""
import contextlib

import transaction
import transaction._transaction

import zcasync
from zcasync.interfaces import ACTIVE


@contextlib.contextmanager
def otherConnection(db):
    """A connection with its own transaction manager (closed on exit)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        yield conn
    finally:
        tm.abort()
        conn.close()


def storedState(db, oid, *names):
    """Attributes of the object `oid` as committed, read from a fresh
    connection."""
    with otherConnection(db) as conn:
        ob = conn.get(oid)
        return tuple(getattr(ob, name) for name in names)


_Status = transaction._transaction.Status


class SimulatedCrash(Exception):
    """The process 'died': the commit that raised this did not happen."""


class _RefuseCommit:
    """A resource manager that makes the commit it joins fail."""

    def __init__(self, crash, tm):
        self.crash = crash
        self.transaction_manager = tm

    def sortKey(self):
        return '~zcasync-tests-crash'

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        self.crash.refused += 1
        raise self.crash.error('the process died before this commit')

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass


class Crash:
    """See the module docstring.  ``stop()`` unregisters it.  `error` is
    the exception class the refused commits raise."""

    def __init__(self, tm, when, error=SimulatedCrash):
        self.tm = tm
        self.when = when
        self.error = error
        self.armed = False
        self.refused = 0
        tm.registerSynch(self)

    def newTransaction(self, txn):
        pass

    def beforeCompletion(self, txn):
        # called before a commit and before an abort; joining a resource
        # that only fails in the vote is harmless for an abort
        if self.armed and txn.status == _Status.ACTIVE:
            txn.join(_RefuseCommit(self, self.tm))

    def afterCompletion(self, txn):
        if (not self.armed and
                txn.status == _Status.COMMITTED
                and self.when()):
            self.armed = True

    def stop(self):
        self.tm.unregisterSynch(self)


# --- callables stored by jobs -------------------------------------------

def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return (args, dict(kwargs))


def currentJob():
    return zcasync.local.getJob()


def root():
    """The database root, as seen by the running job's connection."""
    return currentJob()._p_jar.root()


def crashWhileActive(job):
    """Run the stored `job` and let its process 'die' once it is committed
    ACTIVE: the result is never stored, the job stays ACTIVE."""
    tm = job._p_jar.transaction_manager
    crash = Crash(tm, lambda: job._status == ACTIVE)
    try:
        job()
    except SimulatedCrash:
        pass
    else:
        raise AssertionError('%r ran to its end' % (job,))
    finally:
        crash.stop()
        tm.abort()
