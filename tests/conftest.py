"""Shared fixtures: a FileStorage database in a temp dir, a clean
component registry with zcasync's registrations, and a UUID file.

A test run leaves nothing behind: the UUID file's folder is removed when
the run ends, pytest keeps the temporary folders of failed tests only
(``tmp_path_retention_policy`` in pyproject.toml), and no bytecode is
written (here and in the processes the tests start)."""
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True
os.environ['PYTHONDONTWRITEBYTECODE'] = '1'  # for the processes started

_UUID_DIR = None
if not os.environ.get('ZC_ASYNC_UUID'):
    _UUID_DIR = tempfile.mkdtemp(prefix='zcasync-uuid-')
    os.environ['ZC_ASYNC_UUID'] = os.path.join(_UUID_DIR, 'uuid.txt')

import datetime  # noqa: E402

import pytest  # noqa: E402
import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402
import zope.component.testing  # noqa: E402

import zcasync.configure  # noqa: E402
import zcasync.dispatcher  # noqa: E402
from zcasync import testing  # noqa: E402
from zcasync import utils  # noqa: E402

DEFAULT_START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(autouse=True)
def components():
    zope.component.testing.setUp()
    zcasync.configure.base()
    yield
    transaction.abort()
    utils.setClock(None)
    zcasync.dispatcher.clear()  # the process's registry of dispatchers
    zope.component.testing.tearDown()


@pytest.fixture
def db(tmp_path):
    """A DB on a FileStorage in a temp dir (MVCC and conflict resolution
    as in production)."""
    database = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    yield database
    database.close()


@pytest.fixture
def conn(db):
    """A connection bound to a private transaction manager."""
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    yield connection
    tm.abort()
    connection.close()


@pytest.fixture
def queue(conn):
    """The primary queue, committed in ``conn``."""
    from zcasync.interfaces import KEY
    from zcasync.queue import Queue, Queues
    from zcasync import stable
    queues = conn.root()[KEY] = Queues()
    stable.markFormat(conn.root())
    q = queues[''] = Queue()
    conn.transaction_manager.commit()
    return q


@pytest.fixture
def clock(request):
    """Injectable time (zcasync.utils.setClock): a FixedClock that starts
    at the test module's START (or T0) if it has one."""
    start = getattr(request.module, 'START', None) or getattr(
        request.module, 'T0', None) or DEFAULT_START
    fixed = testing.FixedClock(start)
    utils.setClock(fixed)
    yield fixed
    utils.setClock(None)


def pytest_unconfigure(config):
    if _UUID_DIR is not None:
        shutil.rmtree(_UUID_DIR, ignore_errors=True)
