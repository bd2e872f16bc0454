"""``zcasync worker``: a dispatcher in the foreground.

A worker runs one ``zcasync.dispatcher.Dispatcher`` with Twisted's reactor
in the foreground:

1. it reads its UUID (``--uuid-file``, else ``ZC_ASYNC_UUID``, else
   ``./uuid.txt``); a file that holds no UUID is refused at once, a
   missing one is created (with its directory) only once the database
   opened, so that a worker that fails to start leaves nothing behind;
2. if that UUID is activated in one of its queues and not yet dead, it
   watches the record: a crashed predecessor (the same worker restarted)
   stops pinging and is found dead after its death interval, and the
   worker then starts (the dispatcher recovers the predecessor's jobs); a
   live process pinging with the same UUID is a clash: one-line error,
   exit code 8;
3. in one transaction, retried on conflicts (workers may start at once),
   it creates what is missing -- the queues mapping, its queues, its
   registration in each queue and its agent -- and stores its ping
   intervals and agent size;
4. it activates the dispatcher and runs the reactor.  After the first
   poll that reaches a queue, a ``None`` entry for that queue means the
   dispatcher refused it because another live process uses the UUID (the
   race the check in 2 cannot see): one-line error, exit code 8.

SIGTERM or SIGINT stops it gracefully: the dispatcher stops claiming,
running jobs get ``--grace`` seconds to finish (the worker waits until its
agents hold no job), then the reactor stops, and the dispatcher's
before-shutdown trigger deactivates it, which queues recovery for whatever
is unfinished (the retry policies decide).  A second signal stops at once.
"""
import datetime
import logging
import os
import signal
import sys
import time

import transaction

from zcasync.cli.common import (
    CommandError, firstLine, setupLogging, importModules, EXIT_OK,
    EXIT_USAGE, EXIT_UUID_CLASH)
from zcasync.cli import db as cli_db

log = logging.getLogger('zcasync.events')


# --- the worker's UUID ---------------------------------------------------

def uuidFile(uuid_file, environ=None):
    """(absolute path, how it was given) of the worker's UUID file:
    ``--uuid-file``, else ``ZC_ASYNC_UUID``, else ``./uuid.txt``."""
    from zcasync import instanceuuid
    environ = os.environ if environ is None else environ
    if uuid_file:
        return os.path.abspath(uuid_file), '--uuid-file'
    if environ.get(instanceuuid.ENV):
        return os.path.abspath(environ[instanceuuid.ENV]), \
            'the %s environment variable' % instanceuuid.ENV
    return os.path.abspath('uuid.txt'), 'the default ./uuid.txt'


def _otherFile(source):
    if source == '--uuid-file':
        return 'give --uuid-file another path'
    if source.startswith('the default'):
        return 'give --uuid-file PATH'
    return 'point %s at another path, or give --uuid-file PATH' % source


def checkUUIDFile(path, source):
    """Refuse an existing UUID file that holds no UUID, before anything
    is done; a missing file is created later, once the worker starts."""
    import uuid as uuidmodule
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            first = f.readline().strip()
    except OSError as e:
        raise CommandError(
            'cannot read the UUID file %s given by %s (%s); fix its '
            'permissions or %s' % (path, source, e.strerror,
                                   _otherFile(source)), EXIT_USAGE) from None
    except UnicodeDecodeError:
        first = '(binary data)'
    try:
        uuidmodule.UUID(first)
    except ValueError:
        raise CommandError(
            'the UUID file %s given by %s does not start with a UUID (found '
            '%r); remove it to get a fresh UUID, or %s'
            % (path, source, first[:60], _otherFile(source)),
            EXIT_USAGE) from None


def readWorkerUUID(path, source):
    """The worker's UUID, from its file (created now when missing, with
    any missing directories); the instance UUID of this process becomes
    the worker's, so that jobs it queues name it as assigner."""
    from zcasync import instanceuuid
    os.environ[instanceuuid.ENV] = path
    instanceuuid._reset()
    try:
        return instanceuuid.getUUID()
    except ValueError:  # changed since it was checked
        checkUUIDFile(path, source)
        raise
    except OSError as e:
        raise CommandError(
            'cannot create the UUID file %s given by %s (%s); fix the '
            'directory\'s permissions or %s' % (
                e.filename or path, source, e.strerror, _otherFile(source)),
            EXIT_USAGE) from None


# --- setup in the database -------------------------------------------------

def _records(conn, uuid, names):
    from zcasync.interfaces import KEY
    queues = conn.root().get(KEY)
    found = {}
    for name in names:
        queue = queues.get(name) if queues is not None else None
        agents = queue.dispatchers.get(uuid) if queue is not None else None
        if agents is not None:
            found[name] = agents
    return found


