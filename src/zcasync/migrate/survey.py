"""What a database holds, read from its records without importing any
stored class: the survey ``zcasync migrate`` reports before it converts,
and the check that a migration left nothing behind.

Each current record is unpickled with stand-ins for every global it
names (``Stub`` subclasses made on the fly), so that zc.async data can be
read where zc.async cannot be imported.  The survey counts records by
class, collects the names the records refer to, and reads each job's
status the way zc.async reports it (``_status_id`` and, for a new job,
the class of its parent).
"""
from __future__ import annotations

import collections
import io
from typing import Any

import zodbpickle.pickle

from zcasync.migrate import renames as renamesmodule

#: zc.async's ``_status_id`` values (a new job's status depends on its
#: parent: see ``_newStatus``)
STATUS_IDS = {1: 'active', 2: 'callbacks', 3: 'completed'}

#: The classes of the records whose state zc.async wrote (old names, and
#: the zcasync names they are renamed to before their conversion).
JOB_CLASSES = {('zc.async.job', 'Job'), ('zcasync.job', 'Job')}


class Stub:
    """Any global a record names: calling it, or building an instance of
    it, gives a Stub that remembers its arguments and state."""

    _stub_args: tuple = ()
    _stub_state: Any = None

    def __init__(self, *args, **kw):
        self._stub_args = args

    def __setstate__(self, state):
        self._stub_state = state

    def __reduce__(self):  # never pickled
        raise TypeError('a survey stub cannot be pickled')


class Reference:
    """A persistent reference: its oid and the class it names (None when
    it names none)."""

    def __init__(self, oid, klass):
        self.oid = oid
        self.klass = klass


_stubs: dict[tuple[str, str], type] = {}


def _stub(module, name):
    key = (module, name)
    klass = _stubs.get(key)
    if klass is None:
        klass = _stubs[key] = type(str(name), (Stub,), {
            '__module__': str(module), '_stub_key': key})
    return klass


def _name(value):
    if isinstance(value, tuple) and len(value) == 2:
        return tuple(_text(v) for v in value)
    if isinstance(value, type) and hasattr(value, '_stub_key'):
        return value._stub_key
    return None


def _text(value):
    return value.decode('latin-1') if isinstance(value, bytes) else value


def _reference(ref):
    if isinstance(ref, tuple) and len(ref) == 2:
        return Reference(ref[0], _name(ref[1]))
    if isinstance(ref, list) and len(ref) == 2 and ref[0] == 'm':
        info = ref[1]
        return Reference(info[1], _name(info[2]) if len(info) > 2 else None)
    if isinstance(ref, list):
        return Reference(ref[-1], None)
    return Reference(ref, None)


