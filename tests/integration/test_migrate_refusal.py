"""A dispatcher in an application whose database still holds zc.async data
logs one line naming ``zcasync migrate`` (once), and its polls go on
without touching the data; after the migration it runs the jobs."""
import logging

import ZODB
import ZODB.FileStorage

from zcasync import testing

from tests.fsutil import lastTransaction
from tests.legacydb import copyFixture, legacyApp
from test_dispatcher_support import Running

WAIT = 20


def test_dispatcher_logs_one_line_and_waits(tmp_path, capture):
    copy = copyFixture(tmp_path)
    path = copy / 'Data.fs'
    tid = lastTransaction(path)
    with legacyApp(copy):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
        try:
            with Running(db, poll_interval=0.05) as worker:
                testing.get_poll(worker.dispatcher, 5, timeout=WAIT)
                errors = [r.getMessage() for r in capture.records
                          if r.levelno >= logging.ERROR]
                assert len(errors) == 1, errors
                assert 'zc.async data' in errors[0]
                assert errors[0].endswith('zcasync migrate --db URI')
                assert not worker.dispatcher.getActiveJobIds()
        finally:
            db.close()
    # nothing was written: not even the dispatcher's registration
    assert lastTransaction(path) == tid
