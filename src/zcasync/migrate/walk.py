"""Read a database's records without importing any class they name.

A migration has to look at pickles written by code that is not installed
(zc.async 1.x, zc.twist, zc.queue, the application) and sometimes by
Python 2.  This module unpickles ZODB records with stand-ins for every
global: a stored class or function becomes a `Stub` subclass named after
it, an inline instance becomes a `Stub` instance that remembers how it was
built (`args`) and its state, and a persistent reference becomes a `Ref`.
Nothing is imported, so reading can neither fail on a missing module nor
run application code.

`walkStorage` summarises every record: the classes of stored objects with
the kinds of values under each state attribute, the globals referenced
inside states (called with what, with which state keys), the classes named
in persistent references, and, per record class, the kinds of every nested
value (``kindPaths``).  `openFileStorageReadOnly` opens a FileStorage file
for reading, also one still carrying the Python 2 magic ``FS21``, without
changing a byte of it.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import io
import os
import pickletools
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

#: FileStorage magic written by ZODB on Python 2 / on Python 3.
MAGIC_PY2 = b'FS21'
MAGIC_PY3 = b'FS30'

# opcodes only a Python 2 pickler writes for a (byte) string
_PY2_STRING_OPCODES = frozenset(['STRING', 'BINSTRING', 'SHORT_BINSTRING'])


class Stub:
    """Base of the stand-ins for stored globals (see `stubClass`).

    An instance records the arguments it was built with (`args`; None when
    built without calling the class, e.g. by the ``OBJ``/``NEWOBJ`` opcodes
    with no arguments) and the state given to it (`state`; None if none).
    """

    path = '?'
    args: Optional[tuple] = None
    state: Any = None

    def __new__(cls, *args: Any) -> 'Stub':
        self = object.__new__(cls)
        if args:
            self.args = args
        return self

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return '<stub %s%r>' % (self.path, self.args or ())


_stubs: Dict[str, type] = {}


def stubClass(module: str, name: str) -> type:
    """The stand-in class for the global `module`.`name` (one per name)."""
    path = '%s.%s' % (module, name)
    cls = _stubs.get(path)
    if cls is None:
        cls = type(name, (Stub,), {'path': path, '__module__': module})
        _stubs[path] = cls
    return cls


def globalPath(value: Any) -> Optional[str]:
    """The stored name of a stand-in class, else None."""
    if isinstance(value, type) and issubclass(value, Stub):
        return value.path
    return None


@dataclass(frozen=True)
class Ref:
    """A persistent reference: the oid and, when the reference names it,
    the class path (None for references that only carry the oid)."""

    oid: bytes
    klass: Optional[str] = None
    database: Optional[str] = None


def _klassPath(klass: Any) -> Optional[str]:
    if isinstance(klass, tuple) and len(klass) == 2:
        return '%s.%s' % tuple(
            k.decode('ascii') if isinstance(k, bytes) else k for k in klass)
    return globalPath(klass)


def _asOid(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode('latin-1')
    return bytes(value)


def makeRef(pid: Any) -> Ref:
    """A `Ref` from any of ZODB's persistent-id forms."""
    if isinstance(pid, tuple):
        oid, klass = pid
        return Ref(_asOid(oid), _klassPath(klass))
    if isinstance(pid, list):
        if len(pid) == 1:
            return Ref(_asOid(pid[0]))
        mode, info = pid
        if mode in ('w', b'w'):
            return Ref(_asOid(info[0]),
                       database=info[1] if len(info) > 1 else None)
        if mode in ('m', b'm'):
            db, oid, klass = info
            return Ref(_asOid(oid), _klassPath(klass), db)
        if mode in ('n', b'n'):
            db, oid = info
            return Ref(_asOid(oid), database=db)
        raise ValueError('unknown persistent reference %r' % (pid,))
    return Ref(_asOid(pid))


@functools.lru_cache(maxsize=None)
def _unpicklerClass() -> type:
    import zodbpickle.pickle

    class StubUnpickler(zodbpickle.pickle.Unpickler):
        def find_class(self, module: str, name: str) -> type:
            return stubClass(module, name)

        def persistent_load(self, pid: Any) -> Ref:
            return makeRef(pid)

    return StubUnpickler


