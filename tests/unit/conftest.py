"""Fixtures of the unit tier."""
import pytest

from zcasync import utils


@pytest.fixture
def ticking():
    """A clock that moves 1 ms at every reading (zcasync.utils.setClock),
    so that every job completes at its own microsecond."""
    from web_support import TickingClock
    clock = TickingClock()
    utils.setClock(clock)
    yield clock
    utils.setClock(None)
