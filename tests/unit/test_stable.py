"""The on-disk format's names (``zcasync.stable``): every declared name
resolves to what it declares, and a database written with every feature
refers to no name that is not declared (so a new stored class or function
must be declared, and a declared one may not disappear)."""
import datetime
import pickle
import struct

import pytest
import transaction
import ZODB
import ZODB.Connection
import ZODB.FileStorage

import stable_support
from zcasync import agent
from zcasync import composite
from zcasync import interfaces
from zcasync import queuekeys
from zcasync import retry
from zcasync import stable
from zcasync import utils
from zcasync.job import Job
from zcasync.web import api


@pytest.fixture(scope='module')
def everything(tmp_path_factory):
    """(DB, connection) of a database written with every feature."""
    import zope.component.testing
    import zcasync.configure
    zope.component.testing.setUp()
    zcasync.configure.base()
    path = tmp_path_factory.mktemp('stable') / 'Data.fs'
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    conn = stable_support.writeEverything(db)
    zope.component.testing.tearDown()
    yield db, conn
    conn.close()
    db.close()


# --- the declarations ------------------------------------------------------

def test_every_declared_name_resolves():
    assert stable.missingNames() == []
    for name in stable.allNames():
        ob = stable.resolve(name)
        assert ob is not None, name


def test_public_aliases_are_the_stored_objects():
    assert stable.PUBLIC_ALIASES
    for private, public in stable.PUBLIC_ALIASES.items():
        assert stable.resolve(private) is stable.resolve(public), private
    assert composite.runSerial is composite._runSerial
    assert utils.newFailure is utils._newFailure
    assert Job.innerCompleted is Job._innerCompleted


def test_stored_methods_are_methods_of_their_class():
    for owner, methods in stable.STORED_METHODS.items():
        cls = stable.resolve(owner)
        for method in methods:
            assert callable(getattr(cls, method)), (owner, method)


def test_a_name_that_disappears_is_reported(monkeypatch):
    monkeypatch.delattr(composite, '_runSerial')
    monkeypatch.delattr(retry, 'NeverRetry')
    missing = stable.missingNames()
    assert 'zcasync.composite:_runSerial' in missing
    assert 'zcasync.retry:NeverRetry' in missing
    with pytest.raises(AttributeError):
        stable.resolve('zcasync.composite:_runSerial')


def test_a_stored_method_that_disappears_is_reported(monkeypatch):
    from zcasync import lifecycle
    monkeypatch.delattr(lifecycle.JobLifeCycle, '_innerCompleted')
    assert 'zcasync.job:Job._innerCompleted' in stable.missingNames()


def test_a_module_that_disappears_is_reported(monkeypatch):
    monkeypatch.setattr(stable, 'EARLIER_NAMES',
                        ('zcasync.nosuchmodule:Thing',))
    assert stable.missingNames() == ['zcasync.nosuchmodule:Thing']


def test_vocabularies_match_the_code():
    assert {name: getattr(interfaces, name)
            for name in stable.STORED_STATUSES} == stable.STORED_STATUSES
    assert stable.ROOT_KEYS['KEY'] == interfaces.KEY
    assert stable.ROOT_KEYS['FORMAT_KEY'] == stable.FORMAT_KEY
    for policy in (retry.RetryCommonFourTimes, retry.RetryCommonForever,
                   retry.NeverRetry):
        assert policy(Job(len)).key in stable.ANNOTATION_KEYS
    assert retry.RetryWithBackoff()(Job(len)).key in stable.ANNOTATION_KEYS
    for key in (api.RETRY_OF, api.RETRIED_AS, api.PROGRESS,
                api.STATUS_TEXT):
        assert key in stable.ANNOTATION_KEYS


def test_key_layouts_match_the_code():
    layouts = stable.KEY_LAYOUTS
    for name, value in layouts.items():
        module, attribute = name.split('.', 1)
        ob = {'queuekeys': queuekeys, 'agent': agent}[module]
        for part in attribute.split('.'):
            ob = getattr(ob, part)
        if isinstance(ob, struct.Struct):
            ob = ob.format
        assert ob == value, name


