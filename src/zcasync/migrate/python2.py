"""The Python 2 stage of ``zcasync migrate --from-python2``.

A zc.async 1.x database that lived on Python 2 is a FileStorage with the
magic ``FS21`` whose records are Python 2 pickles: every ``str`` a byte
string, Python 2 names (``exceptions.ValueError``, ``copy_reg``,
``__builtin__``, ``operator.mul``), stored ``zc.twist`` Failures whose
``parents`` list Python 2 type names.  `convertPython2` turns such a file
into the form a Python 3 zc.async database has (the ``zc_async_1_5``
fixture): protocol-3 pickles, the same class paths (zc.async, zc.queue,
zc.twist, ... are *not* renamed: that is the next stage's work), text as
`str` and binary data as `bytes`.

How, record by record (current revisions):

* zodbupdate's ``--convert-py3`` machinery (`zodbupdate.serialize
  .ObjectRenamer`, called as a library) re-pickles the record with protocol
  3, turns the oids of persistent references into bytes and maps Python 2
  names to Python 3 ones (``exceptions.ValueError`` -> ``builtins
  .ValueError``, ``operator.mul`` -> ``_operator.mul``, ...).  Python 2
  strings are read with `encoding` (UTF-8), strictly: whatever does not
  decode comes out as bytes and is dealt with below, by position, never
  left to chance.
* What is text and what is binary is decided by position, from what
  zc.async stores: every Python 2 string is text except the oids (persistent
  references, and the third element of each ``Queue._held`` key, read in
  the records of every ``_held`` tree) and the payloads of ``datetime`` /
  ``date`` / ``time`` values.  An oid that happened to decode as text goes
  back to its exact bytes; a text value that does not decode is decoded
  with `fallback_encodings`, kept as bytes with `keep_undecodable`, or
  else the stage stops before writing anything and names the records.  Attributes that an
  installed package declares binary through zodbupdate's
  ``zodbupdate.decode`` entry points are left to those declarations.
* Stored Failures get Python 3 type names in ``parents`` (so that
  ``Failure.check(ValueError)`` matches ``builtins.ValueError``).
* Instances of classes that cannot be imported here (``zc.twist.Failure``,
  ``pytz._UTC``, application exceptions) are written back as the same
  class, built the same way (not as zodbupdate's ``ZODB.broken.rebuild``
  calls); a database already converted by plain zodbupdate has such calls
  turned back into the classes.

Nothing is imported from zc.async or the application: the stage works in a
process without them (it must run before anything installs aliases for
zc.async names; it refuses to run if a stored class resolves to another
path here).  The file is first read completely without writing (problems
stop it there, the magic restored); then the records that need it are
converted in transactions of at most `batch_size` records.  A second run,
or a run after an interruption, converts only what is still Python 2.
Older revisions are left as they are unless `pack` is given: zcasync
never loads them, but undo and history tools would meet Python 2 pickles.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import copyreg
import datetime
import os
import sys
import time
import types
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence
from typing import Set, Tuple

from zcasync.migrate import walk

#: The note of the transactions this stage writes.
NOTE = ('zcasync migrate --from-python2: Python 2 records converted to '
        'Python 3 pickles (zodbupdate)')

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


def pathFromURI(uri: str) -> str:
    """The FileStorage path of a ``file://`` URI (or a plain path), for
    `convertPython2`; Python2ConversionError naming the remedy for any
    other kind of database."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme in ('', 'file'):
        path = parsed.path if parsed.scheme else uri
        if parsed.scheme and parsed.netloc not in ('', 'localhost'):
            raise Python2ConversionError(
                'file URI %s names a host; use file:///absolute/path' % uri)
        return urllib.parse.unquote(path)
    raise Python2ConversionError(
        '%s is not a FileStorage file URI (file:///path/Data.fs): convert '
        'the storage of a %s:// database with convertPython2Storage (as '
        '"zcasync migrate --from-python2" does); a ZEO server on Python 3 '
        'cannot serve a Python 2 file (magic FS21) at all: stop it and run '
        '"zcasync migrate --db file:///path/Data.fs --from-python2" on its '
        'file' % (uri, parsed.scheme))


