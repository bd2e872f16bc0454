"""The compat tests read the instance UUID (as a zc.async application's
dispatcher does); forget it afterwards, so that later tests of producers
see a process that never read one."""
import pytest

from zcasync import instanceuuid


@pytest.fixture(autouse=True)
def forgetTheInstanceUUID():
    known = instanceuuid.currentUUID()
    yield
    if known is None:
        instanceuuid._reset()
