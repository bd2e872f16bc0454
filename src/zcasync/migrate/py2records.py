"""One Python 2 record to a Python 3 one, for the Python 2 stage of
``zcasync migrate`` (`zcasync.migrate.python2`, whose docstring says what
is converted and why).

`Converter` wraps zodbupdate's ``ObjectRenamer``: zodbupdate unpickles the
record (Python 2 strings read with the stage's encoding, names mapped to
Python 3, oids of references as bytes) and pickles it again with protocol
3; in between, `Converter.convertState` decides text and bytes by position,
fixes Failure parents and keeps instances of missing classes as they were
built.  `Findings` collects what it did or would do.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import copyreg
import datetime
import sys
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence
from typing import Set, Tuple

from zcasync.migrate import walk

_TEMPORAL = {('datetime', 'datetime'): datetime.datetime,
             ('datetime', 'date'): datetime.date,
             ('datetime', 'time'): datetime.time}

# zodbupdate's own Python 2 renames, without its datetime classes (the
# payloads are handled here, see _StoredTemporal)
_PY2_RENAMES = {
    ('UserDict', 'UserDict'): ('collections', 'UserDict'),
    ('__builtin__', 'set'): ('builtins', 'set'),
    ('sets', 'Set'): ('zodbupdate.convert', 'Set'),
}

# records zodbupdate does not rewrite
_SKIPPED = frozenset(['ZODB.blob.Blob'])

_PY2_MODULES = frozenset(
    ['exceptions', '__builtin__', 'copy_reg', 'sets', 'UserDict']
    + [m.split('.')[0] for m in _compat_pickle.IMPORT_MAPPING])


class Python2ConversionError(Exception):
    """The Python 2 stage cannot convert this database; the message (one
    line) names the problem and the remedy, `details` lists every case.
    Nothing was written."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


# --- values the unpickler produces -------------------------------------------

class _StoredTemporal:
    """A datetime, date or time read from a record, written back as the
    same call with its payload as bytes.  Never constructed as a datetime,
    so its tzinfo (``pytz._UTC`` in zc.async) need not be importable."""

    target: Any = None
    encoding = 'utf-8'

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> Tuple[Any, tuple]:
        payload = self.args[0]
        if isinstance(payload, str):
            # read with `encoding`, strictly: this gives back the bytes
            payload = payload.encode(self.encoding)
        return (self.target, (bytes(payload),) + self.args[1:])


class _Inline:
    """An instance of a class that is not importable here, written back
    the way it was built: called with its arguments (REDUCE) or created
    without calling it (OBJ / NEWOBJ), then given its state."""

    def __init__(self, klass: type, args: tuple, called: bool,
                 state: Any) -> None:
        self.klass, self.args, self.called, self.state = (
            klass, args, called, state)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # the pickler checks NEWOBJ's class
        return self.klass

    def __reduce__(self) -> Tuple[Any, ...]:
        if self.called:
            return (self.klass, self.args, self.state)
        return (getattr(copyreg, '__newobj__'), (self.klass,) + self.args,
                self.state)


def py3TypeName(name: str) -> str:
    """The Python 3 dotted name of a Python 2 type name as Twisted stores
    it in ``Failure.parents`` (``exceptions.StandardError`` ->
    ``builtins.Exception``, ``exceptions.IOError`` -> ``builtins.OSError``,
    ``__builtin__.object`` -> ``builtins.object``, ``socket.error`` ->
    ``builtins.OSError``): names of Python 2 or 3 standard modules are
    resolved; other names are returned as they are (application code is
    never imported)."""
    module, _, attr = name.rpartition('.')
    top = module.split('.')[0]
    if top not in _PY2_MODULES and top not in sys.stdlib_module_names:
        return name
    module, attr = _compat_pickle.NAME_MAPPING.get(
        (module, attr), (module, attr))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if module == 'exceptions':
        module = 'builtins'
    try:
        obj = getattr(sys.modules[module] if module in sys.modules
                      else __import__(module, fromlist=['_']), attr)
    except (ImportError, AttributeError):
        return '%s.%s' % (module, attr)
    return '%s.%s' % (getattr(obj, '__module__', module),
                      getattr(obj, '__qualname__', attr))


def py3Parents(parents: Sequence[str]) -> List[str]:
    """`py3TypeName` of each name, duplicates dropped (Python 2's
    ``StandardError`` becomes ``Exception``, which follows it)."""
    result: List[str] = []
    for name in parents:
        new = py3TypeName(name)
        if new not in result:
            result.append(new)
    return result


