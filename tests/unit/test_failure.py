"""Storable failures (issue 2, section 3): repr, pickling, the verbose
traceback, reading a stored failure from another database object, and
exceptions that cannot be pickled."""
import operator
import pickle
import threading

import pytest
import transaction
import twisted.python.failure
import ZODB
import ZODB.FileStorage

import zcasync
from zcasync import utils
from zcasync.interfaces import COMPLETED
from zcasync.job import Job

try:
    from . import test_job_support as support
except ImportError:
    import test_job_support as support


class Secret:
    """A local variable whose repr shows up in the verbose traceback."""

    def __repr__(self):
        return '<Secret 1234>'


def failWithLocals(limit):
    secret = Secret()
    counter = limit * 2
    raise KeyError('missing %s and %r' % (counter, secret))


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def failWithLock():
    raise LockedError('held a lock')


def makeFailure(func, *args, capture=None):
    try:
        func(*args)
    except Exception:
        return utils.makeFailure(captureVars=capture)
    raise AssertionError('%r did not raise' % (func,))


def test_repr_names_the_qualified_exception_class(conn):
    job = conn.root()['job'] = Job(operator.mul, 'a', 'b')
    conn.transaction_manager.commit()
    failure = job()
    assert isinstance(failure, zcasync.Failure)
    assert repr(failure) == (
        "<zcasync.Failure builtins.TypeError: can't multiply sequence by "
        "non-int of type 'str'>")


def test_pickle_round_trip_keeps_type_value_and_traceback():
    failure = makeFailure(failWithLocals, 21, capture=True)
    copy = pickle.loads(pickle.dumps(failure))
    assert type(copy) is zcasync.Failure   # not Twisted's own class
    assert copy.type is KeyError and copy.check(KeyError)
    assert copy.getErrorMessage() == failure.getErrorMessage() == (
        "'missing 42 and <Secret 1234>'")
    assert repr(copy) == repr(failure)
    text = copy.getTraceback(detail='verbose')
    assert text == failure.getVerboseTraceback()
    lines = text.splitlines()
    assert lines[0].startswith('*--- Failure #') and lines[0].endswith(
        ' (pickled) ---')
    assert lines[-1].startswith('*--- End of Failure #')
    assert lines[-1].endswith(' ---')
    assert 'failWithLocals' in text
    # frame locals are kept as reprs, not as live objects
    assert 'secret : <Secret 1234>' in text
    assert 'counter : 42' in text
    for frame in copy.frames:
        for name, value in frame[3] + frame[4]:
            assert isinstance(value, str)


def test_brief_and_default_tracebacks_survive_pickling():
    failure = makeFailure(failWithLocals, 1)
    copy = pickle.loads(pickle.dumps(failure))
    assert 'KeyError' in copy.getTraceback()
    assert copy.getTraceback(detail='brief') == failure.getTraceback(
        detail='brief')


