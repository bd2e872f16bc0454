"""The on-disk format: its version, and every name that stored objects
refer to.

``root[FORMAT_KEY]`` holds the format version of the zcasync data in a
database.  Code that writes a newer format raises it; a process refuses a
database whose version it does not know, and a database still holding
zc.async 1.x objects (see ``zcasync migrate``).  A database without the
key (written before it existed, or by an application that made its
queues itself) is taken as this format.

A stored object refers to code by name: pickles name the class of every
record and of every instance inside one (``module name``), a job names
its callable (a function, or a persistent object and a method name), a
failure names its exception class.  Renaming or moving any of them makes
every record that names it unreadable.  This module declares them all,
as ``'module:qualified.name'`` strings (declared as text so that this
module imports nothing of the model and anything may import it):

- ``PERSISTENT_CLASSES``: classes with records of their own;
- ``STORED_CLASSES``: other classes of zcasync stored inside records;
- ``STORED_FUNCTIONS``: functions that jobs and agents store by
  reference (callables of the jobs zcasync makes itself, choosers);
- ``STORED_METHODS``: method names stored as a job's ``_callable_name``;
- ``LIBRARY_NAMES``: names of other packages that zcasync's records
  store (their move would break us too: pin their versions with care);
- ``EARLIER_NAMES``: names that development versions before this format
  stored, still importable;
- ``MIGRATION_NAMES``: names of ``zcasync migrate``'s stand-ins and
  renaming rules, which records name while a migration runs;
- ``PUBLIC_ALIASES``: stored private name -> its public alias (the same
  object).  Records keep being written under the stored name, so that a
  process running the previous release (a rolling upgrade) still reads
  what this one writes; readers accept both.

and the stored vocabularies: ``STORED_STATUSES``, ``ROOT_KEYS``,
``ANNOTATION_KEYS``, ``RETRY_COUNT_KEYS`` and ``KEY_LAYOUTS`` (the
byte-level keys of ``zcasync.queuekeys`` and ``zcasync.agent``).

``tests/unit/test_stable.py`` fails when a declared name stops resolving
to the object it names, and when a database written with every feature
stores a name that is not declared here.  ``globalsIn`` and
``storageGlobals`` list the names a pickle or a storage refers to.  See
"On-disk format" in the README.
"""
from __future__ import annotations

import importlib
import io
import pickletools
from typing import Any, Iterable, MutableMapping

from zcasync import interfaces

#: The key of the format version in the database root.
FORMAT_KEY = 'zcasync.format'

#: The format this code writes and reads.
FORMAT_VERSION = 1

#: The key of the record of a ``zcasync migrate`` in progress (see
#: ``zcasync.migrate.pipeline``).
MIGRATION_KEY = 'zcasync.migration'

#: What a process says when it finds zc.async data it cannot use.
MIGRATE_REMEDY = 'convert it with: zcasync migrate --db URI'


def markFormat(root: MutableMapping[str, Any]) -> None:
    """Record that the zcasync data in `root`'s database has this code's
    format (in the caller's transaction).  A newer format recorded there
    is never lowered: DatabaseFormatError (see ``checkFormat``)."""
    version = root.get(FORMAT_KEY)
    if version is not None and version > FORMAT_VERSION:
        checkFormat(root)
    if version != FORMAT_VERSION:
        root[FORMAT_KEY] = FORMAT_VERSION


def formatOf(root: MutableMapping[str, Any]) -> int | None:
    """The recorded format version, or None where none is recorded."""
    return root.get(FORMAT_KEY)


def isLegacyObject(ob: Any) -> bool:
    """Whether `ob` (loaded from the database) is a zc.async object: a
    ZODB broken object (zc.async cannot be imported) or an instance of a
    class from a ``zc.async`` module.  Its state is not loaded."""
    import ZODB.broken
    module = getattr(type(ob), '__module__', '') or ''
    return isinstance(ob, ZODB.broken.Broken) or module == 'zc.async' or \
        module.startswith('zc.async.')


def legacyProblem(root: MutableMapping[str, Any]) -> str | None:
    """A one-line reason why zcasync cannot use the data in `root`'s
    database because it is zc.async's, or a migration of it did not
    finish; None otherwise."""
    if MIGRATION_KEY in root:
        return ('this database is being migrated from zc.async (or a '
                'migration was interrupted); finish it with: zcasync '
                'migrate --db URI')
    found = root.get(interfaces.KEY)
    if found is not None and isLegacyObject(found):
        klass = type(found)
        return ('this database holds zc.async data (root[%r] is a %s.%s); '
                '%s' % (interfaces.KEY, klass.__module__, klass.__name__,
                        MIGRATE_REMEDY))
    return None


