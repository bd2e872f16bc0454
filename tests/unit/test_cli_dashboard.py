"""``zcasync dashboard`` and ``worker --http``: options, the token from
the environment, and clear errors before anything is served."""
import pytest

from zcasync import cli
from zcasync.cli.common import CommandError, EXIT_USAGE, EXIT_UNAVAILABLE
from zcasync.cli import dashboard as web_cli

from test_cli_support import run, fileUri


def test_the_token_comes_from_the_option_or_the_environment():
    parser = cli.buildParser({'ZCASYNC_DASHBOARD_TOKEN': 'from-env'})
    args = parser.parse_args(['dashboard', '--db', 'memory://'])
    assert args.token == 'from-env'
    assert args.address == '127.0.0.1:8080'
    args = parser.parse_args(['dashboard', '--db', 'memory://', '--token',
                              'given'])
    assert args.token == 'given'
    args = cli.buildParser({}).parse_args(['dashboard', '--db', 'memory://'])
    assert args.token is None
    help_text = cli.buildParser({})._subparsers._group_actions[0].choices[
        'dashboard'].format_help()
    assert '[env ZCASYNC_DASHBOARD_TOKEN]' in ' '.join(help_text.split())


def test_a_bad_address_is_refused_before_the_database_opens(capsys,
                                                            tmp_path):
    code, out, err = run(capsys, 'dashboard', '--db', fileUri(
        tmp_path / 'missing.fs'), '--address', 'localhost')
    assert code == EXIT_USAGE
    assert err.strip() == (
        "zcasync dashboard: error: --address 'localhost' is not HOST:PORT "
        "(e.g. 127.0.0.1:8080; port 0 picks a free port)")


def test_a_missing_database_file_is_not_created(capsys, tmp_path):
    code, out, err = run(capsys, 'dashboard', '--db', fileUri(
        tmp_path / 'missing.fs'), '--address', '127.0.0.1:0')
    assert code == EXIT_UNAVAILABLE
    assert 'no database file at' in err
    assert not (tmp_path / 'missing.fs').exists()


@pytest.mark.parametrize('address', ['', '8080', 'host:port', ':80',
                                     '127.0.0.1:70000'])
def test_a_workers_http_address_is_checked(address):
    with pytest.raises(CommandError) as e:
        web_cli.serveInWorker(None, None, address, environ={})
    assert e.value.code == EXIT_USAGE
    assert e.value.message.startswith('--http %r is not HOST:PORT'
                                      % address)
