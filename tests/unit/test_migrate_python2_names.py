"""Pieces of the Python 2 stage (zcasync.migrate.python2) and of the record
walker (zcasync.migrate.walk) that need no database."""
import datetime
import inspect
import pickle

import pytest
from twisted.python import reflect

from zcasync.migrate import python2, walk


@pytest.mark.parametrize('error', [
    ValueError, OSError, KeyError, UnicodeDecodeError, ZeroDivisionError])
def test_parents_become_what_python3_twisted_stores(error):
    # Python 2's MRO names of these builtins -> Python 3's own list
    python2_names = {
        ValueError: ['exceptions.ValueError', 'exceptions.StandardError'],
        OSError: ['exceptions.IOError', 'exceptions.EnvironmentError',
                  'exceptions.StandardError'],
        KeyError: ['exceptions.KeyError', 'exceptions.LookupError',
                   'exceptions.StandardError'],
        UnicodeDecodeError: ['exceptions.UnicodeDecodeError',
                             'exceptions.UnicodeError',
                             'exceptions.ValueError',
                             'exceptions.StandardError'],
        ZeroDivisionError: ['exceptions.ZeroDivisionError',
                            'exceptions.ArithmeticError',
                            'exceptions.StandardError'],
    }[error] + ['exceptions.Exception', 'exceptions.BaseException',
                '__builtin__.object']
    expected = [reflect.qual(c) for c in inspect.getmro(error)]
    assert python2.py3Parents(python2_names) == expected


def test_other_names_are_kept_or_resolved_in_the_standard_library():
    assert python2.py3Parents(
        ['legacyapp.tasks.FeedError', 'exceptions.Exception',
         'exceptions.BaseException', '__builtin__.object']) == [
        'legacyapp.tasks.FeedError', 'builtins.Exception',
        'builtins.BaseException', 'builtins.object']
    assert python2.py3TypeName('socket.error') == 'builtins.OSError'
    assert python2.py3TypeName('urllib2.URLError') == 'urllib.error.URLError'
    # a name that no longer exists keeps its Python 3 module
    assert python2.py3TypeName('exceptions.NoSuchThing') == \
        'builtins.NoSuchThing'
    # application modules are not imported
    assert python2.py3TypeName('no_such_app.errors.Oops') == \
        'no_such_app.errors.Oops'


def test_path_from_uri():
    assert python2.pathFromURI('file:///srv/app/Data.fs') == \
        '/srv/app/Data.fs'
    assert python2.pathFromURI('file:///srv/my%20app/Data.fs') == \
        '/srv/my app/Data.fs'
    assert python2.pathFromURI('/srv/app/Data.fs') == '/srv/app/Data.fs'
    assert python2.pathFromURI('Data.fs') == 'Data.fs'


@pytest.mark.parametrize('uri, words', [
    ('zeo://127.0.0.1:8100', ['convertPython2Storage', 'zeo://',
                              'stop it', 'file:///path/Data.fs']),
    ('postgres://postgres@localhost/db', ['convertPython2Storage',
                                          'postgres://']),
])
def test_other_databases_get_the_remedy(uri, words):
    with pytest.raises(python2.Python2ConversionError) as info:
        python2.pathFromURI(uri)
    message = str(info.value)
    assert uri in message and '\n' not in message
    for word in words:
        assert word in message.lower() or word in message


def test_file_uri_with_a_host_is_refused():
    with pytest.raises(python2.Python2ConversionError,
                       match='names a host; use file:///absolute/path'):
        python2.pathFromURI('file://elsewhere/srv/Data.fs')


# --- walk --------------------------------------------------------------------

def test_python2_records_are_told_by_their_opcodes():
    assert walk.isPython2Record(b'(dp1\n.')  # protocol 0
    assert walk.isPython2Record(b'}q\x01U\x03abcq\x02.')  # protocol 1
    assert walk.isPython2Record(b'\x80\x02}q\x01.')  # protocol 2
    # zodbpickle's protocol 3 on Python 2 keeps str as a byte string
    assert walk.isPython2Record(b'\x80\x03U\x02abq\x00.')
    assert not walk.isPython2Record(pickle.dumps({'a': b'\x00'}, 3))
    assert not walk.isPython2Record(b'')


def test_read_record_imports_nothing():
    record = (b'cno_such.module\nThing\nq\x01.'
              b'}q\x02(U\x04nameq\x03U\x05helloq\x04U\x04whenq\x05'
              b'cdatetime\ndatetime\nq\x06U\n\x07\xdb\x06\x0f\t\x00\x00'
              b'\x00\x00\x00cpytz\n_UTC\nq\x07)Rq\x08\x86Rq\t'
              b'U\x03refq\n(U\x08\x00\x00\x00\x00\x00\x00\x00\x05'
              b'cno_such.module\nOther\nq\x0btQu.')
    klass, state = walk.readRecord(record)
    assert klass == 'no_such.module.Thing'
    assert state['name'] == 'hello'
    when = state['when']
    assert when.path == 'datetime.datetime'
    payload, tz = when.args
    assert datetime.datetime(payload) == datetime.datetime(
        2011, 6, 15, 9, 0)
    assert tz.path == 'pytz._UTC' and tz.args == ()
    assert state['ref'] == walk.Ref((5).to_bytes(8, 'big'),
                                    'no_such.module.Other')
    assert walk.kindOf(state['ref']) == 'ref:no_such.module.Other'
    assert list(walk.refsIn(state)) == [(5).to_bytes(8, 'big')]