def readRecord(data: bytes, *, encoding: str = 'ASCII',
               errors: str = 'bytes') -> Tuple[str, Any]:
    """The class path and the state of one ZODB data record, read with
    stand-ins.  A Python 2 ``str`` comes out as `str` if it decodes with
    `encoding`, else as `bytes` (``errors='bytes'``); ``encoding='bytes'``
    gives every Python 2 ``str`` as `bytes`."""
    unpickler = _unpicklerClass()(
        io.BytesIO(data), encoding=encoding, errors=errors)
    meta = unpickler.load()
    if isinstance(meta, tuple):  # (class, newargs) or ((module, name), ...)
        meta = meta[0]
    path = _klassPath(meta) or globalPath(meta) or repr(meta)
    return path, unpickler.load()


def isPython2Record(data: bytes) -> bool:
    """Whether a data record was written by Python 2 (as far as its
    opcodes tell): a pickle protocol below 3 (Python 3 ZODB writes 3), or
    a Python 2 byte-string opcode (zodbpickle's protocol 3 on Python 2)."""
    if not data:
        return False
    if data[0] != 0x80 or data[1] < 3:
        return True
    for op, _arg, _pos in pickletools.genops(data):
        if op.name in _PY2_STRING_OPCODES:
            return True
    return False


def pickleOpcodes(data: bytes) -> collections.Counter:
    """Opcode name -> count over both pickles of a data record."""
    counts: collections.Counter = collections.Counter()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        for op, _arg, _pos in pickletools.genops(stream):
            counts[op.name] += 1
    return counts


# --- reading a storage ------------------------------------------------------