def test_key_bytes_as_declared():
    oid = b'\x00' * 7 + b'\x2a'
    # lane 3, inverted priority, micros, oid
    assert queuekeys.dueKey(queuekeys.DUE, 5, 1000, oid) == (
        b'\x03' + (2 ** 31 - 1 - 5).to_bytes(4, 'big') +
        (1000).to_bytes(8, 'big') + oid)
    assert queuekeys.dueKey(queuekeys.FRONT, -1, 7, oid)[:5] == (
        b'\x02' + (2 ** 31).to_bytes(4, 'big'))
    # lane 4, begin_after micros, inverted priority, oid
    assert queuekeys.scheduledKey(2000, 0, oid) == (
        b'\x04' + (2000).to_bytes(8, 'big') +
        (2 ** 31 - 1).to_bytes(4, 'big') + oid)
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    assert agent._completedPrefix(when) == (
        2 ** 64 - 1 - utils.toMicros(when)).to_bytes(8, 'big')


# --- the walk --------------------------------------------------------------

def test_walker_reads_every_protocol():
    value = [composite._runSerial, utils.ReprString('x'),
             datetime.timedelta(1), composite._runSerial]
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        found = stable.globalsIn(pickle.dumps(value, protocol=protocol))
        assert ('zcasync.composite', '_runSerial') in found, protocol
        assert ('zcasync.utils', 'ReprString') in found, protocol
        assert ('datetime', 'timedelta') in found, protocol
    # two pickles in one record (class, then state)
    data = pickle.dumps(Job, 3) + pickle.dumps({'a': agent.chooseFirst}, 3)
    assert stable.globalsIn(data) == {('zcasync.job', 'Job'),
                                      ('zcasync.agent', 'chooseFirst')}


def test_walk_finds_only_declared_names(everything):
    db, conn = everything
    found = stable.storageGlobals(db.storage)
    assert stable.undeclared(found, stable_support.APPLICATION) == []
    # the application's names are there (the walk sees callables)
    assert ('stable_support', 'add') in found
    assert ('stable_gone', 'vanished') in found


def test_walk_exercises_every_declared_name(everything):
    """Each declared stored name is found in the features database: a
    declaration no feature writes is stale, or a feature is missing from
    stable_support."""
    db, conn = everything
    found = {'%s:%s' % pair for pair in stable.storageGlobals(db.storage)}
    declared = (stable.PERSISTENT_CLASSES + stable.STORED_CLASSES +
                stable.STORED_FUNCTIONS + stable.LIBRARY_NAMES)
    assert sorted(set(declared) - found) == []


def test_undeclared_names_are_reported(everything):
    db, conn = everything
    found = stable.storageGlobals(db.storage)
    found[('zcasync.somewhere', 'NewClass')] = 1
    assert stable.undeclared(found, stable_support.APPLICATION) == [
        'zcasync.somewhere:NewClass']
    assert 'stable_support:add' in stable.undeclared(found)


def test_stored_vocabularies(everything):
    db, conn = everything
    seen = stable.storedVocabulary(conn)
    assert seen['root keys'] == set(stable.ROOT_KEYS.values())
    assert seen['methods'] == set(stable.STORED_METHODS['zcasync.job:Job'])
    assert seen['statuses'] <= set(stable.STORED_STATUSES.values())
    assert seen['statuses'] >= {interfaces.NEW, interfaces.COMPLETED,
                                interfaces.ACTIVE}
    zcasync_keys = {k for k in seen['annotation keys']
                    if not k.startswith('app.')}
    assert zcasync_keys <= set(stable.ANNOTATION_KEYS)
    assert {'zcasync.schedule', 'zcasync.tick', 'zcasync.stop',
            'zcasync.snoozes', 'zcasync.retry_of', 'zcasync.retried_as',
            'zcasync.RetryWithBackoff', 'zcasync.NeverRetry',
            'zcasync.RetryCommonFourTimes'} <= zcasync_keys
    assert seen['retry counts'] <= set(stable.RETRY_COUNT_KEYS)
    assert {'interruption', 'attempts', 'next run'} <= seen['retry counts']
    lanes = {key[0] for key in seen['queue keys']}
    assert lanes <= {queuekeys.FRONT, queuekeys.DUE, queuekeys.SCHEDULED}
    assert {queuekeys.DUE, queuekeys.SCHEDULED} <= lanes