# --- values the unpickler produces --------------------------------------------

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


# --- one record ---------------------------------------------------------------

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
class _Findings:
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


class _Converter:
    """Converts records with a zodbupdate ObjectRenamer plus the fixes
    above; `findings` collects what it did or would do."""

    def __init__(self, encoding: str, fallbacks: Sequence[str],
                 keep_undecodable: bool = False) -> None:
        import zodbupdate.convert
        import zodbupdate.serialize

        self.encoding = encoding
        self.fallbacks = tuple(fallbacks)
        self.keep_undecodable = keep_undecodable
        self.findings = _Findings()
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
                'written' % (_oidRepr(oid), record.klass))
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
            '%r' % (_oidRepr(self.record.oid), where, self.encoding,
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


def _oidRepr(oid: bytes) -> str:
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


def _heldTrees(storage: Any) -> Set[bytes]:
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


# --- the stage ----------------------------------------------------------------

def _plan(storage: Any, converter: _Converter) -> _Findings:
    """Convert every current record in memory (nothing is stored)."""
    converter.held = _heldTrees(storage)
    findings = converter.findings
    for oid, _tid, data in walk.currentRecords(storage):
        findings.records += 1
        if converter.convert(oid, data) is not None:
            findings.to_convert.append(oid)
    return findings


def _describe(findings: _Findings, would: bool,
              report: Callable[[str], None]) -> None:
    verb = 'would convert' if would else 'converting'
    total = sum(findings.python2.values())
    report('%s %d of %d current records from Python 2 pickles:'
           % (verb, total, findings.records))
    for klass, n in sorted(findings.python2.items()):
        report('    %-40s %d' % (klass, n))
    fixed = sum(findings.fixed.values())
    if fixed:
        report('%s %d Python 3 records left unfinished by an earlier '
               'conversion: %s' % (
                   'would fix' if would else 'fixing', fixed,
                   ', '.join('%s %d' % kv
                             for kv in sorted(findings.fixed.items()))))
    if findings.failure_parents:
        report('  stored Failures given Python 3 type names: %d'
               % findings.failure_parents)
    if findings.held_oids:
        report('  Queue._held oids kept as bytes: %d' % findings.held_oids)
    if findings.rebuilt:
        report('  ZODB.broken.rebuild calls turned back into their class: '
               '%d' % findings.rebuilt)
    if findings.kept_bytes:
        report('  text that does not decode kept as bytes: %d values'
               % findings.kept_bytes)
    for encoding, n in sorted(findings.fallback.items()):
        report('  text decoded with the fallback %s: %d values'
               % (encoding, n))
    if findings.inline_kept:
        report('  instances of classes not importable here, kept as they '
               'are: %s' % ', '.join(
                   '%s %d' % kv for kv in sorted(findings.inline_kept.items())))


def _nothing(findings: _Findings, report: Callable[[str], None]) -> None:
    report('nothing to convert: %d current records are Python 3 pickles%s'
           % (findings.records - findings.blobs,
              ' (and %d blob records, which need none)' % findings.blobs
              if findings.blobs else ''))


def _counts(findings: _Findings, converter: _Converter, **extra: Any
            ) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        'records': findings.records,
        'python2_records': sum(findings.python2.values()),
        'python2_by_class': dict(findings.python2),
        'fixed_python3_records': sum(findings.fixed.values()),
        'renames': converter.renames(),
        'failure_parents': findings.failure_parents,
        'held_oids': findings.held_oids,
        'rebuilt_instances': findings.rebuilt,
        'fallback_decoded': dict(findings.fallback),
        'undecodable_kept': findings.kept_bytes,
        'blob_records_kept': findings.blobs,
        'inline_not_importable': dict(findings.inline_kept),
    }
    result.update(extra)
    return result