def waitForPredecessor(conn, uuid, names):
    """Return once no live process uses `uuid` in `names`; CommandError
    when one does (its pings advance)."""
    tm = conn.transaction_manager
    tm.begin()
    busy = {name: agents.last_ping.value
            for name, agents in _records(conn, uuid, names).items()
            if agents.activated and not agents.dead}
    if not busy:
        tm.abort()
        return
    death = max(_records(conn, uuid, names)[n].ping_death_interval
                for n in busy).total_seconds()
    log.warning(
        'UUID %s is still activated in queue(s) %s (last ping %s); waiting '
        'up to %.1f s to tell a crashed predecessor (found dead when its '
        'death interval passes) from a live process with the same UUID',
        uuid, ', '.join(repr(n) for n in sorted(busy)),
        max(busy.values()), death + 2)
    deadline = time.monotonic() + death + 2
    while True:
        tm.begin()
        records = _records(conn, uuid, names)
        for name, stamp in list(busy.items()):
            agents = records.get(name)
            if agents is None or not agents.activated or agents.dead:
                del busy[name]
            elif agents.last_ping.value != stamp:
                tm.abort()
                raise CommandError(clashMessage(uuid, name), EXIT_UUID_CLASH)
        tm.abort()
        if not busy:
            log.info('the previous process with UUID %s is gone; starting',
                     uuid)
            return
        if time.monotonic() > deadline:
            raise CommandError(clashMessage(uuid, sorted(busy)[0]),
                               EXIT_UUID_CLASH)
        time.sleep(0.1)


def clashMessage(uuid, queue_name):
    return ('UUID %s is in use by another live process in queue %r: every '
            'worker needs its own UUID file (give each one --uuid-file '
            'PATH, or ZC_ASYNC_UUID); do not copy UUID files between '
            'workers' % (uuid, queue_name))


def setupDatabase(conn, uuid, names, agent_name, size, ping, death):
    """Create what is missing, in one transaction retried on conflicts."""
    from zcasync import stable
    from zcasync.agent import Agent
    from zcasync.interfaces import KEY
    from zcasync.queue import Queue, Queues
    tm = conn.transaction_manager
    ping = datetime.timedelta(seconds=ping)
    death = datetime.timedelta(seconds=death)
    for attempt in tm.attempts(20):
        with attempt:
            root = conn.root()
            stable.markFormat(root)
            queues = root.get(KEY)
            if queues is None:
                queues = root[KEY] = Queues()
            for name in names:
                queue = queues.get(name)
                if queue is None:
                    queue = queues[name] = Queue()
                agents = queue.dispatchers.get(uuid)
                if agents is None:
                    queue.dispatchers.register(uuid)
                    agents = queue.dispatchers[uuid]
                if agents.ping_interval != ping:
                    agents.ping_interval = ping
                if agents.ping_death_interval != death:
                    agents.ping_death_interval = death
                agent = agents.get(agent_name)
                if agent is None:
                    agents[agent_name] = Agent(size=size)
                elif agent.size != size:
                    agent.size = size


def heldJobs(conn, uuid, names):
    """How many jobs this worker's agents hold, as committed now."""
    conn.transaction_manager.begin()
    try:
        return sum(len(agent)
                   for agents in _records(conn, uuid, names).values()
                   for agent in agents.values())
    finally:
        conn.transaction_manager.abort()


# --- running -------------------------------------------------------------

