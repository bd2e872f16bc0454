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
  else the stage stops before writing anything and names the records.
  Attributes that an installed package declares binary through
  zodbupdate's ``zodbupdate.decode`` entry points are left to those
  declarations.
* Stored Failures get Python 3 type names in ``parents`` (so that
  ``Failure.check(ValueError)`` matches ``builtins.ValueError``).
* Instances of classes that cannot be imported here (``zc.twist.Failure``,
  ``pytz._UTC``, application exceptions) are written back as the same
  class, built the same way (not as zodbupdate's ``ZODB.broken.rebuild``
  calls); a database already converted by plain zodbupdate has such calls
  turned back into the classes.

Nothing needs to be importable: zc.async, pytz and the application may
be absent (zodbupdate imports the names it can find and keeps the others
by name).  The stage must run before anything installs aliases for
zc.async names: it refuses to run if a stored class resolves to another
path here.  The record-level work is in `zcasync.migrate.py2records`;
`convertPython2Storage` does the same on a storage Python 3 opens through
a server (RelStorage, ZEO).  The file is first read completely without
writing (problems stop it there, the magic restored); then the records
that need it are converted in transactions of at most `batch_size`
records.  A second run, or a run after an interruption, converts only
what is still Python 2.
Older revisions are left as they are unless `pack` is given: zcasync
never loads them, but undo and history tools would meet Python 2 pickles.
"""
from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence
from typing import Set

from zcasync.migrate import walk
from zcasync.migrate.py2records import (
    Converter, Findings, Python2ConversionError, heldTrees, py3Parents,
    py3TypeName, quietZodbupdate)

__all__ = ['convertPython2', 'convertPython2Storage', 'pathFromURI',
           'migrateStage', 'convertedCopy',
           'Python2ConversionError', 'py3Parents', 'py3TypeName']

#: The note of the transactions this stage writes.
NOTE = ('zcasync migrate --from-python2: Python 2 records converted to '
        'Python 3 pickles (zodbupdate)')

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


# --- the stage ---------------------------------------------------------------

def _plan(storage: Any, converter: Converter) -> Findings:
    """Convert every current record in memory (nothing is stored)."""
    converter.held = heldTrees(storage)
    findings = converter.findings
    for oid, _tid, data in walk.currentRecords(storage):
        findings.records += 1
        if converter.convert(oid, data) is not None:
            findings.to_convert.append(oid)
    return findings


def _describe(findings: Findings, would: bool,
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
                   '%s %d' % kv
                   for kv in sorted(findings.inline_kept.items())))


def _nothing(findings: Findings, report: Callable[[str], None]) -> None:
    report('nothing to convert: %d current records are Python 3 pickles%s'
           % (findings.records - findings.blobs,
              ' (and %d blob records, which need none)' % findings.blobs
              if findings.blobs else ''))


def _counts(findings: Findings, converter: Converter, **extra: Any
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


def _check(findings: Findings, converter: Converter) -> None:
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
    converter = Converter(encoding, fallback_encodings, keep_undecodable)
    extra: Dict[str, Any] = {'magic': None, 'dry_run': dry_run,
                             'packed': False, 'magic_rewritten': False,
                             'transactions': 0}
    with quietZodbupdate():
        findings = _plan(storage, converter)
        _check(findings, converter)
        if not findings.to_convert:
            _nothing(findings, report)
        else:
            _describe(findings, dry_run, report)
        if not dry_run:
            extra['transactions'] = _store(
                storage, findings.to_convert,
                Converter(encoding, fallback_encodings, keep_undecodable),
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
    ``undecodable_kept``, ``blob_records_kept``, ``inline_not_importable``,
    ``magic`` (before), ``magic_rewritten``, ``transactions``,
    ``old_python2_revisions``, ``packed``, ``dry_run``.
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
    def newConverter() -> Converter:
        return Converter(encoding, fallback_encodings, keep_undecodable)
    converter = newConverter()
    extra: Dict[str, Any] = {'magic': magic.decode('ascii'),
                             'dry_run': dry_run, 'packed': False,
                             'magic_rewritten': False, 'transactions': 0}

    if dry_run:
        with quietZodbupdate(), walk.openFileStorageReadOnly(path) as storage:
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

    with _locked(path), quietZodbupdate():
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
        with quietZodbupdate():
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


def _store(storage: Any, oids: List[bytes], converter: Converter,
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


# --- for the zcasync migrate command -----------------------------------------

def migrateStage(uri: str, report: Any, dry_run: bool,
                 connect_timeout: float = 10.0) -> Optional[str]:
    """The stage as ``zcasync migrate --from-python2`` runs it (the seam of
    ``zcasync.cli.migrate``): `uri` is the ``--db`` URI (``file://``:
    `convertPython2`; ``zeo://``, ``postgres://``:
    `convertPython2Storage`), `report` has a ``line(text)`` method.

    Returns the URI the later stages open: `uri` itself, or in a dry run
    that found Python 2 records in a file the URI of a converted temporary
    copy (removed when the process exits), or None when a dry run cannot
    show more (Python 2 records in a server's storage).  Problems become a
    one-line ``zcasync.cli.common.CommandError`` (its details printed
    first), leaving the database as it was."""
    from zcasync.cli import common
    exit_format = getattr(common, 'EXIT_FORMAT', common.EXIT_UNAVAILABLE)
    path = None
    if urllib.parse.urlsplit(uri).scheme in ('', 'file'):
        try:
            path = pathFromURI(uri)
        except Python2ConversionError as e:
            raise common.CommandError(str(e), common.EXIT_URI) from None
    try:
        if path is None:
            counts = _convertURI(uri, dry_run, report.line, connect_timeout)
        else:
            counts = convertPython2(path, dry_run=dry_run,
                                    report=report.line)
    except Python2ConversionError as e:
        for line in e.details:
            report.line('  ' + line)
        raise common.CommandError(str(e), exit_format) from None
    if not dry_run or not _workLeft(counts):
        return uri
    if path is None:
        return None
    return _previewCopy(path)


def _workLeft(counts: Dict[str, Any]) -> bool:
    return bool(counts['python2_records'] or counts['fixed_python3_records']
                or counts['magic'] == walk.MAGIC_PY2.decode('ascii'))


def _previewCopy(path: str) -> str:
    """The URI of a converted copy of `path` in a temporary folder that is
    removed when the process exits."""
    import atexit
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix='zcasync-py2-preview-')
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, 'Data.fs')
    shutil.copyfile(path, copy)
    convertPython2(copy, report=lambda line: None)
    return 'file://' + urllib.parse.quote(copy)


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