# --- one record --------------------------------------------------------------

@dataclass
class _Record:
    oid: bytes
    klass: str = ''
    python2: bool = False
    binbytes: bool = False       # a Python 2 record with explicit binaries
    rebuilt: bool = False        # has ZODB.broken.rebuild calls
    held: bool = False           # a node of a Queue._held tree
    changed: bool = False


@dataclass
class Findings:
    records: int = 0
    python2: Counter = field(default_factory=Counter)  # class -> records
    fixed: Counter = field(default_factory=Counter)    # class -> records
    held_oids: int = 0
    failure_parents: int = 0
    inline_kept: Counter = field(default_factory=Counter)
    rebuilt: int = 0
    fallback: Counter = field(default_factory=Counter)  # encoding -> values
    kept_bytes: int = 0  # undecodable text kept as bytes
    blobs: int = 0  # blob records, left as they are
    problems: List[str] = field(default_factory=list)
    to_convert: List[bytes] = field(default_factory=list)


def _recordFacts(oid: bytes, data: bytes) -> _Record:
    import pickletools
    record = _Record(oid)
    record.python2 = walk.isPython2Record(data)
    import io
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ('BINBYTES', 'SHORT_BINBYTES', 'BINBYTES8'):
                record.binbytes = True
            elif op.name == 'GLOBAL' and arg == 'ZODB.broken rebuild':
                record.rebuilt = True
    return record


