"""``zcasync migrate``: convert a zc.async 1.x database for zcasync, in
place (see ``zcasync.migrate``).

It reports what it will convert, then (unless ``--dry-run``) converts in
bounded transactions, and prints a summary.  Run again after an
interruption, it goes on where it stopped; run on a migrated database, it
says there is nothing to do.  Stop every zc.async process first, and back
the database up.
"""
from __future__ import annotations

import sys
import urllib.parse

from zcasync.cli import db as cli_db
from zcasync.cli.common import (
    CommandError, EXIT_FORMAT, EXIT_IMPORT, EXIT_OK, importModules)


def readOnlyURI(uri: str) -> str:
    """`uri` opened read-only where the scheme allows (dry runs)."""
    scheme = cli_db.scheme(uri)
    if scheme not in ('file', 'zeo'):
        return uri
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != 'read_only']
    query.append(('read_only', 'true'))
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query)))


def runMigrate(args, stream=None, on_batch=None) -> int:
    try:
        import zodbupdate.serialize  # noqa: F401
    except ImportError:
        raise CommandError(
            'zcasync migrate needs zodbupdate: pip install "zcasync[migrate]"',
            EXIT_IMPORT) from None
    from zcasync.migrate import pipeline, python2
    stream = stream if stream is not None else sys.stdout
    report = pipeline.Report(stream)
    if args.batch < 1:
        raise CommandError('--batch must be at least 1, not %d'
                           % args.batch, 2)
    importModules(args.imports or ())
    where = cli_db.redact(args.db)
    report.line('zcasync migrate: %s%s' % (
        where, ' (dry run: nothing will be changed)' if args.dry_run
        else ''))
    uri = args.db
    if args.from_python2:
        uri = python2.migrateStage(args.db, report, args.dry_run,
                                    args.connect_timeout)
        if uri is None:
            report.line('dry run: nothing was changed')
            return EXIT_OK
    uri = readOnlyURI(uri) if args.dry_run else uri
    db = cli_db.openDatabase(uri, args.connect_timeout, create=False)
    try:
        migration = pipeline.Migration(db, report, batch=args.batch,
                                       on_batch=on_batch)
        try:
            return _migrate(migration, report, args.dry_run)
        finally:
            migration.close()
    finally:
        db.close()


def _migrate(migration, report, dry_run) -> int:
    from zcasync.migrate import pipeline
    state = migration.state()
    if state == 'empty':
        raise CommandError(
            'no zc.async data in this database (no root[\'zc.async\']): '
            'nothing to migrate; check --db', EXIT_FORMAT)
    if state == 'done':
        report.line('nothing to do: the database holds zcasync data '
                    'already (format %s)' % (migration.formatVersion(),))
        return EXIT_OK
    found = migration.survey()
    pipeline.describeSurvey(found, report)
    problem = pipeline.checkSurvey(found)
    if problem is not None:
        raise CommandError(problem, EXIT_FORMAT)
    if dry_run:
        report.line('dry run: nothing was changed; run without --dry-run '
                    'to convert')
        return EXIT_OK
    counts = migration.run(found)
    after = migration.survey()
    report.line('done: the database holds zcasync data (format %s); every '
                'job kept its oid' % (migration.formatVersion(),))
    if migration.problems:
        report.line('not converted (%d):' % len(migration.problems))
        for oid, what, why in migration.problems:
            report.line('  oid %s: %s: %s' % (
                int.from_bytes(oid, 'big') if oid else '?', what, why))
    if after.legacy:
        report.line('%d records still hold zc.async state but no zcasync '
                    'object refers to them (not reachable from '
                    'root[\'zc.async\']); packing the database removes '
                    'them' % after.legacy)
    garbage = sum(after.replaced.values())
    if garbage:
        report.line('%d records of replaced zc.async objects are no longer '
                    'referenced; packing the database removes them'
                    % garbage)
    return EXIT_OK
