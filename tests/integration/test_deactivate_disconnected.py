"""A dispatcher whose ZEO server is gone still stops promptly: it cannot
record its deactivation (its siblings will find it dead and recover its
jobs), says so, and gives back its connections."""
import logging
import threading
import time
import uuid

import transaction
import twisted.internet.selectreactor
import ZEO

from zcasync import testing
from zcasync.agent import Agent
from zcasync.dispatcher import Dispatcher
from zcasync.interfaces import KEY
from zcasync.queue import Queue, Queues


def test_stop_without_server(tmp_path, caplog):
    address, stop_server = ZEO.server(str(tmp_path / 'Data.fs'),
                                      threaded=False)
    server_stopped = False
    db = ZEO.DB(address, wait_timeout=5)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        queues = conn.root()[KEY] = Queues()
        queue = queues[''] = Queue()
        conn.transaction_manager.commit()
        reactor = twisted.internet.selectreactor.SelectReactor()
        dispatcher = Dispatcher(db, reactor, poll_interval=60,
                                uuid=uuid.uuid4())
        pool_size = db.getPoolSize()

        def run():
            dispatcher.activate()
            reactor.run(installSignalHandlers=False)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        testing.wait(lambda: (conn.transaction_manager.begin(),
                              dispatcher.UUID in queue.dispatchers)[1])
        queue.dispatchers[dispatcher.UUID]['main'] = Agent(size=2)
        conn.transaction_manager.commit()
        conn.close()
        stop_server()
        server_stopped = True
        testing.wait(lambda: not db.storage.is_connected(),
                     message='the client did not notice the server left')
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, 'zcasync.events'):
            reactor.callFromThread(reactor.stop)
            thread.join(20)
        assert not thread.is_alive(), 'the reactor thread hung'
        assert time.monotonic() - started < 20
        assert any('could not record its deactivation' in r.getMessage()
                   for r in caplog.records)
        assert dispatcher.getStatusInfo()['status'] == 'STOPPED'
        assert db.getPoolSize() == pool_size
    finally:
        if not server_stopped:
            stop_server()
        db.close()