class Converter:
    """Converts records with a zodbupdate ObjectRenamer plus the fixes
    above; `findings` collects what it did or would do."""

    def __init__(self, encoding: str, fallbacks: Sequence[str],
                 keep_undecodable: bool = False) -> None:
        import zodbupdate.convert
        import zodbupdate.serialize

        self.encoding = encoding
        self.fallbacks = tuple(fallbacks)
        self.keep_undecodable = keep_undecodable
        self.findings = Findings()
        self.record = _Record(b'')
        self.held: Set[bytes] = set()
        self.temporal = {
            key: type(target.__name__, (_StoredTemporal,),
                      {'target': target, 'encoding': encoding})
            for key, target in _TEMPORAL.items()}
        self.declared = _declaredDecoders()
        converter = self

        class Renamer(zodbupdate.serialize.ObjectRenamer):
            # zodbupdate builds its unpickler here; we wrap it to read
            # datetimes our way and to fix the state before re-pickling
            def _ObjectRenamer__unpickler(self, input_file: Any) -> Any:
                inner = zodbupdate.serialize.ObjectRenamer.\
                    _ObjectRenamer__unpickler(self, input_file)
                find = inner.find_global

                def find_global(module: str, name: str) -> Any:
                    standin = converter.temporal.get((module, name))
                    return standin if standin is not None else find(
                        module, name)
                inner.find_global = find_global
                inner.find_class = find_global
                return _LoadHook(inner, converter.convertState,
                                 converter.recordClass)

        self.renamer = Renamer(
            renames=dict(_PY2_RENAMES),
            decoders=zodbupdate.convert.load_decoders(
                encoding_fallbacks=list(self.fallbacks)),
            pickle_protocol=3, repickle_all=True, encoding=encoding)

    # the record as a whole

    def convert(self, oid: bytes, data: bytes) -> Optional[bytes]:
        """The new data of a record, or None if it needs no change."""
        import io
        self.record = record = _recordFacts(oid, data)
        record.held = oid in self.held
        output = self.renamer.rename(io.BytesIO(data))
        if output is None and record.klass in _SKIPPED:
            # zodbupdate leaves blob records alone; they load on Python 3
            self.findings.blobs += 1
            return None
        if not (record.python2 or record.changed):
            return None
        if output is None:
            raise Python2ConversionError(
                'record %s (%s) could not be written back as a Python 3 '
                'pickle (see the zodbupdate log message above); nothing was '
                'written' % (oidRepr(oid), record.klass))
        if record.python2:
            self.findings.python2[record.klass] += 1
        else:
            self.findings.fixed[record.klass] += 1
        return bytes(output.getvalue())

    def unexpectedRenames(self) -> Dict[str, str]:
        """Renames zodbupdate found by importing a stored name that are not
        Python 2 -> 3 renames (an alias installed for a zc.async name)."""
        result = {}
        for old, new in self.renamer.get_rules(implicit=True).items():
            if old[0].split('.')[0] in _PY2_MODULES or (
                    old[0].split('.')[0] in sys.stdlib_module_names):
                continue
            result['.'.join(old)] = '.'.join(new)
        return result

    def renames(self) -> Dict[str, str]:
        return {'.'.join(old): '.'.join(new) for old, new in
                self.renamer.get_rules(implicit=True).items()}

    # the state

    def recordClass(self, meta: Any) -> None:
        self.record.klass = _metaPath(meta)

    def convertState(self, meta: Any, state: Any) -> Any:
        record = self.record
        declared = self.declared.get(tuple(record.klass.rsplit('.', 1)), {})
        memo: Dict[int, Any] = {}
        if isinstance(state, dict):
            for key in list(state):
                if key in declared:  # a zodbupdate.decode entry point's
                    continue
                state[key] = self.value(
                    state[key], '%s.%s' % (record.klass, key), memo)
            return state
        return self.value(state, record.klass, memo)

    def value(self, value: Any, where: str, memo: Dict[int, Any],
              binary: bool = False) -> Any:
        if isinstance(value, str):
            if binary:
                self.record.changed = True
                self.findings.held_oids += 1
                return value.encode(self.encoding)
            return value
        if isinstance(value, bytes):
            if binary or not self.record.python2 or self.record.binbytes:
                return value
            return self.undecodable(value, where)
        if isinstance(value, (int, float, type(None))):
            return value
        if type(value) is _Inline:  # (its __class__ is the stored one)
            return value
        key = id(value)
        if key in memo:
            return memo[key]
        if isinstance(value, _StoredTemporal):  # the payload stays bytes
            memo[key] = value
            value.args = value.args[:1] + tuple(
                self.value(a, where + '()', memo) for a in value.args[1:])
            return value
        memo[key] = value
        result = self.container(value, where, memo)
        memo[key] = result
        return result

    def container(self, value: Any, where: str,
                  memo: Dict[int, Any]) -> Any:
        from ZODB.broken import Broken
        if isinstance(value, list):
            value[:] = [self.value(v, where + '[]', memo) for v in value]
            return value
        if isinstance(value, tuple):
            if (self.record.held and len(value) == 3
                    and isinstance(value[0], _StoredTemporal)):
                # a Queue._held key: (begin_after, database name, oid)
                items = [self.value(value[0], where, memo),
                         self.value(value[1], where + '[1]', memo),
                         self.value(value[2], where + '[2]', memo, True)]
                if len(items[2]) != 8:
                    self.findings.problems.append(
                        '%s: a Queue._held key whose oid is %d bytes long, '
                        'not 8: %r' % (where, len(items[2]), value[2]))
            else:
                items = [self.value(v, where + '[]', memo) for v in value]
            if all(a is b for a, b in zip(items, value)):
                return value
            return type(value)(items) if type(value) is tuple else value
        if isinstance(value, dict):
            items = [(self.value(k, where + '{key}', memo),
                      self.value(v, where + '{}', memo))
                     for k, v in value.items()]
            value.clear()
            value.update(items)
            return value
        if isinstance(value, (set, frozenset)):
            converted = {self.value(v, where + '[]', memo) for v in value}
            if isinstance(value, set):
                value.clear()
                value.update(converted)
                return value
            return frozenset(converted)
        if isinstance(value, Broken):
            return self.broken(value, where, memo)
        if isinstance(value, (type, types.FunctionType,
                              types.BuiltinFunctionType, types.MethodType)):
            return value  # stored by reference
        if isinstance(value, BaseException):
            value.args = tuple(
                self.value(a, where + '.args[]', memo) for a in value.args)
        module = type(value).__module__ or ''
        if module.startswith('zope.interface') or module.startswith(
                'zodbupdate'):
            return value
        state = getattr(value, '__dict__', None)
        if isinstance(state, dict):
            for key in list(state):
                state[key] = self.value(
                    state[key], '%s.%s' % (where, key), memo)
            self.failure(state, where)
        return value

    def broken(self, value: Any, where: str, memo: Dict[int, Any]) -> Any:
        import zodbupdate.serialize
        klass = type(value)
        path = '%s.%s' % (klass.__module__, klass.__name__)
        state = value.__Broken_state__
        if state is not None:
            state = self.value(state, '%s(%s)' % (where, path), memo)
            if isinstance(state, dict):
                self.failure(state, where)
        if self.record.rebuilt:
            self.record.changed = True
            self.findings.rebuilt += 1
        self.findings.inline_kept[path] += 1
        # make the class findable under its name, for the pickler
        zodbupdate.serialize.create_broken_module_for(klass)
        initargs = value.__Broken_initargs__
        args = tuple(
            self.value(a, '%s(%s)()' % (where, path), memo)
            for a in (value.__Broken_newargs__ or ()
                      if initargs is None else initargs))
        return _Inline(klass, args, initargs is not None, state)

    def failure(self, state: Dict[Any, Any], where: str) -> None:
        """Python 3 type names in the `parents` of a stored Failure."""
        parents = state.get('parents')
        if 'type' not in state or not isinstance(parents, list) or not all(
                isinstance(p, str) for p in parents):
            return
        new = py3Parents(parents)
        if new != parents:
            parents[:] = new
            self.record.changed = True
            self.findings.failure_parents += 1

    def undecodable(self, value: bytes, where: str) -> Any:
        for encoding in self.fallbacks:
            try:
                text = value.decode(encoding)
            except UnicodeDecodeError:
                continue
            self.findings.fallback[encoding] += 1
            self.record.changed = True
            return text
        if self.keep_undecodable:
            self.findings.kept_bytes += 1
            return value
        self.findings.problems.append(
            'record %s: %s holds a Python 2 string that is not %s text: '
            '%r' % (oidRepr(self.record.oid), where, self.encoding,
                    value[:40]))
        return value


