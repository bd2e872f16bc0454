"""A dispatcher in an application whose database still holds zc.async data
refuses to activate with one line naming ``zcasync migrate``, writing
nothing; one that runs when a migration starts logs that line once and
polls no more."""
import logging
import uuid

import pytest
import transaction
import ZODB
import ZODB.FileStorage

from zcasync import dispatcher as dispatchermodule
from zcasync import interfaces
from zcasync import stable
from zcasync import testing
from zcasync.queue import Queue, Queues

from tests.fsutil import lastTransaction
from tests.legacydb import copyFixture, legacyApp
from test_dispatcher_support import Running

WAIT = 20


def _critical(capture):
    return [r.getMessage() for r in capture.records
            if r.levelno >= logging.CRITICAL]


def test_dispatcher_refuses_zc_async_data(tmp_path, capture):
    copy = copyFixture(tmp_path)
    path = copy / 'Data.fs'
    tid = lastTransaction(path)
    with legacyApp(copy):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
        try:
            with pytest.raises(interfaces.DatabaseFormatError) as info:
                dispatchermodule.Dispatcher(
                    db, testing.Reactor(), poll_interval=0.05,
                    uuid=uuid.uuid4()).activate()
        finally:
            db.close()
    assert str(info.value).endswith('zcasync migrate --db URI')
    messages = _critical(capture)
    assert len(messages) == 1 and 'zc.async data' in messages[0]
    assert lastTransaction(path) == tid  # nothing written


def test_running_dispatcher_stops_when_a_migration_starts(db, capture):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    queues = conn.root()[interfaces.KEY] = Queues()
    queues[''] = Queue()
    tm.commit()
    with Running(db, poll_interval=0.05) as worker:
        testing.get_poll(worker.dispatcher, 1, timeout=WAIT)
        conn.root()[stable.MIGRATION_KEY] = {'stage': 'rename'}
        tm.commit()
        count = len(worker.dispatcher.polls)
        testing.get_poll(worker.dispatcher, count + 5, timeout=WAIT)
        messages = [m for m in _critical(capture) if 'migrat' in m]
        assert len(messages) == 1, messages
        assert messages[0].endswith(
            'finish it with: zcasync migrate --db URI; polling no more '
            'until that changes')
        del conn.root()[stable.MIGRATION_KEY]
        tm.commit()
    conn.close()
