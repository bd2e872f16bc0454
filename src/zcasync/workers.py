"""Worker threads: each agent of a dispatcher has a pool of ``size``
threads, each holding one database connection for its life.  A thread
takes (job id, poll key) items from its pool's queue and asks the
dispatcher to perform the job; a thread that dies is replaced.
"""
import logging
import queue as queuemodule
import threading

import transaction

from zcasync import threadlocal
from zcasync import utils


class AgentThreadPool:
    """The worker threads of one agent; one database connection each."""

    def __init__(self, dispatcher, queue_name, agent_name):
        self.dispatcher = dispatcher
        self.queue_name = queue_name
        self.agent_name = agent_name
        self.size = 0
        self._queue = queuemodule.Queue()
        self._threads = set()
        self._stops = 0  # stop requests queued and not yet taken
        self._lock = threading.Lock()
        self.running = {}  # thread ident -> job id

    def setSize(self, size):
        with self._lock:
            difference = size - self.size
            if not difference:
                return
            self.dispatcher._growPool(difference)
            self.size = size
            if difference > 0:
                for i in range(difference):
                    self._startThread()
            else:
                self._stops -= difference
                for i in range(-difference):
                    self._queue.put(None)

    def _startThread(self):
        thread = threading.Thread(
            target=self._run, daemon=True,
            name='zcasync %s/%s' % (self.queue_name or "''", self.agent_name))
        self._threads.add(thread)
        thread.start()

    def perform(self, job_id, poll_key):
        self._queue.put((job_id, poll_key))

    def close(self):
        self.setSize(0)

    def activeJobIds(self):
        return list(self.running.values())

    def _run(self):
        tm = transaction.TransactionManager()
        conn = self.dispatcher.db.open(transaction_manager=tm)
        threadlocal.setDispatcherContext(self.dispatcher, self.agent_name)
        clean_exit = False
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    with self._lock:
                        self._stops -= 1
                    clean_exit = True
                    return
                job_id, poll_key = item
                self.running[threading.get_ident()] = job_id
                try:
                    self.dispatcher._perform(conn, tm, job_id, poll_key,
                                             self)
                finally:
                    self.running.pop(threading.get_ident(), None)
        except BaseException:
            utils.safeLog(utils.log, logging.CRITICAL,
                          'worker thread of agent %r died; replacing it:\n%s',
                          self.agent_name, utils.formatException())
        finally:
            threadlocal.setDispatcherContext()
            try:
                tm.abort()
                conn.close()
            except Exception:
                pass
            with self._lock:
                self._threads.discard(threading.current_thread())
                # threads that will stay once the queued stops are taken
                staying = len(self._threads) - self._stops
                if not clean_exit and self.size > staying:
                    self._startThread()