def _check(findings: _Findings, converter: _Converter) -> None:
    unexpected = converter.unexpectedRenames()
    if unexpected:
        raise Python2ConversionError(
            'stored names resolve to other paths in this process (%s): the '
            'Python 2 stage keeps class paths and must run before aliases '
            'for zc.async names are installed (run it first, or in a fresh '
            'process); nothing was written' % ', '.join(
                '%s -> %s' % kv for kv in sorted(unexpected.items())))
    if findings.problems:
        raise Python2ConversionError(
            '%d stored values cannot be converted (first: %s); nothing was '
            'written; remedy: if they are text in another encoding, give a '
            'fallback encoding (fallback_encodings=["latin-1"], as '
            'zodbupdate\'s --encoding-fallback); if they are binary data of '
            'your application, keep them as bytes (keep_undecodable=True) or '
            'declare the attribute binary with a "zodbupdate.decode" entry '
            'point'
            % (len(findings.problems), findings.problems[0]),
            findings.problems)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    import zc.lockfile
    try:
        lock = zc.lockfile.LockFile(path + '.lock')
    except zc.lockfile.LockError:
        raise Python2ConversionError(
            '%s is in use (its lock file %s.lock is held by another '
            'process): stop the processes using it (a Python 2 zc.async '
            'process, a ZEO server) and run again' % (path, path))
    try:
        yield
    finally:
        lock.close()


def _setMagic(path: str, magic: bytes) -> None:
    with open(path, 'r+b') as f:
        f.write(magic)


def _oldPython2Revisions(storage: Any) -> int:
    """Non-current revisions that are Python 2 pickles (0 for a storage
    without history or without iteration)."""
    supports = getattr(storage, 'supportsUndo', None)
    if supports is not None and not supports():
        return 0
    current = {oid: tid for oid, tid, _ in walk.currentRecords(storage)}
    try:
        return sum(1 for oid, tid, data in walk.allRecords(storage)
                   if current.get(oid) != tid and walk.isPython2Record(data))
    except Exception:  # a storage that cannot iterate its history
        return 0


def _reportOld(extra: Dict[str, Any], report: Callable[[str], None]) -> None:
    if extra['old_python2_revisions']:
        report('%d older revisions are still Python 2 pickles (zcasync never '
               'loads them; undo and history tools would): pack the storage '
               'to remove them' % extra['old_python2_revisions'])


def convertPython2Storage(storage: Any, *, dry_run: bool = False,
                          report: Callable[[str], None] = print,
                          encoding: str = 'utf-8',
                          fallback_encodings: Sequence[str] = (),
                          keep_undecodable: bool = False,
                          batch_size: int = 1000) -> Dict[str, Any]:
    """`convertPython2` on an open storage that Python 3 can already open
    (RelStorage holding Python 2 pickles, a ZEO server, a FileStorage whose
    magic was rewritten): no magic, no lock (stop the processes writing to
    it first: a record changed meanwhile makes the stage stop with a
    conflict; run it again), no pack.  Same counts."""
    if batch_size < 1:
        raise ValueError('batch_size must be at least 1, not %r' % batch_size)
    converter = _Converter(encoding, fallback_encodings, keep_undecodable)
    extra: Dict[str, Any] = {'magic': None, 'dry_run': dry_run,
                             'packed': False, 'magic_rewritten': False,
                             'transactions': 0}
    with _quietZodbupdate():
        findings = _plan(storage, converter)
        _check(findings, converter)
        if not findings.to_convert:
            _nothing(findings, report)
        else:
            _describe(findings, dry_run, report)
        if not dry_run:
            extra['transactions'] = _store(
                storage, findings.to_convert,
                _Converter(encoding, fallback_encodings, keep_undecodable),
                converter.held, batch_size)
            if extra['transactions']:
                report('committed %d transaction(s)' % extra['transactions'])
    extra['old_python2_revisions'] = _oldPython2Revisions(storage)
    _reportOld(extra, report)
    return _counts(findings, converter, **extra)