def checkFormat(root: MutableMapping[str, Any]) -> None:
    """Raise DatabaseFormatError when this code cannot run on the data in
    `root`'s database: zc.async data not migrated yet (or a migration in
    progress), or a format newer than FORMAT_VERSION."""
    problem = legacyProblem(root)
    if problem is not None:
        raise interfaces.DatabaseFormatError(problem)
    version = formatOf(root)
    if version is not None and version > FORMAT_VERSION:
        raise interfaces.DatabaseFormatError(
            'this database has zcasync format %s, newer than the %s this '
            'zcasync reads; upgrade zcasync in this process'
            % (version, FORMAT_VERSION))


# --- the names stored objects refer to ------------------------------------

PERSISTENT_CLASSES = (
    'zcasync.job:Job',
    'zcasync.job:SuccessFailureCallbackProxy',
    'zcasync.queue:Queues',
    'zcasync.queue:Queue',
    'zcasync.queue:Quotas',
    'zcasync.queue:Quota',
    'zcasync.queue:JobTree',
    'zcasync.queue:JobBucket',
    'zcasync.registry:Dispatchers',
    'zcasync.registry:DispatcherAgents',
    'zcasync.agent:Agent',
    'zcasync.agent:CompletedJobs',
    'zcasync.schedules:Schedules',
    'zcasync.schedules:Schedule',
)

STORED_CLASSES = (
    # failures: exceptions zcasync raises into a job's result, the
    # stand-in for unpicklable ones, and captured variables
    'zcasync.interfaces:AbortedError',
    'zcasync.interfaces:TimeoutError',
    'zcasync.interfaces:TimeLimitError',
    'zcasync.interfaces:CancelledError',
    'zcasync.utils:UnpicklableError',
    'zcasync.utils:ReprString',
    # retry policy factories (classes, or RetryWithBackoff instances)
    'zcasync.retry:RetryCommonFourTimes',
    'zcasync.retry:RetryCommonForever',
    'zcasync.retry:NeverRetry',
    'zcasync.retry:RetryWithBackoff',
    # what an agent without a chooser provides (stored in its
    # ``__provides__``)
    'zcasync.interfaces:IFilterAgent',
)

STORED_FUNCTIONS = (
    # a stored Failure is rebuilt by it (Failure.__reduce__)
    'zcasync.utils:_newFailure',
    # serial() and parallel(): the main job, its steps, the postprocess
    'zcasync.composite:_runSerial',
    'zcasync.composite:_runParallel',
    'zcasync.composite:_serialNext',
    'zcasync.composite:_parallelNext',
    'zcasync.composite:_results',
    # the missing side of addCallbacks
    'zcasync.composite:passThrough',
    # an agent's chooser; zc.async's callback policy factory
    'zcasync.agent:chooseFirst',
    'zcasync.retry:callback_retry_policy_factory',
)

#: persistent class -> names of its methods that jobs store as their
#: callable (the object and the method name)
STORED_METHODS = {
    'zcasync.job:Job': (
        '_innerCompleted',   # a job waiting for the job it returned
        'fail',              # a job past its begin_by (Queue.claim)
        'handleInterrupt',   # recovery of an ACTIVE job (registry)
        'resumeCallbacks',   # recovery of a job in CALLBACKS (registry)
    ),
}

EARLIER_NAMES = (
    # the callback of addCallbacks before SuccessFailureCallbackProxy
    'zcasync.composite:route',
)

#: stored private name -> public alias of the same object
PUBLIC_ALIASES = {
    'zcasync.utils:_newFailure': 'zcasync.utils:newFailure',
    'zcasync.composite:_runSerial': 'zcasync.composite:runSerial',
    'zcasync.composite:_runParallel': 'zcasync.composite:runParallel',
    'zcasync.composite:_serialNext': 'zcasync.composite:serialNext',
    'zcasync.composite:_parallelNext': 'zcasync.composite:parallelNext',
    'zcasync.composite:_results': 'zcasync.composite:results',
    'zcasync.job:Job._innerCompleted': 'zcasync.job:Job.innerCompleted',
}

#: names that records refer to while ``zcasync migrate`` runs (a
#: migration interrupted after its renaming stage resumes with them) and
#: that the records it replaced keep until the database is packed
MIGRATION_NAMES = (
    'zcasync.migrate.legacy:BucketQueue',
    'zcasync.migrate.legacy:CompositeQueue',
    'zcasync.migrate.legacy:LOBForest',
    'zcasync.migrate.legacy:Periodic',
    'zcasync.migrate.legacy:RetryCommonFourTimes',
    'zcasync.migrate.legacy:RetryCommonForever',
    'zcasync.migrate.legacy:NeverRetry',
    'zcasync.migrate.legacy:Failure',
    'zcasync.migrate.legacy:_UTC',
    'zcasync.utils:isFailure',
    'zcasync.interfaces:ICompletedCollection',
    'zcasync.interfaces:IAgent',
    'zcasync.interfaces:IJob',
    'zcasync.interfaces:IQueue',
    # the trees of zc.async's completed collections (replaced)
    'BTrees.LOBTree:LOBTree',
)

