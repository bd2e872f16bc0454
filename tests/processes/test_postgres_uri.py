"""postgres:// URIs without a user or password: RelStorage's own zodburi
resolver sends the literal string 'None' for them; the zcasync command
leaves them out so that libpq's defaults (here PGUSER) apply."""
import json
import subprocess

import pytest

from tests.processes.conftest import ROOT, zcasync, childEnvironment


def status(uri, **env):
    environment = childEnvironment()
    environment.update(env)
    return subprocess.run(zcasync('status', '--json', '--db', uri),
                          cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=60)


def test_a_uri_without_user_uses_libpq_defaults(postgres):
    import zodburi
    bare = postgres.replace('postgres@', '', 1)
    factory, dbkw = zodburi.resolve_uri(bare)
    with pytest.raises(Exception) as info:
        factory().close()  # RelStorage's resolver: user 'None'
    assert '"None"' in str(info.value)

    done = status(bare, PGUSER='postgres')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['queues'] == []
    with_password = postgres.replace('postgres@', 'postgres:any%20thing@', 1)
    done = status(with_password)
    assert done.returncode == 0, done.stderr  # trust auth ignores it


def test_an_unknown_postgres_database_is_a_one_line_error(postgres):
    uri = postgres.split('?')[0] + '_missing'
    done = status(uri)
    assert done.returncode == 4
    [line] = done.stderr.strip().splitlines()
    assert line.startswith('zcasync status: error: cannot open the database')
    assert 'does not exist' in line


def test_a_keep_history_mismatch_says_which_option_to_change(postgres):
    # the fixture's database is history-free; create its schema
    done = status(postgres)
    assert done.returncode == 0, done.stderr
    preserving = postgres.split('?')[0]  # RelStorage's default: history
    done = status(preserving)
    assert done.returncode == 4
    [line] = done.stderr.strip().splitlines()
    assert 'holds a history-free RelStorage schema' in line
    assert 'add ?keep_history=false' in line
    assert 'InvalidForeignKey' not in line


def test_postgresql_scheme_opens_the_database(postgres):
    done = status(postgres.replace('postgres://', 'postgresql://', 1))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['queues'] == []