class _Unpickler(zodbpickle.pickle.Unpickler):
    """Stubs for globals (collected in ``names``), References for
    persistent references."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.names = set()

    def find_class(self, module, name):
        module, name = _text(module), _text(name)
        self.names.add((module, name))
        return _stub(module, name)

    def persistent_load(self, ref):
        return _reference(ref)


def readRecord(data: bytes) -> tuple[tuple[str, str], Any, set]:
    """((module, name) of the record's class, its state with stubs and
    References, the globals it names)."""
    unpickler = _Unpickler(io.BytesIO(data), encoding='latin-1')
    names = unpickler.names
    meta = unpickler.load()
    state = unpickler.load()
    if isinstance(meta, tuple):
        meta = meta[0]
    klass = _name(meta) or ('?', '?')
    names.discard(klass)
    return klass, state, names


def _attributes(state):
    if isinstance(state, tuple) and len(state) == 2 and \
            isinstance(state[1], dict):
        state = dict(state[0] or {}, **state[1])
    if isinstance(state, dict):
        return {_text(k): v for k, v in state.items()}
    return {}


def jobStatus(state: Any) -> str | None:
    """The zc.async status of a job stored with `state` ('pending',
    'assigned', 'new', 'active', 'callbacks', 'completed', or for
    completed jobs 'failed'); None for a state zcasync already wrote."""
    attrs = _attributes(state)
    if '_status_id' not in attrs:
        return None
    status = STATUS_IDS.get(attrs['_status_id'])
    if status == 'completed' and isinstance(attrs.get('_result'), Stub) and \
            'Failure' in type(attrs['_result']).__name__:
        return 'failed'
    if status is not None:
        return status
    parent = attrs.get('parent')
    klass = parent.klass if isinstance(parent, Reference) else None
    if klass is not None and klass[1] == 'Queue':
        return 'pending'
    if klass is not None and klass[1] == 'Agent':
        return 'assigned'
    return 'new'


class Survey:
    """What the records of a storage hold (see the module docstring)."""

    def __init__(self) -> None:
        self.records = 0
        #: (module, name) -> how many current records have that class
        self.classes: collections.Counter = collections.Counter()
        #: zc.async status -> how many jobs
        self.jobs: collections.Counter = collections.Counter()
        #: (module, name) of the globals the records name
        self.names: set = set()
        #: oids of the records with zc.async's state, by class
        self.legacy_oids: dict[tuple[str, str], list[bytes]] = \
            collections.defaultdict(list)
        #: (module, name) -> records of objects the migration replaces
        self.replaced: collections.Counter = collections.Counter()
        #: records that could not be read: (oid, problem)
        self.unreadable: list[tuple[bytes, str]] = []

    def add(self, oid: bytes, data: bytes) -> None:
        self.records += 1
        try:
            klass, state, names = readRecord(data)
        except Exception as e:
            self.unreadable.append((oid, '%s: %s' % (type(e).__name__, e)))
            return
        self.names.update(names)
        if klass in JOB_CLASSES:
            status = jobStatus(state)
            if status is None:
                return  # a zcasync job
            self.jobs[status] += 1
        elif klass[0] == renamesmodule.LEGACY_MODULE:
            # a stand-in: replaced by the migration (garbage once it
            # finished, until the database is packed)
            self.replaced[klass] += 1
            return
        elif not self._legacyRecord(klass, state):
            return
        self.classes[klass] += 1
        self.legacy_oids[klass].append(oid)

    def _legacyRecord(self, klass, state):
        module = klass[0]
        if renamesmodule.isLegacyName(module):
            return True
        if klass in renamesmodule.IN_PLACE:
            return _isLegacyState(klass, _attributes(state))
        return False

    @property
    def legacy(self) -> int:
        """How many records still hold zc.async data."""
        return sum(self.classes.values())

    def legacyNames(self) -> list[tuple[str, str]]:
        """Names of legacy modules the records refer to (as globals)."""
        return sorted(n for n in self.names
                      if renamesmodule.isLegacyName(n[0]))

    def unknownLegacyNames(self) -> list[tuple[str, str]]:
        """Legacy names the migration has no rule for."""
        found = set(self.legacyNames()) | {
            k for k in self.classes if renamesmodule.isLegacyName(k[0])}
        return sorted(n for n in found if n not in renamesmodule.RENAMES)

    def unresolvedNames(self) -> list[tuple[str, str]]:
        """Names outside the legacy modules that this process cannot
        import (e.g. the application's job functions)."""
        import ZODB.broken
        missing = []
        for module, name in sorted(self.names | set(self.classes)):
            if renamesmodule.isLegacyName(module) or (module, name) in \
                    renamesmodule.RENAMES:
                continue
            try:
                found = ZODB.broken.find_global(module, name)
            except Exception:
                missing.append((module, name))
                continue
            if isinstance(found, type) and issubclass(
                    found, ZODB.broken.Broken):
                missing.append((module, name))
        return missing


#: State keys that only zc.async's layout of a class has.
_LEGACY_KEYS = {
    'Queues': ('_len',),
    'Queue': ('_queue', '_held', '_putback_queue'),
    'Quotas': ('_len', '__parent__'),
    'Quota': ('_data',),
    'Dispatchers': ('_len', '__parent__'),
    'DispatcherAgents': ('_data', '_len'),
    'Agent': ('_data', 'size'),
    'SuccessFailureCallbackProxy': ('default', 'conditionals', 'callbacks'),
    'ConditionalCallbackProxy': ('default', 'conditionals', 'callbacks'),
    'Job': ('_status_id',),
}


def _isLegacyState(klass, attrs):
    keys = _LEGACY_KEYS.get(klass[1], ())
    return any(k in attrs for k in keys) or (
        klass[1] == 'Agent' and isinstance(attrs.get('completed'), Reference)
        and attrs['completed'].klass is not None and
        attrs['completed'].klass[1] == 'Periodic')


def survey(storage: Any) -> Survey:
    """Read every current record of `storage` (through a fresh instance
    of an MVCC storage such as RelStorage: the newest data)."""
    import ZODB.interfaces
    mvcc = ZODB.interfaces.IMVCCStorage.providedBy(storage)
    reader = storage.new_instance() if mvcc else storage
    try:
        if mvcc:
            reader.poll_invalidations()
        found = Survey()
        for oid, tid, data in renamesmodule.currentRecords(reader):
            found.add(oid, data)
        return found
    finally:
        if mvcc:
            reader.release()
