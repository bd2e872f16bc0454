"""Helpers shared by the migration tests: the zc.async 1.5 fixture
database (``shared/fixtures/zc_async_1_5`` beside the repository, or
``$ZCASYNC_FIXTURES/zc_async_1_5``), copied before use, and its
application package ``legacyapp`` made importable."""
import contextlib
import io
import json
import os
import pathlib
import shutil
import sys

FIXTURE = 'zc_async_1_5'


def fixtureDir(name=FIXTURE):
    """The fixture's directory (never written: tests use copyFixture)."""
    env = os.environ.get('ZCASYNC_FIXTURES')
    candidates = [pathlib.Path(env) / name] if env else []
    here = pathlib.Path(__file__).resolve()
    candidates.extend(parent / 'shared' / 'fixtures' / name
                      for parent in here.parents)
    for path in candidates:
        if (path / 'Data.fs').exists():
            return path
    raise AssertionError(
        'the fixture %s is missing: expected shared/fixtures/%s beside the '
        'repository (or set ZCASYNC_FIXTURES)' % (name, name))


def copyFixture(target, name=FIXTURE):
    """Copy the fixture into the directory `target`; returns the copy's
    directory (Data.fs, MANIFEST.json, legacyapp/), writable."""
    copy = pathlib.Path(target) / name
    shutil.copytree(fixtureDir(name), copy)
    for path in [copy] + list(copy.rglob('*')):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def manifest(copy):
    with open(copy / 'MANIFEST.json') as f:
        return json.load(f)


@contextlib.contextmanager
def legacyApp(copy):
    """``legacyapp`` importable from the copy `copy` (and forgotten
    afterwards)."""
    sys.path.insert(0, str(copy))
    try:
        yield
    finally:
        sys.path.remove(str(copy))
        for name in [n for n in sys.modules
                     if n == 'legacyapp' or n.startswith('legacyapp.')]:
            del sys.modules[name]


def fileURI(copy):
    return 'file://%s' % (copy / 'Data.fs')


def runCommand(*argv, environ=None):
    """(exit code, stdout, stderr) of ``zcasync ARGV`` run in-process."""
    from zcasync import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv), environ=environ or {})
    return code, out.getvalue(), err.getvalue()