def convertPython2(path: str, *, dry_run: bool = False,
                   report: Callable[[str], None] = print,
                   encoding: str = 'utf-8',
                   fallback_encodings: Sequence[str] = (),
                   keep_undecodable: bool = False,
                   batch_size: int = 1000,
                   pack: bool = False) -> Dict[str, Any]:
    """Convert the Python 2 FileStorage file `path` in place into Python 3
    pickles of the same classes (see the module docstring); return counts.

    `dry_run` reads only (a Python 2 file through a temporary copy) and
    reports what would change.  `encoding` reads Python 2 strings;
    `fallback_encodings` are tried for text that does not decode with it;
    `keep_undecodable` keeps what none decodes as bytes (else an error).
    Converted records are committed `batch_size` at a time.  `pack` packs
    the storage afterwards, dropping the older (Python 2) revisions.

    Returns a dict: ``records`` (current records), ``python2_records`` and
    ``python2_by_class`` (converted, or to convert), ``fixed_python3_records``
    (Python 3 records fixed), ``renames``, ``failure_parents``,
    ``held_oids``, ``rebuilt_instances``, ``fallback_decoded``,
    ``undecodable_kept``, ``blob_records_kept``, ``inline_not_importable``, ``magic`` (before), ``magic_rewritten``,
    ``transactions``, ``old_python2_revisions``, ``packed``, ``dry_run``.
    Raises Python2ConversionError (nothing written) for a file that is not
    a FileStorage, is in use, or holds values it cannot convert.
    """
    import ZODB.FileStorage
    if batch_size < 1:
        raise ValueError('batch_size must be at least 1, not %r' % batch_size)
    if not os.path.isfile(path):
        raise Python2ConversionError(
            '%s is not a file: --from-python2 converts a FileStorage file'
            % path)
    magic = walk.fileMagic(path)
    if magic not in (walk.MAGIC_PY2, walk.MAGIC_PY3):
        raise Python2ConversionError(
            '%s is not a FileStorage file (it starts with %r, not FS21 or '
            'FS30)' % (path, magic))
    def newConverter() -> _Converter:
        return _Converter(encoding, fallback_encodings, keep_undecodable)
    converter = newConverter()
    extra: Dict[str, Any] = {'magic': magic.decode('ascii'),
                             'dry_run': dry_run, 'packed': False,
                             'magic_rewritten': False, 'transactions': 0}

    if dry_run:
        with _quietZodbupdate(), walk.openFileStorageReadOnly(path) as storage:
            findings = _plan(storage, converter)
            extra['old_python2_revisions'] = _oldPython2Revisions(storage)
        if magic == walk.MAGIC_PY2:
            report('would rewrite the FileStorage magic FS21 -> FS30')
        if not findings.to_convert and magic == walk.MAGIC_PY3:
            _nothing(findings, report)
        else:
            _describe(findings, True, report)
        _check(findings, converter)
        return _counts(findings, converter, **extra)

    with _locked(path), _quietZodbupdate():
        if magic == walk.MAGIC_PY2:
            _setMagic(path, walk.MAGIC_PY3)
        try:
            storage = ZODB.FileStorage.FileStorage(path, read_only=True)
            try:
                findings = _plan(storage, converter)
            finally:
                storage.close()
            _check(findings, converter)
        except BaseException:
            if magic == walk.MAGIC_PY2:
                _setMagic(path, walk.MAGIC_PY2)
            raise
    extra['magic_rewritten'] = magic == walk.MAGIC_PY2
    if extra['magic_rewritten']:
        report('rewrote the FileStorage magic FS21 -> FS30')
    if not findings.to_convert:
        _nothing(findings, report)
    else:
        _describe(findings, False, report)
    storage = ZODB.FileStorage.FileStorage(path)
    try:
        with _quietZodbupdate():
            extra['transactions'] = _store(storage, findings.to_convert,
                                           newConverter(), converter.held,
                                           batch_size)
        if extra['transactions']:
            report('committed %d transaction(s)' % extra['transactions'])
        if pack:
            import ZODB.serialize
            storage.pack(time.time(), ZODB.serialize.referencesf)
            extra['packed'] = True
            report('packed: older revisions removed')
        extra['old_python2_revisions'] = _oldPython2Revisions(storage)
    finally:
        storage.close()
    _reportOld(extra, report)
    return _counts(findings, converter, **extra)


