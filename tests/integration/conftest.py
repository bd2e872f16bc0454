"""Fixtures of the integration tier (dispatchers, threads, reactors, and
several connections to one FileStorage playing several processes)."""
import pytest

from sides import Side
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
