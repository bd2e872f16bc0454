"""Fixtures of the integration tier (dispatchers, threads, reactors)."""
import pytest

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
