"""The Python 2 stage of ``zcasync migrate`` (zcasync.migrate.python2) on
copies of the zc.async 1.5 fixture written on Python 2
(``shared/fixtures/zc_async_1_5_py2``): after the stage its records have
the form of the Python 3 fixture (``zc_async_1_5``), read without
importing any stored class (zcasync.migrate.walk)."""
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import sys

import pytest
import ZODB.FileStorage

from zcasync.migrate import py2records, python2, walk

PY2 = 'zc_async_1_5_py2'
PY3 = 'zc_async_1_5'
UTC = datetime.timezone.utc


def fixtureDir(name):
    """The fixture's directory (shared/fixtures beside the repository, or
    $ZCASYNC_FIXTURES); never written."""
    env = os.environ.get('ZCASYNC_FIXTURES')
    candidates = [pathlib.Path(env) / name] if env else []
    candidates += [parent / 'shared' / 'fixtures' / name
                   for parent in pathlib.Path(__file__).resolve().parents]
    for path in candidates:
        if (path / 'Data.fs').exists():
            return path
    raise AssertionError('the fixture %s is missing: expected '
                         'shared/fixtures/%s beside the repository (or set '
                         'ZCASYNC_FIXTURES)' % (name, name))


def copyData(tmp_path, name=PY2):
    """A writable copy of the fixture's Data.fs, in its own folder."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    copy = folder / 'Data.fs'
    shutil.copyfile(fixtureDir(name) / 'Data.fs', copy)
    copy.chmod(0o644)
    return copy


def manifest(name=PY2):
    with open(fixtureDir(name) / 'MANIFEST.json') as f:
        return json.load(f)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet(line):
    pass


@pytest.fixture(scope='module')
def python3Walk():
    return walk.walkFileStorage(str(fixtureDir(PY3) / 'Data.fs'))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """A copy of the Python 2 fixture after the stage, and its counts."""
    copy = copyData(tmp_path_factory.mktemp('converted'))
    counts = python2.convertPython2(str(copy), report=quiet)
    return copy, counts


def assertSameForm(got, expected):
    """Same record classes with the same kinds per state attribute and per
    nested position, same globals (bare or called, with the same argument
    and state kinds), same classes in references, no Python 2 record."""
    assert got.python2_records == 0
    assert got.attributeKinds() == expected.attributeKinds()
    assert got.globalPaths() == expected.globalPaths()
    for path, use in expected.globals.items():
        mine = got.globals[path]
        assert (mine.bare, mine.calls, dict(mine.state)) == (
            use.bare, use.calls, dict(use.state)), path
    for path, info in expected.classes.items():
        assert dict(got.classes[path].paths) == dict(info.paths), path
    assert set(got.references) == set(expected.references)
    assert not {'STRING', 'BINSTRING', 'SHORT_BINSTRING'} & set(got.opcodes)


# --- the converted fixture has the Python 3 fixture's form -------------------

def test_converted_records_have_the_python3_form(converted, python3Walk):
    copy, counts = converted
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)
    assert walk.fileMagic(str(copy)) == walk.MAGIC_PY3
    assert counts['magic'] == 'FS21' and counts['magic_rewritten']
    assert counts['python2_records'] == counts['records'] == sum(
        len(info.objects) for info in python3Walk.classes.values())


def test_the_comparison_sees_python2_records(tmp_path, python3Walk):
    # the same walk of the unconverted file differs (so the test above
    # can fail): Python 2 names, no pytz-free datetimes as bytes...
    original = walk.walkFileStorage(str(fixtureDir(PY2) / 'Data.fs'))
    assert original.python2_records == original.records
    assert {'exceptions.ValueError', 'operator.mul',
            'copy_reg._reconstructor'} <= original.globalPaths()
    with pytest.raises(AssertionError):
        assertSameForm(original, python3Walk)


def test_counts_name_what_was_converted(converted):
    _copy, counts = converted
    assert counts['renames'] == {
        'exceptions.ValueError': 'builtins.ValueError',
        'operator.mul': '_operator.mul',
        'copy_reg._reconstructor': 'copyreg._reconstructor',
        '__builtin__.object': 'builtins.object'}
    assert counts['failure_parents'] == 2
    inline = dict(counts['inline_not_importable'])
    if importlib.util.find_spec('pytz') is None:
        assert inline.pop('pytz._UTC') > 0  # in every datetime
    assert inline == {'zc.twist.Failure': 2, 'legacyapp.tasks.FeedError': 1}
    assert counts['python2_by_class']['zc.async.job.Job'] == len(
        manifest()['jobs'])
    assert counts['transactions'] == 1
    # not packed: every record of the original transactions is still there
    assert counts['old_python2_revisions'] == manifest()['database'][
        'data_records']


def test_held_keys_keep_the_oid_as_bytes(converted):
    copy, _counts = converted
    for path in (copy, fixtureDir(PY3) / 'Data.fs'):
        keys = _heldKeys(path)
        assert keys == [(datetime.datetime(2035, 1, 1, tzinfo=UTC),
                         'unnamed', (133).to_bytes(8, 'big'))]


def _heldKeys(path):
    with walk.openFileStorageReadOnly(str(path)) as storage:
        snapshot = walk.Snapshot(storage)
        queue = snapshot.follow(snapshot.follow(
            snapshot.root()['zc.async'])['_data'])
        keys = []
        for _name, queueRef in _bucketItems(snapshot.follow(queue)):
            held = snapshot.follow(snapshot.follow(queueRef)['_held'])
            for key, _job in _bucketItems(held):
                keys.append((_datetime(key[0]),) + tuple(key[1:]))
        return keys


def _bucketItems(state):
    """(key, value) pairs of the state of a BTree small enough to keep its
    one bucket inline: ``(((k1, v1, k2, v2, ...),),)``."""
    if state is None:
        return []
    (bucket,), = state
    flat, = bucket
    return list(zip(flat[::2], flat[1::2]))


def _datetime(stub):
    payload, tz = stub.args
    assert tz.path == 'pytz._UTC'
    return datetime.datetime(payload).replace(tzinfo=UTC)


def test_manifest_values_read_without_converters(converted):
    copy, _counts = converted
    data = manifest()
    with walk.openFileStorageReadOnly(str(copy)) as storage:
        snapshot = walk.Snapshot(storage)
        for job in data['jobs']:
            klass, state = snapshot[job['oid']]
            assert klass == job['class'] == 'zc.async.job.Job'
            _checkJob(snapshot, state, job)
        app_klass, app = snapshot[data['app']['oid']]
        assert app_klass == data['app']['class']
        assert app == data['app']['state']
        assert all(type(k) is str and type(v) in (str, int)
                   for k, v in app.items())


def _checkJob(snapshot, state, job):
    label = job['label']
    callable_ = job['callable']
    root = state['_callable_root']
    if callable_['kind'] == 'method':
        assert state['_callable_name'] == callable_['name'], label
    else:
        path = callable_.get('python3_path', callable_['path'])
        assert walk.globalPath(root) == path, label
    args = snapshot.follow(state['args'])['data']
    assert args == job['args'] and _textIsStr(args), label
    kwargs = snapshot.follow(state['kwargs'])['data']
    assert kwargs == job['kwargs'] and _textIsStr(kwargs), label
    assert state.get('_status_id', 0) == job['status_id'], label
    assert list(state.get('_quota_names', ())) == job['quota_names']
    assert _textIsStr(state.get('_quota_names', ())), label
    if job['begin_after']:
        assert _datetime(state['_begin_after']).isoformat() == \
            job['begin_after'], label
    annotations = dict(_bucketItems(snapshot.follow(state['annotations'])))
    assert annotations == job['annotations'], label
    assert _textIsStr(annotations), label
    result = job['result']
    if result['kind'] == 'failure':
        failure = state['_result']
        assert failure.path == 'zc.twist.Failure'
        parents = failure.state['parents']
        expected = result.get('python3_type', result['type'])
        assert walk.globalPath(failure.state['type']) == expected, label
        assert parents[0] == expected, label
        assert 'builtins.Exception' in parents, label
        assert not [p for p in parents
                    if p.startswith(('exceptions.', '__builtin__.'))]
        value = failure.state['value']
        assert value.path == expected and value.args == (
            result['message'],), label
        frames = failure.state['frames']
        assert frames and all(type(f[0]) is str and type(f[1]) is str
                              for f in frames), label
    elif result['kind'] == 'value':
        assert repr(state['_result']) == result['repr'], label


def _textIsStr(value):
    """No bytes anywhere inside `value` (text came out as str)."""
    if isinstance(value, bytes):
        return False
    if isinstance(value, dict):
        return all(_textIsStr(k) and _textIsStr(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_textIsStr(v) for v in value)
    return True


def test_failure_parents_match_the_python3_fixture(converted):
    copy, _counts = converted
    job = next(j for j in manifest()['jobs']
               if j['label'] == 'completed_parse_failure')
    parents = {}
    for path in (copy, fixtureDir(PY3) / 'Data.fs'):
        with walk.openFileStorageReadOnly(str(path)) as storage:
            state = walk.Snapshot(storage)[job['oid']][1]
            parents[path] = state['_result'].state['parents']
    assert parents[copy] == parents[fixtureDir(PY3) / 'Data.fs'] == [
        'builtins.ValueError', 'builtins.Exception',
        'builtins.BaseException', 'builtins.object']
    # what Twisted's Failure.check compares with
    from twisted.python import reflect
    assert reflect.qual(ValueError) in parents[copy]


def test_nothing_is_imported_or_left_registered(converted):
    # the stage imports no application or zc.async module, and leaves no
    # stand-in module importable for later stages
    assert not [m for m in sys.modules
                if m.split('.')[0] == 'legacyapp' or m.startswith(
                    ('zc.async', 'zc.twist', 'zc.queue', 'zope.bforest'))]
    import zodbupdate.serialize
    assert not zodbupdate.serialize.known_broken_modules
    with pytest.raises(ImportError):
        __import__('zc.twist')


def test_same_form_when_the_application_is_importable(tmp_path, monkeypatch,
                                                       python3Walk):
    copy = copyData(tmp_path)
    shutil.copytree(fixtureDir(PY2) / 'legacyapp', tmp_path / 'legacyapp')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        counts = python2.convertPython2(str(copy), report=quiet)
        assert 'legacyapp.tasks' in sys.modules  # zodbupdate imported it
    finally:
        for name in [n for n in sys.modules if n.split('.')[0] == 'legacyapp']:
            del sys.modules[name]
    assert counts['inline_not_importable']['zc.twist.Failure'] == 2
    assert 'legacyapp.tasks.FeedError' not in counts['inline_not_importable']
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)


# --- dry run, second run, interruption, pack ---------------------------------

def test_dry_run_changes_nothing(tmp_path):
    copy = copyData(tmp_path)
    before, files = digest(copy), sorted(os.listdir(copy.parent))
    lines = []
    counts = python2.convertPython2(str(copy), dry_run=True,
                                    report=lines.append)
    assert digest(copy) == before
    assert sorted(os.listdir(copy.parent)) == files  # no .index, .lock
    assert counts['dry_run'] and counts['transactions'] == 0
    assert not counts['magic_rewritten']
    assert counts['python2_records'] == counts['records'] > 0
    assert lines[0] == 'would rewrite the FileStorage magic FS21 -> FS30'
    assert lines[1].startswith('would convert %d of %d current records'
                               % (counts['records'], counts['records']))
    assert any('zc.async.job.Job' in line for line in lines)
    assert any('stored Failures given Python 3 type names: 2' in line
               for line in lines)


def test_second_run_does_nothing_and_says_so(tmp_path):
    copy = copyData(tmp_path)
    python2.convertPython2(str(copy), report=quiet)
    before = digest(copy)
    for dry_run in (True, False):
        lines = []
        counts = python2.convertPython2(str(copy), dry_run=dry_run,
                                        report=lines.append)
        assert counts['python2_records'] == 0
        assert counts['fixed_python3_records'] == 0
        assert counts['transactions'] == 0 and not counts['magic_rewritten']
        assert lines[0] == ('nothing to convert: %d current records are '
                            'Python 3 pickles' % counts['records'])
        assert digest(copy) == before


def test_the_python3_fixture_needs_nothing(tmp_path):
    copy = copyData(tmp_path, PY3)
    before = digest(copy)
    counts = python2.convertPython2(str(copy), report=quiet)
    assert counts['python2_records'] == counts['transactions'] == 0
    assert counts['old_python2_revisions'] == 0
    assert digest(copy) == before


def test_an_interrupted_conversion_resumes(tmp_path, monkeypatch,
                                           python3Walk):
    copy = copyData(tmp_path)
    votes = []
    real_vote = ZODB.FileStorage.FileStorage.tpc_vote

    def vote(self, transaction):
        votes.append(transaction)
        if len(votes) == 4:
            raise KeyboardInterrupt('killed')
        return real_vote(self, transaction)
    monkeypatch.setattr(ZODB.FileStorage.FileStorage, 'tpc_vote', vote)
    with pytest.raises(KeyboardInterrupt):
        python2.convertPython2(str(copy), report=quiet, batch_size=20)
    monkeypatch.undo()
    # three batches committed, the fourth aborted
    left = walk.walkFileStorage(str(copy))
    assert left.python2_records == left.records - 3 * 20
    lines = []
    counts = python2.convertPython2(str(copy), report=lines.append,
                                    batch_size=20)
    assert counts['python2_records'] == left.records - 60
    assert not counts['magic_rewritten']
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)


def test_pack_drops_the_python2_revisions(tmp_path, python3Walk):
    copy = copyData(tmp_path)
    with walk.openFileStorageReadOnly(str(copy)) as storage:
        snapshot = walk.Snapshot(storage)
        reachable, stored = snapshot.reachable(), set(snapshot.data)
    assert len(stored - reachable) == 2  # two garbage BucketQueues
    counts = python2.convertPython2(str(copy), report=quiet, pack=True)
    with walk.openFileStorageReadOnly(str(copy)) as storage:
        assert set(walk.Snapshot(storage).data) == reachable
    assert counts['packed'] and counts['old_python2_revisions'] == 0
    every = walk.walkFileStorage(str(copy), current_only=False)
    current = walk.walkFileStorage(str(copy))
    assert every.python2_records == 0 and every.transactions == 1
    assert every.records == current.records  # one revision per object
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)


# --- what plain zodbupdate leaves, finished here -----------------------------

def test_finishes_a_database_converted_without_the_fixes(
        tmp_path, monkeypatch, python3Walk):
    # a first run without the parents fix and keeping zodbupdate's
    # ZODB.broken.rebuild calls gives what plain zodbupdate --convert-py3
    # leaves; a second run finishes exactly those records
    copy = copyData(tmp_path)
    monkeypatch.setattr(py2records, 'py3Parents', list)
    monkeypatch.setattr(py2records.Converter, 'broken',
                        lambda self, value, where, memo: value)
    python2.convertPython2(str(copy), report=quiet)
    monkeypatch.undo()
    half = walk.walkFileStorage(str(copy))
    assert half.python2_records == 0
    assert 'ZODB.broken.rebuild' in half.globalPaths()
    lines = []
    counts = python2.convertPython2(str(copy), report=lines.append)
    assert counts['python2_records'] == 0
    assert counts['failure_parents'] == 2
    # the records with a Failure (2 jobs) or a pytz._UTC datetime
    assert counts['fixed_python3_records'] > 2
    assert counts['rebuilt_instances'] > 3
    assert any(line.startswith('would fix') or line.startswith('fixing')
               for line in lines)
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)
    again = python2.convertPython2(str(copy), report=quiet)
    assert again['fixed_python3_records'] == 0


def _patch(path, old, new, count=None):
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) >= 1
    if count is not None:
        assert data.count(old) == count
    path.write_bytes(data.replace(old, new))


def test_an_oid_that_decodes_as_text_stays_bytes(tmp_path):
    # the fixture's one held oid (0x85) is not valid UTF-8 and would stay
    # bytes by luck; 0x05 is: the stage keeps it bytes by position (the
    # job reference in the same record shares the string: it now names
    # oid 5, which does not matter for this check)
    copy = copyData(tmp_path)
    _patch(copy, b'U\x08\x00\x00\x00\x00\x00\x00\x00\x85q\x07',
           b'U\x08\x00\x00\x00\x00\x00\x00\x00\x05q\x07', count=1)
    counts = python2.convertPython2(str(copy), report=quiet)
    assert counts['held_oids'] == 1
    assert _heldKeys(copy) == [(datetime.datetime(2035, 1, 1, tzinfo=UTC),
                                'unnamed', (5).to_bytes(8, 'big'))]


def test_a_held_oid_left_as_text_by_an_earlier_conversion_is_fixed(
        tmp_path, monkeypatch):
    copy = copyData(tmp_path)
    _patch(copy, b'U\x08\x00\x00\x00\x00\x00\x00\x00\x85q\x07',
           b'U\x08\x00\x00\x00\x00\x00\x00\x00\x05q\x07', count=1)
    monkeypatch.setattr(python2, 'heldTrees', lambda storage: set())
    python2.convertPython2(str(copy), report=quiet)
    monkeypatch.undo()
    assert _heldKeys(copy)[0][2] == '\x00' * 7 + '\x05'  # as plain zodbupdate
    counts = python2.convertPython2(str(copy), report=quiet)
    assert counts['fixed_python3_records'] == 1 and counts['held_oids'] == 1
    assert _heldKeys(copy)[0][2] == (5).to_bytes(8, 'big')


# --- text that is not UTF-8 --------------------------------------------------

def test_text_that_is_not_utf8_stops_the_stage_before_writing(tmp_path):
    copy = copyData(tmp_path)
    _patch(copy, b'alice@example.com', b'al\xefce@example.com')
    before = digest(copy)
    with pytest.raises(python2.Python2ConversionError) as info:
        python2.convertPython2(str(copy), report=quiet)
    message = str(info.value)
    assert '\n' not in message
    assert 'persistent.list.PersistentList.data' in message
    assert "b'al\\xefce@example.com'" in message
    assert 'fallback_encodings' in message and 'nothing was written' in message
    assert len(info.value.details) == 1
    assert digest(copy) == before  # the magic FS21 is back
    assert walk.fileMagic(str(copy)) == walk.MAGIC_PY2
    # the dry run reports it the same way
    with pytest.raises(python2.Python2ConversionError):
        python2.convertPython2(str(copy), dry_run=True, report=quiet)
    assert digest(copy) == before


def test_a_fallback_encoding_decodes_it(tmp_path):
    copy = copyData(tmp_path)
    _patch(copy, b'alice@example.com', b'al\xefce@example.com')
    counts = python2.convertPython2(str(copy), report=quiet,
                                    fallback_encodings=['latin-1'])
    assert counts['fallback_decoded'] == {'latin-1': 1}
    job = next(j for j in manifest()['jobs']
               if j['label'] == 'pending_send_email')
    with walk.openFileStorageReadOnly(str(copy)) as storage:
        snapshot = walk.Snapshot(storage)
        args = snapshot.follow(snapshot[job['oid']][1]['args'])['data']
    assert args == ['al\u00efce@example.com']


# --- bad input ---------------------------------------------------------------

def test_not_a_file(tmp_path):
    with pytest.raises(python2.Python2ConversionError,
                       match='is not a file: --from-python2 converts a '
                             'FileStorage file'):
        python2.convertPython2(str(tmp_path / 'missing.fs'), report=quiet)


def test_not_a_filestorage(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_bytes(b'hello, world')
    with pytest.raises(python2.Python2ConversionError,
                       match=r"is not a FileStorage file \(it starts with "
                             r"b'hell'"):
        python2.convertPython2(str(path), report=quiet)
    assert path.read_bytes() == b'hello, world'


def test_a_file_in_use_is_refused_unchanged(tmp_path):
    import zc.lockfile
    copy = copyData(tmp_path)
    before = digest(copy)
    lock = zc.lockfile.LockFile(str(copy) + '.lock')
    try:
        with pytest.raises(python2.Python2ConversionError,
                           match='is in use .*stop the processes using it'):
            python2.convertPython2(str(copy), report=quiet)
    finally:
        lock.close()
    assert digest(copy) == before


def test_a_stored_name_resolving_elsewhere_is_refused(tmp_path, monkeypatch):
    # an alias installed for a zc.async name before the stage: it would
    # rename classes (the next stage's work), so the stage refuses
    import types
    from zcasync import job as zcasync_job
    copy = copyData(tmp_path)
    before = digest(copy)
    fake = types.ModuleType('zc.async.job')
    fake.Job = zcasync_job.Job
    monkeypatch.setitem(sys.modules, 'zc.async.job', fake)
    with pytest.raises(python2.Python2ConversionError,
                       match=r'zc\.async\.job\.Job -> zcasync\.job\.Job.*'
                             r'must run before aliases'):
        python2.convertPython2(str(copy), report=quiet)
    assert digest(copy) == before


# --- Python 2 records the fixture does not have ------------------------------
# written opcode by opcode, as Python 2's cPickle writes them

def _s(data):
    """A Python 2 str (SHORT_BINSTRING)."""
    return b'U' + bytes([len(data)]) + data


def _u(text):
    """A Python 2 unicode (BINUNICODE)."""
    data = text.encode('utf-8')
    return b'X' + len(data).to_bytes(4, 'little') + data


def _global(module, name):
    return b'c' + module + b'\n' + name + b'\n'


def _dict(**items):
    return b'}(' + b''.join(_s(k.encode()) + v for k, v in items.items()) + \
        b'u'


def _temporal(name, payload):
    return (_global(b'datetime', name) + b'(' + _s(payload)
            + _global(b'pytz', b'_UTC') + b')Rt' + b'R')


def _mapping(state, protocol=b''):
    return (protocol + _global(b'persistent.mapping', b'PersistentMapping')
            + b'.' + protocol + _dict(data=state) + b'.')


def _ref(oid):
    return (b'(' + _s(oid.to_bytes(8, 'big'))
            + _global(b'persistent.mapping', b'PersistentMapping') + b'tQ')


def writePython2Records(path, records):
    """A FileStorage holding `records` (oid -> data), magic FS21."""
    from ZODB.Connection import TransactionMetaData
    storage = ZODB.FileStorage.FileStorage(str(path))
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    for oid, data in records.items():
        storage.store(oid.to_bytes(8, 'big'), b'\0' * 8, data, '', txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)
    storage.close()
    for suffix in ('.index', '.lock', '.tmp'):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    with open(path, 'r+b') as f:
        f.write(walk.MAGIC_PY2)


# 2100-01-01 00:00:00.836521: every byte of the payload is valid UTF-8
# (\xc3\xa9 is 'é'), so zodbupdate's --encoding utf-8 reads it as a 9
# character str; the time 12:00:00.836521 likewise
WHEN = b'\x08\x34\x01\x01\x00\x00\x00\x0c\xc3\xa9'
AT = b'\x0c\x00\x00\x0c\xc3\xa9'


def test_payloads_and_text_that_decode_by_chance(tmp_path):
    path = tmp_path / 'Data.fs'
    writePython2Records(path, {
        0: _mapping(_dict(app=_ref(1), other=_ref(2))),
        1: _mapping(_dict(
            when=_temporal(b'datetime', WHEN), at=_temporal(b'time', AT),
            day=_global(b'datetime', b'date') + b'(' + _s(b'\x07\xdb\x06\x0f')
            + b'tR',
            label=_u('caf\u00e9'), name=_s('caf\u00e9'.encode('utf-8')))),
        2: _mapping(b'}(' + _s(b'x') + b'K\x01u', protocol=b'\x80\x02'),
    })
    counts = python2.convertPython2(str(path), report=quiet)
    assert counts['python2_records'] == 3
    with walk.openFileStorageReadOnly(str(path)) as storage:
        snapshot = walk.Snapshot(storage)
        state = snapshot[1][1]['data']
        assert state['when'].args[0] == WHEN
        assert datetime.datetime(WHEN) == datetime.datetime(
            2100, 1, 1, 0, 0, 0, 836521)
        assert state['at'].args[0] == AT
        assert state['day'].path == 'datetime.date'
        assert datetime.date(state['day'].args[0]) == datetime.date(
            2011, 6, 15)
        assert state['label'] == state['name'] == 'caf\u00e9'
        assert snapshot[2][1]['data'] == {'x': 1}
        assert not any(walk.isPython2Record(data)
                       for data in snapshot.data.values())


# --- as zcasync migrate calls it ---------------------------------------------

class _Report:
    def __init__(self):
        self.lines = []

    def line(self, text=''):
        self.lines.append(text)


def test_migrate_stage_takes_the_command_s_uri_and_report(tmp_path,
                                                         python3Walk):
    copy = copyData(tmp_path)
    uri = 'file://%s' % copy
    before = digest(copy)
    report = _Report()
    # a dry run: the later stages get a converted copy to read
    preview = python2.migrateStage(uri, report, True)
    assert digest(copy) == before
    assert report.lines[0] == (
        'would rewrite the FileStorage magic FS21 -> FS30')
    assert preview.startswith('file://') and preview != uri
    assertSameForm(walk.walkFileStorage(python2.pathFromURI(preview)),
                   python3Walk)
    # the conversion: the later stages open the database itself
    assert python2.migrateStage(uri, report, False) == uri
    assertSameForm(walk.walkFileStorage(str(copy)), python3Walk)
    # nothing left to do: a dry run reads the database itself too
    assert python2.migrateStage(uri, report, True) == uri


def test_migrate_stage_errors_are_command_errors(tmp_path):
    from zcasync.cli.common import CommandError, EXIT_URI
    copy = copyData(tmp_path)
    _patch(copy, b'alice@example.com', b'al\xefce@example.com')
    report = _Report()
    with pytest.raises(CommandError) as info:
        python2.migrateStage('file://%s' % copy, report, False)
    assert 'fallback' in str(info.value) and info.value.code != EXIT_URI
    assert len(report.lines) == 1 and 'al\\xefce' in report.lines[0]
    with pytest.raises(CommandError) as info:
        python2.migrateStage('zeo://127.0.0.1', report, False)  # no port
    assert info.value.code == EXIT_URI
    with pytest.raises(CommandError) as info:
        python2.migrateStage('file://elsewhere/Data.fs', report, False)
    assert info.value.code == EXIT_URI and 'names a host' in str(info.value)


def test_converted_copy_for_a_dry_run_preview(tmp_path, python3Walk):
    copy = copyData(tmp_path)
    before = digest(copy)
    with python2.convertedCopy(str(copy), report=quiet) as preview:
        assert walk.fileMagic(preview) == walk.MAGIC_PY3
        assertSameForm(walk.walkFileStorage(preview), python3Walk)
    assert not os.path.exists(preview)
    assert digest(copy) == before


def test_undecodable_text_can_be_kept_as_bytes(tmp_path):
    copy = copyData(tmp_path)
    _patch(copy, b'alice@example.com', b'al\xefce@example.com')
    lines = []
    counts = python2.convertPython2(str(copy), report=lines.append,
                                    keep_undecodable=True)
    assert counts['undecodable_kept'] == 1
    assert '  text that does not decode kept as bytes: 1 values' in lines
    job = next(j for j in manifest()['jobs']
               if j['label'] == 'pending_send_email')
    with walk.openFileStorageReadOnly(str(copy)) as storage:
        snapshot = walk.Snapshot(storage)
        args = snapshot.follow(snapshot[job['oid']][1]['args'])['data']
    assert args == [b'al\xefce@example.com']
    # and a second run does not see it again
    assert python2.convertPython2(str(copy), report=quiet)[
        'python2_records'] == 0


def test_blob_records_are_left_alone(tmp_path):
    # zodbupdate does not rewrite blob records (they load on Python 3)
    path = tmp_path / 'Data.fs'
    writePython2Records(path, {
        0: _mapping(_dict(blob=(b'(' + _s((1).to_bytes(8, 'big'))
                                + _global(b'ZODB.blob', b'Blob') + b'tQ'))),
        1: _global(b'ZODB.blob', b'Blob') + b'.N.',
    })
    counts = python2.convertPython2(str(path), report=quiet)
    assert counts['blob_records_kept'] == 1
    assert counts['python2_records'] == 1  # the root
    lines = []
    again = python2.convertPython2(str(path), report=lines.append)
    assert again['python2_records'] == again['transactions'] == 0
    assert lines[0].startswith('nothing to convert')
