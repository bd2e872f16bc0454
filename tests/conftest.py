"""Shared fixtures: a FileStorage database in a temp dir, a clean
component registry with zcasync's registrations, and a UUID file."""
import os
import tempfile

os.environ.setdefault(
    'ZC_ASYNC_UUID', os.path.join(tempfile.mkdtemp(prefix='zcasync-uuid-'),
                                  'uuid.txt'))

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
    queues = conn.root()[KEY] = Queues()
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
