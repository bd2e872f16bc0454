"""The ``--from-python2`` stage of ``zcasync migrate`` (a seam: not yet
implemented here).

``convertPython2(uri, report, dry_run)`` runs first, before the database
is opened as ZODB, when ``zcasync migrate --from-python2`` is given.  Its
contract with the stages that follow (``zcasync.migrate.pipeline``):

- `uri` is the ``--db`` URI as given (e.g. ``file:///srv/Data.fs`` naming
  a Python 2 FileStorage, magic ``FS21``); `report` is the
  ``zcasync.migrate.pipeline.Report`` to print to (``report.line(text)``);
- it returns the URI the later stages open: `uri` itself, or (in a dry
  run) the URI of a Python 3 copy it made to show what the later stages
  would convert (it removes that copy itself, e.g. at exit), or None to
  stop after its own report (a dry run that cannot show more);
- with `dry_run` it changes nothing (not one byte of the file) and
  reports what it would convert;
- otherwise it leaves, at the same URI, a database that ``ZODB.DB`` opens
  on Python 3 whose current records are Python 3 pickles with the
  zc.async class paths unchanged (what ``zodbupdate --convert-py3`` gives,
  plus whatever it does not do: Python 2 names, byte strings that are
  text, Failure parents such as ``exceptions.ValueError``), i.e. the form
  of the fixture ``zc_async_1_5``; the later stages take it from there;
- run on a database that is already Python 3 it does nothing and says
  so (a migration resumed after an interruption runs it again);
- problems are raised as ``zcasync.cli.common.CommandError`` (one line,
  naming the remedy), leaving the database as it was.
"""
from __future__ import annotations

from typing import Any

from zcasync.cli.common import CommandError, EXIT_FORMAT


def convertPython2(uri: str, report: Any, dry_run: bool) -> str | None:
    """Convert the Python 2 database at `uri` to Python 3 pickles (see the
    module docstring)."""
    raise CommandError(
        '--from-python2 is not available in this version of zcasync: '
        'convert the database with "zodbupdate --convert-py3" first, then '
        'run zcasync migrate without --from-python2', EXIT_FORMAT)
