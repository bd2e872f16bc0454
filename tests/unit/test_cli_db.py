"""Database URIs as a new user writes them: ``postgresql://`` (libpq's
spelling), a ZEO URI without a port, a server that refuses connections,
and passwords that must not be echoed in errors."""
import pytest

from zcasync import cli
from zcasync.cli import db as cli_db
from zcasync.cli.common import EXIT_URI, EXIT_UNAVAILABLE

from test_cli_support import run, freePort


def errorLine(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_postgresql_is_another_name_for_postgres(capsys):
    assert cli_db.scheme('postgresql://u@h:1/db') == 'postgres'
    assert cli_db.scheme('PostgreSQL://u@h:1/db') == 'postgres'
    port = freePort()
    code, out, err = run(capsys, 'status', '--db',
                         'postgresql://postgres@127.0.0.1:%d/x' % port)
    assert code == EXIT_UNAVAILABLE, err  # resolved; nobody listens
    assert 'cannot reach the PostgreSQL server at 127.0.0.1:%d' % port in \
        errorLine(err)


def test_a_refused_connection_fails_at_once_for_short_commands(capsys):
    port = freePort()
    code, out, err = run(capsys, 'jobs', '--db', 'zeo://127.0.0.1:%d' % port)
    assert code == EXIT_UNAVAILABLE
    line = errorLine(err)
    assert '(Connection refused)' in line
    assert 'waited' not in line
    # long-running commands wait for a server that is starting
    parser = cli.buildParser({})
    assert parser.parse_args(['jobs', '--db', 'x']).connect_timeout == 0
    assert parser.parse_args(['worker', '--db', 'x']).connect_timeout == 10
    assert parser.parse_args(['dashboard', '--db', 'x']).connect_timeout \
        == 10


def test_a_zeo_uri_needs_a_port(capsys):
    code, out, err = run(capsys, 'status', '--db', 'zeo://127.0.0.1')
    assert code == EXIT_URI
    line = errorLine(err)
    assert 'zeo://127.0.0.1 has no port' in line
    assert 'zeo://127.0.0.1:8100' in line
    assert '9991' not in line


@pytest.mark.parametrize('uri', [
    'postgres://user:pw-one@127.0.0.1:1/x?password=s3cret&bogus=1',
    'file:///tmp/x.fs?password=s3cret&bogus=1',
])
def test_passwords_are_not_echoed(capsys, uri):
    code, out, err = run(capsys, 'status', '--db', uri)
    assert code == EXIT_URI
    line = errorLine(err)
    assert 'unknown option(s)' in line
    assert 's3cret' not in line and 'pw-one' not in line
    assert 'password=***' in line


def test_redact():
    assert cli_db.redact('postgres://u:p@h:1/d?a=1&my_password=x') == \
        'postgres://u:***@h:1/d?a=1&my_password=***'
    assert cli_db.redact('zeo://h:1') == 'zeo://h:1'


def test_keep_history_is_read_from_the_uri():
    assert cli_db._keepsHistory('postgres://h/d')
    assert cli_db._keepsHistory('postgres://h/d?keep_history=true')
    assert not cli_db._keepsHistory('postgres://h/d?keep_history=false')
    assert not cli_db._keepsHistory('postgres://h/d?keep_history=0')