LIBRARY_NAMES = (
    'persistent.list:PersistentList',
    'persistent.mapping:PersistentMapping',
    'BTrees.OOBTree:OOBTree',
    'BTrees.OOBTree:OOBucket',
    'BTrees.Length:Length',
    'zope.minmax._minmax:Maximum',
    'zope.interface.declarations:Provides',
    'datetime:datetime',
    'datetime:timedelta',
    'datetime:timezone',
    'uuid:UUID',
)


def allNames() -> tuple[str, ...]:
    """Every declared 'module:name' (methods as 'module:Class.method')."""
    names = list(PERSISTENT_CLASSES + STORED_CLASSES + STORED_FUNCTIONS +
                 EARLIER_NAMES + MIGRATION_NAMES + LIBRARY_NAMES)
    for owner, methods in STORED_METHODS.items():
        names.extend('%s.%s' % (owner, method) for method in methods)
    names.extend(PUBLIC_ALIASES.values())
    return tuple(dict.fromkeys(names))


def missingNames() -> list[str]:
    """The declared names that no longer resolve (each one makes the
    records that name it unreadable)."""
    missing = []
    for name in allNames():
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    return missing


def pickledNames() -> frozenset[tuple[str, str]]:
    """The (module, name) pairs that records may name (what a pickle's
    GLOBAL opcodes hold): every declared class and function, and the
    public aliases (readers accept them)."""
    return frozenset(tuple(n.split(':')) for n in allNames()  # type: ignore
                     if '.' not in n.split(':')[1])


def resolve(name: str) -> Any:
    """The object that 'module:qualified.name' names (ImportError or
    AttributeError when it is gone)."""
    module, _, qualname = name.partition(':')
    ob: Any = importlib.import_module(module)
    for part in qualname.split('.'):
        ob = getattr(ob, part)
    return ob


# --- stored vocabularies --------------------------------------------------

#: the values of a job's stored ``_status`` (PENDING, PARKED and ASSIGNED
#: are computed from where a NEW job is, never stored)
STORED_STATUSES = {
    'NEW': 'new-status',
    'ACTIVE': 'active-status',
    'CALLBACKS': 'callback-status',
    'COMPLETED': 'completed-status',
}

#: keys zcasync uses in the database root
ROOT_KEYS = {
    'KEY': 'zc.async',          # zcasync.interfaces.KEY: the Queues
    'FORMAT_KEY': FORMAT_KEY,   # the format version
}
# (and MIGRATION_KEY while a zcasync migrate runs)

#: keys zcasync writes in ``job.annotations``
ANNOTATION_KEYS = (
    'zcasync.schedule',              # the schedule that put the job
    'zcasync.tick',                  # ... for this tick
    'zcasync.cancelled',             # when "cancel" removed it (before
                                     # cancelled jobs completed)
    'zcasync.stop',                  # a request to stop its run (control)
    'zcasync.snoozes',               # how many times it snoozed
    'zcasync.retry_of',              # (oid, db) of the job retried
    'zcasync.retried_as',            # (oid, db) of the retry
    'zcasync.RetryCommonFourTimes',  # retry counts, 'zcasync.' + the
    'zcasync.RetryCommonForever',    # policy's class name (renaming a
    'zcasync.NeverRetry',            # policy loses its counts)
    'zcasync.RetryWithBackoff',
    'zc.async.retry_policy_data',    # a migrated zc.async policy's data
    'progress',                      # live annotations the dashboard shows
    'status',
)

#: the counters kept under a policy's annotation key
RETRY_COUNT_KEYS = (
    'disconnect', 'database error', 'transaction error',
    'other commit error', 'interruption',   # BasePolicy and subclasses
    'attempts', 'next run',                 # RetryWithBackoff
)