def _store(storage: Any, oids: List[bytes], converter: _Converter,
           held: Set[bytes], batch_size: int) -> int:
    """Convert and store the records `oids`, `batch_size` per transaction;
    the number of transactions committed."""
    from ZODB.Connection import TransactionMetaData
    converter.held = held
    transactions = 0
    for start in range(0, len(oids), batch_size):
        txn = TransactionMetaData(description=NOTE)
        storage.tpc_begin(txn)
        try:
            stored = 0
            for oid in oids[start:start + batch_size]:
                data, serial = storage.load(oid)
                new = converter.convert(oid, data)
                if new is not None:
                    storage.store(oid, serial, new, '', txn)
                    stored += 1
            if converter.findings.problems:
                raise Python2ConversionError(
                    'records changed while converting: %s'
                    % converter.findings.problems[0])
            if not stored:
                storage.tpc_abort(txn)
                continue
            storage.tpc_vote(txn)
            storage.tpc_finish(txn)
            transactions += 1
        except BaseException:
            storage.tpc_abort(txn)
            raise
    return transactions


@contextlib.contextmanager
def _quietZodbupdate() -> Iterator[None]:
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


# --- for the zcasync migrate command -----------------------------------------

def migrateStage(uri: str, report: Any, dry_run: bool,
                 connect_timeout: float = 10.0) -> Dict[str, Any]:
    """The stage as ``zcasync migrate --from-python2`` runs it: `uri` is
    the ``--db`` URI (``file://``: `convertPython2`; ``zeo://``,
    ``postgres://``: `convertPython2Storage`), `report` has a
    ``line(text)`` method; problems become a one-line
    ``zcasync.cli.common.CommandError`` (its details printed first),
    leaving the database as it was.  Returns the stage's counts."""
    from zcasync.cli import common
    exit_format = getattr(common, 'EXIT_FORMAT', common.EXIT_UNAVAILABLE)
    path = None
    if urllib.parse.urlsplit(uri).scheme in ('', 'file'):
        try:
            path = pathFromURI(uri)
        except Python2ConversionError as e:
            raise common.CommandError(str(e), common.EXIT_URI) from None
    try:
        if path is not None:
            return convertPython2(path, dry_run=dry_run, report=report.line)
        return _convertURI(uri, dry_run, report.line, connect_timeout)
    except Python2ConversionError as e:
        for line in e.details:
            report.line('  ' + line)
        raise common.CommandError(str(e), exit_format) from None


def _convertURI(uri: str, dry_run: bool, report: Callable[[str], None],
                connect_timeout: float) -> Dict[str, Any]:
    """`convertPython2Storage` on the storage of a zeo:// or postgres://
    URI (opened as zcasync's commands open it, with their errors)."""
    from zcasync.cli import db as cli_db
    db = cli_db.openDatabase(uri, connect_timeout, create=False)
    try:
        return convertPython2Storage(db.storage, dry_run=dry_run,
                                     report=report)
    finally:
        db.close()


@contextlib.contextmanager
def convertedCopy(path: str, *,
                  report: Callable[[str], None] = print,
                  **options: Any) -> Iterator[str]:
    """A converted temporary copy of the FileStorage file `path` (removed
    on exit), for previewing the later stages of a dry run: the file itself
    is still Python 2 after ``convertPython2(path, dry_run=True)``, which
    ZODB on Python 3 cannot open."""
    import tempfile
    import shutil
    with tempfile.TemporaryDirectory(prefix='zcasync-py2-') as tmp:
        copy = os.path.join(tmp, os.path.basename(path) or 'Data.fs')
        shutil.copyfile(path, copy)
        convertPython2(copy, report=report, **options)
        yield copy


@contextlib.contextmanager
def dryRunPreview(uri: str, counts: Dict[str, Any]) -> Iterator[str]:
    """The URI the later stages of a dry run should read after
    ``migrateStage(uri, report, True)`` returned `counts`: `uri` itself
    when the stage had nothing to do, else that of a converted temporary
    copy (removed on exit), since ZODB cannot open the Python 2 file."""
    if counts['magic'] is None or not (
            counts['python2_records'] or counts['fixed_python3_records']
            or counts['magic'] != walk.MAGIC_PY3.decode('ascii')):
        # nothing to do, or not a file: the later stages read the database
        # (converted records of another storage are read as they are)
        yield uri
        return
    with convertedCopy(pathFromURI(uri), report=lambda line: None) as copy:
        yield 'file://' + urllib.parse.quote(copy)