class _LoadHook:
    """The unpickler zodbupdate asked for, returning the converted state
    as its second load (the first is the class)."""

    def __init__(self, unpickler: Any, convert: Callable[[Any, Any], Any],
                 onClass: Callable[[Any], None]):
        self.unpickler, self.convert, self.onClass = (
            unpickler, convert, onClass)
        self.meta: Any = _LoadHook

    def load(self) -> Any:
        value = self.unpickler.load()
        if self.meta is _LoadHook:
            self.meta = value
            self.onClass(value)
            return value
        return self.convert(self.meta, value)


def _metaPath(meta: Any) -> str:
    if isinstance(meta, tuple):
        meta = meta[0]
    if isinstance(meta, tuple):
        return '.'.join(meta)
    return '%s.%s' % (getattr(meta, '__module__', '?'),
                      getattr(meta, '__name__', repr(meta)))


def oidRepr(oid: bytes) -> str:
    return '0x%x' % int.from_bytes(oid, 'big')


def _declaredDecoders() -> Dict[Tuple[str, ...], Dict[str, str]]:
    """(module, class) -> {attribute: encoding or 'binary'} declared by
    installed packages for zodbupdate (entry points 'zodbupdate.decode')."""
    from importlib.metadata import entry_points
    declared: Dict[Tuple[str, ...], Dict[str, str]] = {}
    for entry_point in entry_points().select(group='zodbupdate.decode'):
        for path, encoding in entry_point.load().items():
            module, klass, attribute = path.split(' ')
            declared.setdefault((module, klass), {})[attribute] = encoding
    return declared


def heldTrees(storage: Any) -> Set[bytes]:
    """The oids of every node of every ``Queue._held`` tree (the BTree and
    its buckets), read without importing anything."""
    roots = []
    for _oid, _tid, data in walk.currentRecords(storage):
        klass, state = walk.readRecord(data, encoding='latin-1')
        if klass == 'zc.async.queue.Queue' and isinstance(state, dict):
            ref = state.get('_held')
            if isinstance(ref, walk.Ref):
                roots.append(ref.oid)
    seen: Set[bytes] = set()
    while roots:
        oid = roots.pop()
        if oid in seen:
            continue
        seen.add(oid)
        data, _tid = storage.load(oid)
        _klass, state = walk.readRecord(data, encoding='latin-1')
        roots.extend(walk.refsIn(state))
    return seen


@contextlib.contextmanager
def quietZodbupdate() -> Iterator[None]:
    """zodbupdate logs a warning per class it cannot import; here that is
    expected (zc.async is not installed), so only errors get through.

    To write those names back, zodbupdate registers stand-in modules for
    them (``zc.async.job``, ``zc.twist``, ...), importable in this process
    from then on; they are removed again at the end, so that a later stage
    in the same process does not mistake them for the real modules."""
    import logging
    import zodbupdate.serialize
    loggers = [logging.getLogger('zodbupdate'),
               logging.getLogger('zodbupdate.serialize')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    known = zodbupdate.serialize.known_broken_modules
    before = set(known)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        added = {name: known.pop(name) for name in set(known) - before}
        fakes = {id(module) for module in added.values()}
        for name in added:
            if id(sys.modules.get(name)) in fakes:
                del sys.modules[name]
        for module in list(sys.modules.values()):
            for attr, value in list(getattr(module, '__dict__', {}).items()):
                if id(value) in fakes:
                    delattr(module, attr)
