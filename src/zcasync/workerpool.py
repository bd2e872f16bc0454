"""An agent's worker threads and slots (``AgentThreadPool``), used by a
dispatcher's runner (``zcasync.runner``, which does the runs themselves).

A pool holds the agent's runs: queued for a thread, running in one
(``running``), or -- coroutine runs -- on the dispatcher's event loop
without a thread (``detached``); and the jobs claimed ahead (buffered).
Threads are started on demand, up to the agent's ``size``; the runs in
threads and on the loop together fill at most ``size`` slots.  A thread
left to a run that its dispatcher completed without it (``abandon``,
``zcasync.runwatch``) is replaced.
"""
import collections
import logging
import queue as queuemodule
import threading

import transaction

from zcasync import threadlocal
from zcasync import utils
from zcasync.coroutineruns import DETACHED

#: A job handed to a pool: (oid, database name), the run's token, the
#: key of the poll that claimed it, and whether it is an ``async def`` job.
Run = collections.namedtuple('Run', 'job_id token poll_key coroutine',
                             defaults=(False,))

#: Seconds between attempts to open a connection for a worker thread.
OPEN_RETRY = (0.1, 0.5, 1, 2, 5)


_WAKE = object()  # a queue item: look at the buffer


class AgentThreadPool:
    """The worker threads of one agent; one database connection each.

    Work comes as runs already started by the poll's claim (``perform``)
    and as *buffered* jobs: claimed ahead by the poll, held by the agent
    but not started (``addBuffered``).  A thread that finishes a job
    starts the next buffered one in the same commit (see
    ``Runner._startNext``), or starts it on its own when the job ended
    otherwise; a thread with nothing to do waits on the queue.

    Threads are started on demand, up to ``size``: one at once, more when
    work is queued and no thread is idle (one at a time: a thread that
    takes work and sees more waiting starts the next); idle threads stay.  Coroutine runs hold a slot
    without a thread (``detached``).
    """

    def __init__(self, runner, queue_name, agent_name):
        self.runner = runner
        self.queue_name = queue_name
        self.agent_name = agent_name
        self.size = 0
        self.closed = False
        self._queue = queuemodule.Queue()
        self._threads = set()
        self._stops = 0  # stop requests queued and not yet taken
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queued = {}  # token -> Run: handed over, not started
        self._buffer = collections.deque()  # Runs claimed ahead (no token)
        self._starting = set()  # job ids and tokens being started
        self._finished = []  # job ids whose runs ended: to settle
        self.idle = 0  # threads waiting for work
        self.running = {}  # thread ident -> Run
        self.detached = {}  # token -> Run: coroutine runs, off the threads
        self._spawning = 0  # threads started, not yet looking for work
        self._fresh = set()  # idents of those threads, once running
        #: threads left to a run that was completed without them (a job
        #: that did not stop when asked, see zcasync.runwatch)
        self._abandoned = set()
        #: how long runs take lately (seconds, a moving average), or None
        self.duration = None

    def setSize(self, size):
        with self._lock:
            difference = size - self.size
            if not difference or (self.closed and difference > 0):
                return
            self.runner.dispatcher._growPool(difference)
            self.size = size
            excess = len(self._threads) - self._stops - size
            if excess > 0:
                self._stops += excess
                for i in range(excess):
                    self._queue.put(None)
            elif self._queued or self._buffer or \
                    len(self._threads) == self._stops:
                self._spawnIfNeeded()  # work waits, or no thread is ready

    def _spawnIfNeeded(self):
        """(holding the lock) Work waits: start a thread unless one is
        idle or starting, or the pool has ``size`` threads."""
        if not self.idle and not self._spawning and not self.closed and \
                len(self._threads) - self._stops < self.size:
            self._startThread()

    def _startThread(self):
        """(holding the lock) Start a thread; it counts as starting until
        it waits for work or takes some (``_ready``)."""
        self._spawning += 1
        thread = threading.Thread(
            target=self._run, daemon=True,
            name='zcasync %s/%s' % (self.queue_name or "''", self.agent_name))
        self._threads.add(thread)
        thread.start()

    # -- work handed over ---------------------------------------------

    def perform(self, run):
        """Queue `run` for a thread (a coroutine run: for the event loop);
        False when the pool is closed."""
        with self._lock:
            if self.closed:
                return False
            if run.coroutine:
                self.detached[run.token] = run
            else:
                self._queued[run.token] = run
                self._spawnIfNeeded()
        if run.coroutine:
            self.runner.performElsewhere(run, self)
        else:
            self._queue.put(run)
        return True

    def detach(self, run):
        """`run` goes on on the event loop: it holds its slot, no
        thread."""
        with self._lock:
            self.detached[run.token] = run

    def undetach(self, run):
        """A run on the event loop ended: its slot is free for a job
        claimed ahead."""
        with self._lock:
            self.detached.pop(run.token, None)
            wake = bool(self._buffer) and not self.closed
            if wake:
                self._spawnIfNeeded()
        if wake:
            self._queue.put(_WAKE)

    def addBuffered(self, runs):
        """Jobs claimed ahead (held by the agent, not started): Runs
        without a token."""
        with self._lock:
            if self.closed:
                return False
            self._buffer.extend(runs)
            self._spawnIfNeeded()
        for i in range(len(runs)):
            self._queue.put(_WAKE)
        return True

    def buffered(self):
        return len(self._buffer)

    def dropBuffer(self):
        """Forget the jobs claimed ahead (the dispatcher hands them back);
        returns their Runs."""
        with self._lock:
            dropped = list(self._buffer)
            self._buffer.clear()
        return dropped

    def popBuffered(self, replacing=False, ident=None):
        """The next job claimed ahead (its Run), now being started, or
        None (also when the agent's runs fill its slots, unless the new
        run is `replacing` one that ends).  With `ident`, the run fills
        that thread's slot at once (in the same locked step as the check
        of the slots: two threads taking work at once could both pass
        it otherwise)."""
        with self._lock:
            if not self._buffer:
                return None
            if not replacing and self._occupied() >= self.size:
                return None
            run = self._buffer.popleft()
            self._starting.add(run.job_id)
            if ident is not None:
                self.running[ident] = run
            return run

    def starting(self, *ids):
        with self._lock:
            self._starting.update(ids)

    def started(self, *ids, back=None):
        """Done starting `ids`; `back`: a Run to buffer again (its start
        did not commit)."""
        with self._lock:
            self._starting.difference_update(ids)
            if back is not None and not self.closed:
                self._buffer.appendleft(back)

    def finished(self, job_id, seconds=None):
        """A run ended here (after `seconds`): its job's bookkeeping is the
        next poll's."""
        with self._lock:
            self._finished.append(job_id)
            if seconds is not None:
                self.duration = seconds if self.duration is None else \
                    0.8 * self.duration + 0.2 * seconds
            return len(self._finished)

    def takeFinished(self):
        with self._lock:
            done, self._finished = self._finished, []
            return done

    def giveBackFinished(self, job_ids):
        with self._lock:
            self._finished[:0] = job_ids

    def known(self):
        """The tokens and job ids of the work this pool will still do:
        queued, running, starting or buffered."""
        with self._lock:
            known = set(self._queued)
            for run in list(self.running.values()) + list(
                    self.detached.values()):
                known.add(run.token)
                known.add(run.job_id)
            known.update(self._starting)
            known.update(run.job_id for run in self._buffer)
        known.discard(None)
        return known

    tokens = known

    def activeJobIds(self):
        with self._lock:
            runs = list(self.running.values()) + list(self.detached.values())
        return list(dict.fromkeys(run.job_id for run in runs))

    def close(self):
        """Drop the runs no thread has started and the buffered jobs, and
        stop every thread after its current job; returns the dropped
        runs."""
        with self._lock:
            self.closed = True
            dropped = list(self._queued.values())
            self._queued.clear()
            self._buffer.clear()
        self._closing.set()
        self.setSize(0)
        return dropped

    def threads(self):
        with self._lock:
            return list(self._threads)

    def abandon(self, ident, token):
        """The run holding `token` in thread `ident` was completed without
        it: forget that run and leave the thread to it (it exits when the
        run returns), starting another one in its place.  False when the
        run ended meanwhile."""
        with self._lock:
            run = self.running.get(ident)
            if run is None or run.token != token:
                return False
            del self.running[ident]
            self._abandoned.add(ident)
            for thread in list(self._threads):
                if thread.ident == ident:
                    self._threads.discard(thread)
            if not self.closed and \
                    self.size > len(self._threads) - self._stops:
                self._startThread()
        return True

    # -- the threads ----------------------------------------------------

    def _take(self, run):
        """Start `run` in this thread unless it was dropped meanwhile."""
        with self._lock:
            if self._queued.pop(run.token, None) is None:
                return False
            self.running[threading.get_ident()] = run
            return True

    def _nextWork(self, following):
        """The next run for this thread: the one its last commit started,
        a queued one, a buffered job (a Run without a token), or -- after
        waiting -- None to stop."""
        ident = threading.get_ident()
        if following is not None:
            with self._lock:
                self._ready()
                self.running[ident] = following
                self._starting.difference_update(
                    (following.job_id, following.token))
                self._moreWork()
            return following
        while True:
            try:
                item = self._queue.get_nowait()
            except queuemodule.Empty:
                run = self.popBuffered(ident=ident)
                if run is not None:
                    with self._lock:
                        self._ready()
                        self.running[ident] = run
                        self._moreWork()
                    return run
                with self._lock:
                    self._ready()
                    self.idle += 1
                try:
                    item = self._queue.get()
                finally:
                    with self._lock:
                        self.idle -= 1
            if item is None:
                with self._lock:
                    self._ready()
                    self._stops -= 1
                return None
            if item is _WAKE:
                continue
            if self._take(item):
                with self._lock:
                    self._ready()
                    self._moreWork()
                return item

    def _ready(self):
        """(holding the lock) This thread no longer counts as starting."""
        ident = threading.get_ident()
        if ident in self._fresh:
            self._fresh.discard(ident)
            self._spawning -= 1

    def _moreWork(self):
        """(holding the lock) This thread took work: start another one if
        more waits for a thread (runs queued, or a sync job claimed ahead
        with a slot free)."""
        if self._queued or (self._buffer and not self._buffer[0].coroutine
                            and self._occupied() < self.size):
            self._spawnIfNeeded()

    def _occupied(self):
        """(holding the lock) The agent's slots its runs fill: in threads
        and on the event loop (a run moving to the loop counts once)."""
        return len({run.job_id for run in list(self.running.values())} |
                   {run.job_id for run in self.detached.values()})

    def _open(self, tm):
        """A connection for this thread; retried (with a pause) until it
        opens or the pool closes (then None)."""
        for attempt in range(1 << 30):
            try:
                return self.runner.dispatcher.db.open(transaction_manager=tm)
            except Exception:
                if attempt == 0:
                    utils.safeLog(
                        utils.log, logging.ERROR,
                        'worker thread of agent %r cannot open a database '
                        'connection; retrying:\n%s', self.agent_name,
                        utils.formatException())
            pause = OPEN_RETRY[min(attempt, len(OPEN_RETRY) - 1)]
            if self._closing.wait(pause):
                return None

    def _run(self):
        with self._lock:
            self._fresh.add(threading.get_ident())
        tm = transaction.TransactionManager()
        conn = None
        threadlocal.setDispatcherContext(self.runner.dispatcher,
                                         self.agent_name)
        clean_exit = False
        following = None
        try:
            while True:
                if threading.get_ident() in self._abandoned:
                    clean_exit = True  # replaced already
                    if following is not None:  # started, never run
                        self.started(following.job_id, following.token)
                        self.runner.lost()
                    return
                run = self._nextWork(following)
                following = None
                if run is None:
                    clean_exit = True
                    return
                try:
                    if conn is None:
                        conn = self._open(tm)
                    if conn is not None and not self.closed:
                        following = self.runner.perform(conn, tm, run, self)
                        if following is DETACHED:
                            # the run took this connection to the loop
                            following, conn = None, None
                            tm = transaction.TransactionManager()
                    elif run.token is None:
                        self.started(run.job_id)
                finally:
                    self.running.pop(threading.get_ident(), None)
        except BaseException:
            if following is not None:  # started, never run: reconciled
                self.started(following.job_id, following.token)
            utils.safeLog(utils.log, logging.CRITICAL,
                          'worker thread of agent %r died; replacing it:\n%s',
                          self.agent_name, utils.formatException())
            self.runner.lost()
        finally:
            threadlocal.setDispatcherContext()
            threadlocal.setRunHooks()
            if conn is not None:
                try:
                    tm.abort()
                    conn.close()
                except Exception:
                    pass
            with self._lock:
                self._ready()
                if threading.get_ident() in self._abandoned:
                    self._abandoned.discard(threading.get_ident())
                    clean_exit = True  # replaced when it was abandoned
                self._threads.discard(threading.current_thread())
                # threads that will stay once the queued stops are taken
                staying = len(self._threads) - self._stops
                if not clean_exit and not self.closed and \
                        self.size > staying:
                    self._startThread()