def fileMagic(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read(4)


@contextlib.contextmanager
def openFileStorageReadOnly(path: str) -> Iterator[Any]:
    """A read-only FileStorage on `path`.  A Python 2 file (magic ``FS21``,
    which ZODB on Python 3 refuses) is read from a temporary copy carrying
    ``FS30``; the file itself is never written (nor are .index/.lock files
    made beside it)."""
    import ZODB.FileStorage

    magic = fileMagic(path)
    if magic == MAGIC_PY3:
        storage = ZODB.FileStorage.FileStorage(path, read_only=True)
        try:
            yield storage
        finally:
            storage.close()
        return
    if magic != MAGIC_PY2:
        raise ValueError(
            '%s is not a FileStorage file (magic %r, expected %r or %r)'
            % (path, magic, MAGIC_PY2, MAGIC_PY3))
    with tempfile.TemporaryDirectory(prefix='zcasync-walk-') as tmp:
        copy = os.path.join(tmp, 'Data.fs')
        shutil.copyfile(path, copy)
        with open(copy, 'r+b') as f:
            f.write(MAGIC_PY3)
        storage = ZODB.FileStorage.FileStorage(copy, read_only=True)
        try:
            yield storage
        finally:
            storage.close()


def currentRecords(storage: Any) -> Iterator[Tuple[bytes, bytes, bytes]]:
    """(oid, tid, data) of the current revision of every object, in oid
    order (``record_iternext``; FileStorage, ZEO and RelStorage have it)."""
    next_oid = None
    while True:
        oid, tid, data, next_oid = storage.record_iternext(next_oid)
        yield oid, tid, data
        if next_oid is None:
            break


def allRecords(storage: Any) -> Iterator[Tuple[bytes, bytes, bytes]]:
    """(oid, tid, data) of every data record of every transaction, old
    revisions included (records without data, e.g. undone creations, are
    skipped)."""
    for txn in storage.iterator():
        for record in txn:
            if record.data:
                yield record.oid, record.tid, record.data


# --- summarising ------------------------------------------------------------

def kindOf(value: Any) -> str:
    """A short name for the kind of a value read by `readRecord`."""
    if value is None:
        return 'None'
    if isinstance(value, Ref):
        return 'ref:%s' % (value.klass or '?')
    path = globalPath(value)
    if path is not None:
        return 'global:' + path
    if isinstance(value, Stub):
        return value.path
    return type(value).__name__


@dataclass
class RecordClass:
    objects: Set[bytes] = field(default_factory=set)
    records: int = 0
    attributes: Dict[str, Set[str]] = field(
        default_factory=lambda: collections.defaultdict(set))
    #: kinds of a state that is not a dict
    nondict: Set[str] = field(default_factory=set)
    #: nested path -> kinds (see `kindPaths`)
    paths: Dict[str, Set[str]] = field(
        default_factory=lambda: collections.defaultdict(set))


@dataclass
class GlobalUse:
    bare: bool = False
    calls: Set[Tuple[str, ...]] = field(default_factory=set)
    state: Dict[str, Set[str]] = field(
        default_factory=lambda: collections.defaultdict(set))


@dataclass
class Walk:
    """What `walkStorage` found (see the module docstring)."""

    transactions: int = 0
    records: int = 0
    classes: Dict[str, RecordClass] = field(
        default_factory=lambda: collections.defaultdict(RecordClass))
    globals: Dict[str, GlobalUse] = field(
        default_factory=lambda: collections.defaultdict(GlobalUse))
    references: collections.Counter = field(
        default_factory=collections.Counter)
    #: records written by Python 2 (`isPython2Record`)
    python2_records: int = 0
    #: pickle opcode -> count over all records read
    opcodes: collections.Counter = field(default_factory=collections.Counter)

    def attributeKinds(self) -> Dict[str, Dict[str, Set[str]]]:
        """record class -> attribute (or '(state)') -> value kinds."""
        result: Dict[str, Dict[str, Set[str]]] = {}
        for path, info in self.classes.items():
            kinds = {name: set(k) for name, k in info.attributes.items()}
            if info.nondict:
                kinds['(state)'] = set(info.nondict)
            result[path] = kinds
        return result

    def globalPaths(self) -> Set[str]:
        return set(self.globals)

    def format(self) -> str:
        """A text report, one section per kind of finding."""
        lines = ['%d transactions, %d data records'
                 % (self.transactions, self.records), '',
                 'PERSISTENT RECORD CLASSES']
        for path in sorted(self.classes):
            info = self.classes[path]
            lines.append('%s  [%d objects, %d records]'
                         % (path, len(info.objects), info.records))
            if info.nondict:
                lines.append('    (state is not a dict: %s)'
                             % ' | '.join(sorted(info.nondict)))
            for name in sorted(info.attributes):
                lines.append('    %-26s %s' % (
                    name, ' | '.join(sorted(info.attributes[name]))))
        lines += ['', 'GLOBALS REFERENCED INSIDE STATE PICKLES']
        for path in sorted(self.globals):
            use = self.globals[path]
            how = (['bare reference'] if use.bare else []) + [
                'called with (%s)' % ', '.join(c)
                for c in sorted(use.calls)]
            lines.append('%s  (%s)' % (path, '; '.join(how)))
            for name in sorted(use.state):
                lines.append('    %-26s %s' % (
                    name, ' | '.join(sorted(use.state[name]))))
        lines += ['', 'CLASSES NAMED IN PERSISTENT REFERENCES (count)']
        for path in sorted(self.references):
            lines.append('%s  %d' % (path, self.references[path]))
        return '\n'.join(lines)


class _Summariser:

    def __init__(self, walk: Walk) -> None:
        self.walk = walk
        self.pending_refs: List[Tuple[Ref, Set[str]]] = []

    def kind(self, value: Any, target: Set[str]) -> None:
        if isinstance(value, Ref) and value.klass is None:
            self.pending_refs.append((value, target))
        target.add(kindOf(value))

    def visit(self, value: Any, path: str, record: RecordClass,
              seen: Set[int]) -> None:
        """Record kinds of `value` and everything inside it."""
        if id(value) in seen:
            return
        self.kind(value, record.paths[path])
        if isinstance(value, Ref):
            self.walk.references[value.klass or '?'] += 1
            return
        gpath = globalPath(value)
        if gpath is not None:
            self.walk.globals[gpath].bare = True
            return
        if isinstance(value, (list, tuple, set, frozenset, dict, Stub)):
            seen = seen | {id(value)}
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                self.visit(item, path + '[]', record, seen)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.visit(key, path + '{key}', record, seen)
                self.visit(item, path + '{}', record, seen)
        elif isinstance(value, Stub):
            use = self.walk.globals[value.path]
            if value.args is not None:
                kinds: List[str] = []
                for arg in value.args:
                    kinds.append(kindOf(arg))
                    self.visit(arg, path + '()', record, seen)
                use.calls.add(tuple(kinds))
            else:
                use.calls.add(())
            if isinstance(value.state, dict):
                for key, item in value.state.items():
                    self.kind(item, use.state[str(key)])
                    self.visit(item, '%s.%s' % (path, key), record, seen)
            elif value.state is not None:
                self.visit(value.state, path + '.(state)', record, seen)

    def record(self, oid: bytes, data: bytes, klasses: Dict[bytes, str],
               encoding: str) -> None:
        walk = self.walk
        walk.records += 1
        walk.opcodes.update(pickleOpcodes(data))
        if isPython2Record(data):
            walk.python2_records += 1
        path, state = readRecord(data, encoding=encoding)
        klasses[oid] = path
        info = walk.classes[path]
        info.objects.add(oid)
        info.records += 1
        if isinstance(state, dict):
            for key, value in state.items():
                name = key.decode('ascii') if isinstance(key, bytes) else key
                self.kind(value, info.attributes[str(name)])
                self.visit(value, str(name), info, set())
        else:
            self.kind(state, info.nondict)
            self.visit(state, '(state)', info, set())

    def resolve(self, klasses: Dict[bytes, str]) -> None:
        """Name the class of references that carried only an oid."""
        for ref, target in self.pending_refs:
            klass = klasses.get(ref.oid)
            if klass is not None:
                target.discard('ref:?')
                target.add('ref:' + klass)
                self.walk.references['?'] -= 1
                self.walk.references[klass] += 1
        self.walk.references += collections.Counter()  # drop zero counts


def walkStorage(storage: Any, *, current_only: bool = True,
                encoding: str = 'ASCII') -> Walk:
    """Summarise the records of an open storage: the current revision of
    every object (`current_only`) or every data record of every
    transaction."""
    walk = Walk()
    walk.transactions = sum(1 for _ in storage.iterator())
    summariser = _Summariser(walk)
    klasses: Dict[bytes, str] = {}
    records = currentRecords(storage) if current_only else allRecords(storage)
    for oid, _tid, data in records:
        summariser.record(oid, data, klasses, encoding)
    summariser.resolve(klasses)
    return walk


def walkFileStorage(path: str, *, current_only: bool = True,
                    encoding: str = 'ASCII') -> Walk:
    """`walkStorage` over a FileStorage file, read-only (see
    `openFileStorageReadOnly`)."""
    with openFileStorageReadOnly(path) as storage:
        return walkStorage(storage, current_only=current_only,
                           encoding=encoding)


class Snapshot:
    """The current records of a storage (all held in memory), read on
    demand with stand-ins: ``snapshot[oid]`` is ``(class path, state)``;
    `follow` reads the state behind a `Ref`.  For checking a database's
    contents (e.g. against a fixture's MANIFEST.json) without its
    classes."""

    def __init__(self, storage: Any, *, encoding: str = 'ASCII') -> None:
        self.encoding = encoding
        self.data = {oid: data for oid, _tid, data in currentRecords(storage)}

    def __getitem__(self, oid: Any) -> Tuple[str, Any]:
        if isinstance(oid, int):
            oid = oid.to_bytes(8, 'big')
        return readRecord(self.data[oid], encoding=self.encoding)

    def follow(self, value: Any) -> Any:
        """The state of the object `value` refers to (`value` itself if it
        is not a reference)."""
        if isinstance(value, Ref):
            return self[value.oid][1]
        return value

    def root(self) -> Dict[str, Any]:
        """The root mapping (oid 0) as a dict."""
        return self[0][1]['data']

    def reachable(self) -> Set[bytes]:
        """The oids reachable from the root by persistent references."""
        seen: Set[bytes] = set()
        todo = [(0).to_bytes(8, 'big')]
        while todo:
            oid = todo.pop()
            if oid in seen or oid not in self.data:
                continue
            seen.add(oid)
            todo.extend(refsIn(self[oid][1]))
        return seen


def refsIn(value: Any) -> Iterator[bytes]:
    """The oids of the persistent references anywhere inside `value` (as
    `readRecord` gives it)."""
    todo = [value]
    seen: Set[int] = set()
    while todo:
        value = todo.pop()
        if isinstance(value, Ref):
            yield value.oid
        elif id(value) in seen or isinstance(value, (str, bytes, int)):
            continue
        elif isinstance(value, (list, tuple, set, frozenset)):
            seen.add(id(value))
            todo.extend(value)
        elif isinstance(value, dict):
            seen.add(id(value))
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, Stub):
            seen.add(id(value))
            todo.extend(value.args or ())
            todo.append(value.state)