def test_failure_is_readable_from_a_new_database_object(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    job = conn.root()['job'] = Job(failWithLocals, 5)
    job.capture_variables = True
    tm.commit()
    job()
    expected = job.result.getTraceback(detail='verbose')
    conn.close()
    db.close()

    # as another process would: a new DB object on the same file
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with support.otherConnection(db) as other:
            stored = other.root()['job']
            assert stored.status == COMPLETED
            failure = stored.result
            assert isinstance(failure, zcasync.Failure)
            assert failure.check(KeyError)
            assert failure.getErrorMessage() == (
                "'missing 10 and <Secret 1234>'")
            assert failure.getTraceback(detail='verbose') == expected
            assert 'secret : <Secret 1234>' in expected
    finally:
        db.close()


def test_unpicklable_exception_is_replaced_by_a_clear_stand_in(conn, db):
    job = conn.root()['job'] = Job(failWithLock)
    conn.transaction_manager.commit()
    failure = job()
    assert failure.type is utils.UnpicklableError
    # check() and trap() match the stand-in and the original class
    assert failure.check(utils.UnpicklableError)
    assert failure.check(LockedError)
    assert failure.getErrorMessage() == (
        'test_failure.LockedError: held a lock')
    with support.otherConnection(db) as other:
        stored = other.root()['job']
        assert stored.status == COMPLETED
        assert stored.result.check(utils.UnpicklableError)
        assert stored.result.getErrorMessage() == (
            'test_failure.LockedError: held a lock')
        assert 'failWithLock' in stored.result.getTraceback()


def test_unpicklable_local_variables_do_not_matter(conn, db):
    job = conn.root()['job'] = Job(failWithLockInHand)
    job.capture_variables = True
    conn.transaction_manager.commit()
    job()
    with support.otherConnection(db) as other:
        text = other.root()['job'].result.getTraceback(detail='verbose')
    assert 'lock : <unlocked _thread.lock object' in text


def failWithLockInHand():
    lock = threading.Lock()  # noqa: F841 -- shown in the traceback
    raise ValueError('with a lock in hand')


def test_makeFailure_converts_twisted_failures():
    try:
        raise ValueError('plain')
    except ValueError:
        plain = twisted.python.failure.Failure()
    converted = utils.makeFailure(plain)
    assert type(converted) is zcasync.Failure
    assert converted.check(ValueError)
    assert pickle.loads(pickle.dumps(converted)).getErrorMessage() == 'plain'
    # a zcasync failure is kept as it is, and cleaning twice is harmless
    assert utils.makeFailure(converted) is converted
    assert converted.clean() is converted


def test_makeFailure_of_an_exception_instance():
    failure = utils.makeFailure(RuntimeError('made, not raised'))
    copy = pickle.loads(pickle.dumps(failure))
    assert copy.check(RuntimeError)
    assert repr(copy) == (
        '<zcasync.Failure builtins.RuntimeError: made, not raised>')


def test_chained_exceptions_do_not_keep_live_objects():
    def chained():
        try:
            raise LockedError('cause')
        except LockedError as e:
            raise ValueError('effect') from e
    failure = makeFailure(chained)
    assert failure.value.__cause__ is None
    assert failure.value.__context__ is None
    assert failure.value.__traceback__ is None
    assert pickle.loads(pickle.dumps(failure)).getErrorMessage() == 'effect'


def test_isFailure():
    assert utils.isFailure(utils.makeFailure(ValueError('x')))
    assert not utils.isFailure(ValueError('x'))


@pytest.mark.parametrize('detail', ['default', 'brief', 'verbose'])
def test_failure_of_a_returned_twisted_failure_is_stored(conn, db, detail):
    job = conn.root()['job'] = Job(returnTwistedFailure)
    conn.transaction_manager.commit()
    job()
    with support.otherConnection(db) as other:
        stored = other.root()['job'].result
        assert type(stored) is zcasync.Failure
        assert 'returned' in stored.getTraceback(detail=detail)


def returnTwistedFailure():
    try:
        raise ValueError('returned')
    except ValueError:
        return twisted.python.failure.Failure()


def test_frame_variables_are_not_kept_by_default(conn, db):
    job = conn.root()['job'] = Job(failWithLocals, 5)
    conn.transaction_manager.commit()
    job()
    with support.otherConnection(db) as other:
        stored = other.root()['job'].result
        text = stored.getTraceback(detail='verbose')
        assert 'failWithLocals' in text  # the frames are there
        assert 'secret :' not in text and 'counter :' not in text
        for frame in stored.frames:
            assert frame[3] == [] and frame[4] == []
    # the secret's repr appears only in the exception's own message
    assert pickle.dumps(job.result).count(b'Secret 1234') == 1


def test_frame_variables_kept_when_asked_for_globally(conn):
    previous = utils.setCaptureVariables(True)
    try:
        assert utils.captureVariables() is True
        failure = makeFailure(failWithLocals, 3)
    finally:
        utils.setCaptureVariables(previous)
    assert 'secret : <Secret 1234>' in failure.getTraceback(
        detail='verbose')
    assert 'secret :' not in makeFailure(failWithLocals, 3).getTraceback(
        detail='verbose')