# --- private names written, public names read ------------------------------

def _rewrite(db, oid, old, new):
    """Store the record `oid` again with `old` bytes replaced by `new` (as
    a writer using the public names would have stored it)."""
    storage = db.storage
    data, serial = storage.load(oid)
    assert old in data
    meta = ZODB.Connection.TransactionMetaData()
    storage.tpc_begin(meta)
    storage.store(oid, serial, data.replace(old, new), '', meta)
    storage.tpc_vote(meta)
    storage.tpc_finish(meta)


def test_records_name_the_private_names_and_load_by_the_public_ones(
        tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    main = composite.serial(Job(stable_support.add, 1))
    conn.root()['main'] = main
    waiting = Job(stable_support.add, 1)
    conn.root()['waiting'] = waiting
    waiting._callable_root, waiting._callable_name = main, '_innerCompleted'
    main._result = utils.makeFailure(ValueError('kept'))
    tm.commit()
    data = db.storage.load(main._p_oid)[0]
    found = stable.globalsIn(data)
    # today's writers name the private functions
    assert ('zcasync.composite', '_runSerial') in found
    assert ('zcasync.utils', '_newFailure') in found
    assert ('zcasync.composite', 'runSerial') not in found
    main_oid, waiting_oid = main._p_oid, waiting._p_oid
    conn.close()
    # a record naming the public aliases loads as the same objects
    _rewrite(db, main_oid, b'czcasync.composite\n_runSerial\n',
             b'czcasync.composite\nrunSerial\n')
    _rewrite(db, main_oid, b'czcasync.utils\n_newFailure\n',
             b'czcasync.utils\nnewFailure\n')
    _rewrite(db, waiting_oid, b'X\x0f\x00\x00\x00_innerCompleted',
             b'X\x0e\x00\x00\x00innerCompleted')
    db.close()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    conn = db.open(transaction_manager=tm)
    main = conn.get(main_oid)
    assert ('zcasync.composite', 'runSerial') in stable.globalsIn(
        db.storage.load(main_oid)[0])
    assert main.callable is composite._runSerial
    assert main.result.type is ValueError
    assert main.result.getErrorMessage() == 'kept'
    waiting = conn.get(waiting_oid)
    assert waiting._callable_name == 'innerCompleted'
    assert waiting.callable.__func__ is Job._innerCompleted
    tm.abort()
    conn.close()
    db.close()


def test_every_record_loads_in_a_fresh_connection(everything):
    """Unpickled by ZODB (classes resolved, ``__setstate__`` run), no
    record is broken but the job whose module the writer lost."""
    import ZODB.broken
    db, conn = everything
    tm = transaction.TransactionManager()
    fresh = db.open(transaction_manager=tm)
    fresh.cacheMinimize()
    broken = []
    try:
        oids = {record.oid for txn in db.storage.iterator()
                for record in txn if record.data}
        for oid in sorted(oids):
            ob = fresh.get(oid)
            ob._p_activate()
            if isinstance(ob, ZODB.broken.Broken):
                broken.append(type(ob).__name__)
            elif isinstance(ob, Job) and isinstance(
                    ob._callable_root, type) and issubclass(
                    ob._callable_root, ZODB.broken.Broken):
                broken.append(ob._callable_root.__name__)
    finally:
        tm.abort()
        fresh.close()
    assert broken == ['vanished']