#: struct formats and constants of the bytes keys of stored trees
KEY_LAYOUTS = {
    # zcasync.queuekeys: queue trees (_jobs, _scheduled, quota _waiting);
    # each key ends with the job's oid
    'queuekeys._DUE': '>BIQ',        # lane, inverted priority, micros
    'queuekeys._SCHEDULED': '>BQI',  # lane 4, begin_after micros, inv. prio
    'queuekeys._LANE_TIME': '>BQ',   # lane, micros (legacy 0/1 lanes)
    'queuekeys.LEGACY_FRONT': 0,
    'queuekeys.LEGACY_NORMAL': 1,
    'queuekeys.FRONT': 2,
    'queuekeys.DUE': 3,
    'queuekeys.SCHEDULED': 4,
    'queuekeys.MAX_PRIORITY': 2 ** 31 - 1,   # inverted = MAX - priority
    # zcasync.agent: held jobs (claim micros + oid) and completed jobs
    # (_NEWEST - completion micros + oid) in 8 shards by oid
    'agent._STAMP': '>Q',
    'agent._NEWEST': 2 ** 64 - 1,
    'agent.CompletedJobs.SHARDS': 8,
}


# --- finding the names a database refers to -------------------------------

_STRINGS = frozenset(('UNICODE', 'BINUNICODE', 'SHORT_BINUNICODE',
                      'BINUNICODE8', 'STRING', 'BINSTRING',
                      'SHORT_BINSTRING'))
_GETS = frozenset(('GET', 'BINGET', 'LONG_BINGET'))
_PUTS = frozenset(('PUT', 'BINPUT', 'LONG_BINPUT'))


def _walk(stream: Any, found: set[tuple[str, str]]) -> None:
    memo: dict[int, Any] = {}
    pushed: list[Any] = [None, None]  # the last two values pushed
    for opcode, value, pos in pickletools.genops(stream):
        name = opcode.name
        arg: Any = value
        if name == 'GLOBAL':
            module, _, attribute = arg.partition(' ')
            found.add((module, attribute))
            pushed.append(None)
        elif name == 'STACK_GLOBAL':
            found.add((pushed[-2], pushed[-1]))
            pushed.append(None)
        elif name in _STRINGS:
            pushed.append(arg)
        elif name in _GETS:
            pushed.append(memo.get(arg))
        elif name in _PUTS:
            memo[arg] = pushed[-1]
        elif name == 'MEMOIZE':
            memo[len(memo)] = pushed[-1]
        else:
            pushed.append(None)
        del pushed[:-2]


def globalsIn(data: bytes) -> set[tuple[str, str]]:
    """The (module, name) pairs that the pickles in `data` refer to (a
    ZODB record holds two: the class, then the state), found without
    unpickling anything."""
    found: set[tuple[str, str]] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        _walk(stream, found)
    return found


def storageGlobals(storage: Any) -> dict[tuple[str, str], int]:
    """(module, name) -> the number of records (every revision of every
    object) of an iterable storage that refer to it."""
    counts: dict[tuple[str, str], int] = {}
    for txn in storage.iterator():
        for record in txn:
            if record.data:
                for pair in globalsIn(record.data):
                    counts[pair] = counts.get(pair, 0) + 1
    return counts


def undeclared(pairs: Iterable[tuple[str, str]],
               application: Iterable[str] = ()) -> list[str]:
    """The 'module:name' of `pairs` that are not declared here, leaving
    out those of the `application`'s modules (names starting with one of
    them)."""
    known = pickledNames()
    prefixes = tuple(application)
    return sorted('%s:%s' % pair for pair in pairs
                  if pair not in known and not (
                      prefixes and pair[0].startswith(prefixes)))


def storedVocabulary(conn: Any) -> dict[str, set[Any]]:
    """What the records of `conn`'s database hold of the vocabularies
    declared above (each object loaded once): 'root keys', 'statuses'
    (jobs' stored ``_status``), 'methods' (method names stored as a
    callable), 'annotation keys', 'retry counts' (keys of the policies'
    annotations) and 'queue keys' (keys of the queues' job trees)."""
    from zcasync.job import Job
    from zcasync.queue import Queue
    from zcasync.schedules import Schedule
    seen: dict[str, set[Any]] = {
        'root keys': set(conn.root().keys()), 'statuses': set(),
        'methods': set(), 'annotation keys': set(), 'retry counts': set(),
        'queue keys': set()}
    oids = {record.oid for txn in conn.db().storage.iterator()
            for record in txn if record.data}
    for oid in sorted(oids):
        ob = conn.get(oid)
        if isinstance(ob, (Job, Schedule)) and ob._callable_name:
            seen['methods'].add(ob._callable_name)
        if isinstance(ob, Job):
            seen['statuses'].add(ob._status)
            annotations: Any = ob._annotations or {}
            for key, value in annotations.items():
                seen['annotation keys'].add(key)
                if key.startswith('zcasync.Retry') or \
                        key == 'zcasync.NeverRetry':
                    seen['retry counts'].update(value)
        elif isinstance(ob, Queue):
            for tree in (ob._jobs, ob._scheduled):
                seen['queue keys'].update(tree.keys() if tree else ())
            for quota in ob.quotas.values():
                seen['queue keys'].update(quota._waiting or ())
    return seen
