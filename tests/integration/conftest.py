"""Fixtures of the integration tier (dispatchers, threads, reactors, and
several connections to one FileStorage playing several processes)."""
import pytest
import transaction

from zcasync import interfaces

from test_dispatcher_support import Capture, resetJobState


@pytest.fixture(autouse=True)
def cleanJobs():
    """The job functions of test_dispatcher_support keep module state
    (events, counters): start each test from scratch."""
    resetJobState()
    yield
    resetJobState()


@pytest.fixture
def capture():
    """Log records of zcasync's loggers, captured."""
    handler = Capture().install()
    yield handler
    handler.uninstall()


class Side:
    """One connection (think: one process) with its own transaction
    manager."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def agent(self, uid):
        return self.queue.dispatchers[uid]['main']

    def commit(self):
        self.tm.commit()

    def close(self):
        self.tm.abort()
        self.conn.close()


@pytest.fixture
def sides(db):
    """``sides()`` opens another Side; all are closed at teardown."""
    opened = []

    def open_():
        side = Side(db)
        opened.append(side)
        return side
    yield open_
    for side in opened:
        side.close()
