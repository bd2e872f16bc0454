"""The stages of ``zcasync migrate``, their progress, and the report.

A migration runs these stages in order; each one is resumable and finds
nothing to do when its work is done, so a migration interrupted anywhere
(an error, a kill, a lost connection) goes on where it stopped when run
again:

``python2`` (only with ``--from-python2``)
    ``zcasync.migrate.python2.migrateStage``: Python 2 pickles to
    Python 3 ones, zc.async class paths unchanged.
``survey``
    reads every record (``zcasync.migrate.survey``) and reports what it
    will convert; refuses, changing nothing, when a stored name has no
    rule or the application's modules cannot be imported.
``rename``
    zc.async class paths to zcasync's and to the stand-ins
    (``zcasync.migrate.renames``, through zodbupdate), ``batch`` records
    per transaction.
``jobs``
    each job and callback proxy gets zcasync's state at its oid
    (``zcasync.migrate.converters``), ``batch`` objects per transaction.
``queues``
    each queue with its quotas, dispatcher registry and agents, one
    transaction per queue (``zcasync.migrate.containers``).
``pending`` and ``completed``
    the queues' pending jobs and the agents' completed jobs move to the
    zcasync trees, ``batch`` jobs per transaction.
``finish``
    ``zcasync.stable.markFormat`` and the progress record removed.

From the first write until ``finish``, ``root[PROGRESS_KEY]`` records the
stage reached and the counts so far; while it is there, zcasync
processes refuse the database (``zcasync.stable.checkFormat``).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

import persistent.mapping
import transaction
import ZODB.utils

from zcasync import interfaces
from zcasync import stable
from zcasync import utils
from zcasync.migrate import containers
from zcasync.migrate import converters
from zcasync.migrate import renames
from zcasync.migrate import survey as surveymodule

PROGRESS_KEY = stable.MIGRATION_KEY
BATCH = 200

_PROXY_CLASSES = {('zc.async.job', 'SuccessFailureCallbackProxy'),
                  ('zc.async.job', 'ConditionalCallbackProxy'),
                  ('zcasync.job', 'SuccessFailureCallbackProxy')}


class Report:
    """What the migration prints (to `stream`), also kept in ``lines``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.lines: list[str] = []

    def line(self, text: str = '') -> None:
        self.lines.append(text)
        self.stream.write(text + '\n')
        self.stream.flush()


def _className(klass):
    return '%s.%s' % klass


def describeSurvey(found: surveymodule.Survey, report: Report) -> None:
    report.line('%d records read; %d hold zc.async data:' % (
        found.records, found.legacy))
    for klass, count in sorted(found.classes.items(),
                               key=lambda item: _className(item[0])):
        report.line('  %-50s %6d' % (_className(klass), count))
    if found.jobs:
        report.line('jobs by state (as zc.async reports them):')
        for status in ('pending', 'assigned', 'active', 'callbacks',
                       'completed', 'failed', 'new'):
            if found.jobs.get(status):
                report.line('  %-50s %6d' % (
                    status + (' (callbacks not yet run)' if status == 'new'
                              else ' (completed with a Failure)'
                              if status == 'failed' else ''),
                    found.jobs[status]))
    if found.replaced:
        report.line('stand-ins of zc.async objects (replaced by zcasync '
                    'objects, or left over by an earlier run):')
        for klass, count in sorted(found.replaced.items()):
            report.line('  %-50s %6d' % (_className(klass), count))


def checkSurvey(found: surveymodule.Survey) -> str | None:
    """Why the migration cannot go on (nothing changed yet), or None."""
    unknown = found.unknownLegacyNames()
    if unknown:
        return ('the database refers to zc.async-era names that zcasync '
                'migrate has no rule for: %s; nothing was changed' % ', '.join(
                    _className(n) for n in unknown))
    missing = found.unresolvedNames()
    if missing:
        shown = ', '.join(_className(n) for n in missing[:5])
        more = ' and %d more' % (len(missing) - 5) if len(missing) > 5 \
            else ''
        return ('the database refers to names this process cannot import: '
                '%s%s; make the application importable (--import MODULE, '
                'PYTHONPATH) so that the jobs keep their callables; nothing '
                'was changed' % (shown, more))
    if found.unreadable:
        oid, problem = found.unreadable[0]
        return ('%d record(s) cannot be read (oid %d: %s); nothing was '
                'changed' % (len(found.unreadable), ZODB.utils.u64(oid),
                             problem))
    return None