class Worker:
    """One worker process; see the module docstring."""

    def __init__(self, args):
        self.args = args
        self.names = list(dict.fromkeys(args.queue or ['']))
        self.exit_code = EXIT_OK
        self.stopping = False
        self.deadline = None
        self.db = None
        self.conn = None
        self.dispatcher = None
        self.checked = set()

    def run(self):
        args = self.args
        if args.size < 1:
            raise CommandError('--size must be at least 1, not %d'
                               % args.size, EXIT_USAGE)
        for option in ('poll_interval', 'ping_interval',
                       'ping_death_interval'):
            if getattr(args, option) <= 0:
                raise CommandError('--%s must be positive' % option.replace(
                    '_', '-'), EXIT_USAGE)
        from zcasync import liveness
        problem = liveness.checkIntervals(args.ping_interval,
                                          args.ping_death_interval)
        if problem:
            raise CommandError('--ping-interval %g / --ping-death-interval '
                               '%g: %s' % (args.ping_interval,
                                           args.ping_death_interval, problem),
                               EXIT_USAGE)
        setupLogging(args.log_level)
        uuid_path, source = uuidFile(args.uuid_file)
        checkUUIDFile(uuid_path, source)
        importModules(args.imports or ())
        import zcasync.configure
        zcasync.configure.base()
        self.db = cli_db.openDatabase(args.db, args.connect_timeout)
        self.conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            cli_db.checkFormat(self.conn)
        except CommandError:
            self.conn.close()
            self.db.close()
            raise
        # the file (and its directory) only now that the worker can start
        uuid = self.uuid = readWorkerUUID(uuid_path, source)
        waitForPredecessor(self.conn, uuid, self.names)
        setupDatabase(self.conn, uuid, self.names, args.agent, args.size,
                      args.ping_interval, args.ping_death_interval)
        log.info(
            'worker %s (UUID file %s) on %s: queue(s) %s, agent %r of size '
            '%d, poll every %g s, ping every %g s, dead after %g s',
            uuid, uuid_path, cli_db.redact(args.db),
            ', '.join(repr(n) for n in self.names), args.agent, args.size,
            args.poll_interval, args.ping_interval, args.ping_death_interval)
        return self._runReactor()

    def _runReactor(self):
        from twisted.internet import reactor
        from twisted.python import log as twisted_log
        from zcasync.dispatcher import Dispatcher
        twisted_log.PythonLoggingObserver('twisted').start()
        self.attach(Dispatcher(self.db, reactor,
                               poll_interval=self.args.poll_interval,
                               uuid=self.uuid), reactor)
        if getattr(self.args, 'http', None):
            from zcasync.cli.dashboard import serveInWorker
            serveInWorker(self.db, reactor, self.args.http)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._signalled)
        self.dispatcher.activate()
        reactor.run(installSignalHandlers=False)
        return self._finish()

    def attach(self, dispatcher, reactor):
        """Use `dispatcher` and `reactor`; once the reactor runs, check
        the first polls for a UUID clash."""
        self.dispatcher = dispatcher
        self.reactor = reactor
        self.uuid = dispatcher.UUID
        reactor.callWhenRunning(self._checkFirstPolls)

    # -- UUID clash backstop ---------------------------------------------

    def _checkFirstPolls(self):
        if self.stopping:
            return
        for poll in self.dispatcher.polls:
            for name in self.names:
                if name in self.checked or name not in poll:
                    continue
                if poll[name] is None:
                    self.exit_code = EXIT_UUID_CLASH
                    self._error(clashMessage(self.uuid, name))
                    self.stopping = True
                    self.reactor.stop()
                    return
                self.checked.add(name)
        if len(self.checked) < len(self.names):
            self.reactor.callLater(0.05, self._checkFirstPolls)

    def _error(self, message):
        log.error('%s', message)
        sys.stderr.write('zcasync worker: error: %s\n' % message)
        sys.stderr.flush()

    # -- graceful stop -----------------------------------------------------

    def _signalled(self, signum, frame):
        self.reactor.callFromThread(self._stop, signal.Signals(signum).name)

    def _stop(self, name):
        if self.stopping:
            if self.reactor.running:
                log.warning('%s again: stopping now', name)
                self.reactor.stop()
            return
        self.stopping = True
        self.dispatcher.claiming = False
        self.deadline = time.monotonic() + self.args.grace
        log.info('%s: claiming no more jobs; waiting up to %g s for running '
                 'jobs to finish', name, self.args.grace)
        self._waitForJobs()

    def _idle(self):
        if self.dispatcher.getActiveJobIds():
            return False
        try:
            return heldJobs(self.conn, self.uuid, self.names) == 0
        except Exception as e:
            log.warning('could not read held jobs (%s); stopping', e)
            return True

    def _waitForJobs(self):
        if not self.reactor.running:
            return
        if self._idle():
            log.info('no job running; stopping')
        elif time.monotonic() >= self.deadline:
            log.warning(
                'grace period of %g s over with job(s) %s still running; '
                'stopping: deactivation queues their recovery',
                self.args.grace, self.dispatcher.getActiveJobIds())
        else:
            self.reactor.callLater(0.1, self._waitForJobs)
            return
        self.reactor.stop()

    def _finish(self):
        running = self.dispatcher.getActiveJobIds() \
            if self.dispatcher is not None else []
        try:
            self.conn.transaction_manager.abort()
            self.conn.close()
        except Exception:
            pass
        if running:
            log.warning('leaving %d unfinished job(s) to recovery',
                        len(running))
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exit_code)  # worker threads still hold the DB
        try:
            self.db.close()
        except Exception as e:
            log.warning('closing the database: %s', firstLine(e))
        log.info('worker %s stopped', self.uuid)
        return self.exit_code


def runWorker(args):
    return Worker(args).run()
