"""``zcasync migrate --from-python2`` on the zc.async 1.5 fixture written on
Python 2: the whole migration gives the database the Python 3 fixture
gives, a dry run changes nothing, and the worker checks of every MANIFEST
entry (test_migrate_run) pass on it.

These tests need the migration command (``zcasync.migrate.pipeline``,
from the branch that builds it) and are skipped without it."""
import contextlib
import io
import json
import os
import shutil
import sys

import pytest

from zcasync.migrate import python2, walk

from test_migrate_python2 import (
    PY2, PY3, assertSameForm, copyData, digest, fixtureDir)

pytest.importorskip('zcasync.migrate.pipeline')


def runMigrate(folder, *extra):
    """(exit code, stdout, stderr) of zcasync migrate on folder/Data.fs,
    with the fixture's legacyapp importable."""
    from zcasync import cli
    shutil.copytree(fixtureDir(PY2) / 'legacyapp', folder / 'legacyapp',
                    dirs_exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    sys.path.insert(0, str(folder))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(['migrate', '--db', 'file://%s/Data.fs' % folder,
                             '--import', 'legacyapp.tasks'] + list(extra),
                            environ={})
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules
                     if n.split('.')[0] == 'legacyapp']:
            del sys.modules[name]
    return code, out.getvalue(), err.getvalue()


def test_migrating_the_python2_fixture_gives_the_python3_result(tmp_path):
    old = copyData(tmp_path, PY2)
    new = copyData(tmp_path, PY3)
    code2, out2, err2 = runMigrate(old.parent, '--from-python2')
    code3, out3, err3 = runMigrate(new.parent)
    assert (code2, err2) == (0, '') and (code3, err3) == (0, '')
    # after the Python 2 stage's lines, the same report
    lines2, lines3 = out2.splitlines(), out3.splitlines()
    assert lines2[1] == 'rewrote the FileStorage magic FS21 -> FS30'
    start = lines2.index(lines3[1])
    assert lines2[start:] == lines3[1:]
    assertSameForm(walk.walkFileStorage(str(old)),
                   walk.walkFileStorage(str(new)))


def test_dry_run_from_python2_changes_nothing(tmp_path):
    old = copyData(tmp_path, PY2)
    new = copyData(tmp_path, PY3)
    before, files = digest(old), sorted(os.listdir(old.parent))
    code, out, err = runMigrate(old.parent, '--from-python2', '--dry-run')
    assert (code, err) == (0, '')
    assert digest(old) == before
    assert sorted(os.listdir(old.parent)) == files + ['legacyapp']
    assert 'would convert 149 of 149 current records' in out
    # the later stages previewed a converted copy: the same survey
    _code, out3, _err = runMigrate(new.parent, '--dry-run')
    survey = out3.splitlines()[1:]
    assert out.splitlines()[-len(survey):] == survey


def test_each_manifest_job_after_migrating_the_converted_fixture(
        tmp_path, monkeypatch):
    # test_migrate_run's checks, on the Python 2 fixture after this stage
    # (its MANIFEST with the Python 3 names it lists beside the Python 2
    # ones)
    run = pytest.importorskip('test_migrate_run')
    fixtures = tmp_path / 'fixtures'
    folder = fixtures / PY3
    shutil.copytree(fixtureDir(PY2), folder)
    for path in [folder] + list(folder.rglob('*')):
        path.chmod(0o755 if path.is_dir() else 0o644)
    python2.convertPython2(str(folder / 'Data.fs'), report=lambda line: None)
    for path in folder.glob('Data.fs.*'):
        path.unlink()
    data = json.loads((folder / 'MANIFEST.json').read_text())
    _python3Names(data)
    (folder / 'MANIFEST.json').write_text(json.dumps(data))
    monkeypatch.setenv('ZCASYNC_FIXTURES', str(fixtures))
    work = tmp_path / 'run'
    work.mkdir()
    run.test_each_manifest_job_after_migration(work, monkeypatch)


def _python3Names(value):
    """The Python 3 names the Python 2 MANIFEST gives beside its own."""
    if isinstance(value, dict):
        if 'python3_path' in value:
            value['path'] = value.pop('python3_path')
        if 'python3_type' in value:
            value['type'] = value.pop('python3_type')
        if value.get('repr') == 'datetime.timedelta(0, 7200)':
            value['repr'] = 'datetime.timedelta(seconds=7200)'
        for item in value.values():
            _python3Names(item)
    elif isinstance(value, list):
        for item in value:
            _python3Names(item)