class Migration:
    """One run of the stages on an open ``ZODB.DB`` (see the module
    docstring).  `on_batch(stage)` is called after each committed batch
    (tests interrupt the migration there)."""

    def __init__(self, db: Any, report: Report, batch: int = BATCH,
                 on_batch: Callable[[str], None] | None = None) -> None:
        if batch < 1:
            raise ValueError('batch must be at least 1, not %r' % (batch,))
        self.db = db
        self.report = report
        self.batch = batch
        self.on_batch = on_batch or (lambda stage: None)
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.problems = converters.Problems()
        self.counts: dict[str, int] = {}

    def close(self) -> None:
        self.tm.abort()
        self.conn.close()

    # -- what the database holds -------------------------------------------

    def state(self) -> str:
        """'legacy' (zc.async data, not migrated), 'interrupted' (a
        migration started), 'done' (zcasync data), or 'empty'."""
        self.tm.begin()
        try:
            root = self.conn.root()
            if PROGRESS_KEY in root:
                return 'interrupted'
            found = root.get(interfaces.KEY)
            if found is None:
                return 'empty'
            if stable.isLegacyObject(found) or \
                    containers.state(found).get('_len') is not None:
                return 'legacy'
            return 'done'
        finally:
            self.tm.abort()

    def formatVersion(self) -> int | None:
        self.tm.begin()
        try:
            return stable.formatOf(self.conn.root())
        finally:
            self.tm.abort()

    def survey(self) -> surveymodule.Survey:
        return surveymodule.survey(self.db.storage)

    # -- stages ----------------------------------------------------------

    def _progress(self):
        return self.conn.root()[PROGRESS_KEY]

    def _commit(self, stage: str, count: int = 0) -> None:
        progress = self._progress()
        progress['stage'] = stage
        progress[stage] = progress.get(stage, 0) + count
        self.tm.commit()
        self.on_batch(stage)

    def start(self) -> None:
        """Record that a migration began (or go on with the one
        recorded)."""
        self.tm.begin()
        root = self.conn.root()
        if PROGRESS_KEY not in root:
            root[PROGRESS_KEY] = persistent.mapping.PersistentMapping(
                stage='rename', started=utils.now(), rename_next=b'\0' * 8)
            self.tm.commit()
        else:
            progress = self._progress()
            self.report.line('resuming the migration begun %s (stage %s)' % (
                progress.get('started'), progress.get('stage')))
            self.tm.abort()

    def rename(self) -> int:
        self.tm.begin()
        start = self._progress().get('rename_next')
        self.tm.abort()
        if start is None:
            return 0  # done before an interruption

        def done(next_oid, oids):
            # the records changed under this process's connections (an
            # MVCC storage such as RelStorage polls for that itself)
            invalidate = getattr(self.db._mvcc_storage, 'invalidateCache',
                                 None)
            if invalidate is not None:
                invalidate()
            self.tm.begin()
            self._progress()['rename_next'] = next_oid
            self._commit('rename', len(oids))

        count = renames.renameRecords(self.db.storage, start, self.batch,
                                      done)
        # objects this connection loaded before (the root's zc.async
        # object, as a ZODB broken object) keep their class through an
        # invalidation: forget them all
        self.tm.begin()
        self.conn._resetCache()
        self.tm.abort()
        return count

    def jobs(self, found: surveymodule.Survey) -> int:
        oids = []
        for klass, found_oids in found.legacy_oids.items():
            if klass in surveymodule.JOB_CLASSES or klass in _PROXY_CLASSES:
                oids.extend(found_oids)
        oids.sort()
        converted = 0
        for start in range(0, len(oids), self.batch):
            self.tm.begin()
            count = 0
            for oid in oids[start:start + self.batch]:
                ob = self.conn.get(oid)
                if isinstance(ob, converters.Job):
                    changed = converters.convertJob(ob, self.problems)
                else:
                    changed = converters.convertProxy(ob, self.problems)
                count += changed
            self._commit('jobs', count)
            converted += count
        return converted

    def _queues(self):
        queues = self.conn.root()[interfaces.KEY]
        return queues, containers.queuesOf(queues)

    def queues(self) -> int:
        self.tm.begin()
        queues, named = self._queues()
        names = [name for name, queue in named]
        converted = int(containers.convertQueues(queues))
        self.tm.commit()
        for name in names:
            self.tm.begin()
            queue = self._queues()[0]._data[name]
            d = containers.state(queue)
            changed = containers.convertQuotas(d['quotas'])
            changed = containers.convertDispatchers(
                d['dispatchers'], queue, self.problems) or changed
            changed = containers.convertQueue(queue) or changed
            converted += changed
            self._commit('queues', int(changed))
        return converted

    def _moveAll(self, stage, targets, move):
        moved = 0
        for path in targets:
            done = False
            while not done:
                self.tm.begin()
                count, done = move(self._resolve(path), self.batch)
                moved += count
                self._commit(stage, count)
        return moved

    def _resolve(self, path):
        queue = self._queues()[0]._data[path[0]]
        if len(path) == 1:
            return queue
        return containers.agentsOf(queue)[path[1]]

    def pending(self) -> int:
        self.tm.begin()
        names = [(name,) for name, queue in self._queues()[1]]
        self.tm.abort()
        return self._moveAll('pending', names, containers.movePending)

    def completed(self) -> int:
        self.tm.begin()
        paths = [(name, index) for name, queue in self._queues()[1]
                 for index, agent in enumerate(containers.agentsOf(queue))]
        self.tm.abort()
        return self._moveAll('completed', paths, containers.moveCompleted)

    def finish(self) -> None:
        self.tm.begin()
        root = self.conn.root()
        stable.markFormat(root)
        del root[PROGRESS_KEY]
        self.tm.commit()

    def run(self, found: surveymodule.Survey) -> dict[str, int]:
        """The writing stages (after the survey); returns counts."""
        line = self.report.line
        self.start()
        counts = self.counts
        counts['renamed records'] = self.rename()
        line('renamed the class paths of %d records (zodbupdate)'
             % counts['renamed records'])
        # the survey before the renaming found the jobs under their old
        # class paths; a resumed run finds them under the new ones
        counts['jobs and callback proxies'] = self.jobs(found)
        line('converted %d jobs and callback proxies'
             % counts['jobs and callback proxies'])
        counts['queues'] = self.queues()
        line('converted %d queue objects (queues mapping, queues with their '
             'quotas, dispatchers and agents)' % counts['queues'])
        counts['pending jobs'] = self.pending()
        line('moved %d pending jobs to the zcasync queues'
             % counts['pending jobs'])
        counts['completed jobs'] = self.completed()
        line('moved %d completed jobs to the agents\' zcasync collections'
             % counts['completed jobs'])
        self.finish()
        return counts
