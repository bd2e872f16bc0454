"""Collected values, the table and the JSON document."""
import dataclasses
import json

from benchmarks import dashboard_bench, support

ZCASYNC, HUEY, PROCRASTINATE = 'zcasync', 'huey', 'procrastinate'
#: how the table names each reference system
REFERENCE_NAMES = {HUEY: 'huey', PROCRASTINATE: 'Procrastinate'}
#: the section that measures each reference system
REFERENCE_SECTIONS = {HUEY: 'huey', PROCRASTINATE: 'procrastinate'}
#: requirements a section may lack (``Results.skip``)
POSTGRES = 'postgres'


class Results:
    def __init__(self):
        self.values = {}  # (system, key) -> [value of each run]
        self.absent = set()  # systems not installed
        self.skipped = {}  # requirement or system -> reason
        self.errors = []  # (section, message)

    def add(self, system, key, value):
        self.values.setdefault((system, key), []).append(value)

    def missing(self, system):
        self.absent.add(system)

    def skip(self, what, reason):
        """`what` (a system, or a requirement such as POSTGRES) is not
        available: its rows say ``skipped: reason``."""
        self.skipped.setdefault(what, reason)

    def median(self, key, system=ZCASYNC):
        values = self.values.get((system, key))
        return support.median(values) if values else None

    def figures(self):
        out = {}
        for (system, key), values in sorted(self.values.items()):
            out.setdefault(system, {})[key] = {
                'median': support.median(values), 'min': min(values),
                'max': max(values), 'runs': values}
        return out


@dataclasses.dataclass
class Row:
    """One line of the table: the zcasync figure `key` measured by
    `section`; `reference` (system, key) is the figure it is compared
    with; `needs` a requirement whose absence skips it."""
    label: str
    key: str
    unit: str
    decimals: int
    target: object = None
    section: str = ''
    reference: tuple = None
    needs: str = None


# --- targets (issue 10); a target(results, row) returns (text, met or None)

def atLeast(limit):
    def target(results, row):
        value = results.median(row.key)
        return '>= {:,}'.format(limit), \
            None if value is None else value >= limit
    return target


def atMost(limit):
    def target(results, row):
        value = results.median(row.key)
        return '<= %g' % limit, None if value is None else value <= limit
    return target


def lessThan(limit):
    def target(results, row):
        value = results.median(row.key)
        return '< %g' % limit, None if value is None else value < limit
    return target


def ratio(results, row):
    """zcasync / reference (medians of this run), or None."""
    if row.reference is None:
        return None
    value = results.median(row.key)
    reference = results.median(row.reference[1], row.reference[0])
    if value is None or not reference:
        return None
    return value / reference


def ratioAtLeast(factor, note=''):
    def target(results, row):
        name = REFERENCE_NAMES[row.reference[0]]
        value = ratio(results, row)
        return '>= %gx %s%s' % (factor, name, note), \
            None if value is None else value >= factor
    return target


def ratioAtMost(factor):
    def target(results, row):
        name = REFERENCE_NAMES[row.reference[0]]
        value = ratio(results, row)
        text = '<= %s' % name if factor == 1 else '<= %gx %s' % (factor,
                                                                 name)
        return text, None if value is None else value <= factor
    return target


def drainTarget(results, row):
    value, huey = results.median(row.key), results.median('drain', HUEY)
    met = None if value is None else value >= 1000 and (
        huey is None or value >= 0.5 * huey)
    return '>= 1,000 and >= 0.5x huey', met


def pgEnqueueTarget(results, row):
    """>= 0.3x Procrastinate and >= 90% of the one-thread ceiling (the one
    measured right before, on the same database)."""
    reference = ratio(results, row)
    share = results.median('pg enqueue of ceiling')
    text = '>= 0.3x Procrastinate and >= 90% of ceiling'
    if results.median(row.key) is None or (reference is None and
                                           share is None):
        return text, None
    met = (reference is None or reference >= 0.3) and \
        (share is None or share >= 90)
    return text, met


def ratioOf(small_key):
    def target(results, row):
        small, large = results.median(small_key), results.median(row.key)
        if small is None or large is None:
            return '>= 80% of small', None
        return '%.0f%% of small (>= 80%%)' % (100 * large / small), \
            large >= 0.8 * small
    return target


def rows(sizes):
    """Every line of the table, grouped by storage; each storage's commit
    ceiling comes first in its group: it bounds the figures below it."""
    small, large = sizes.scale_small, sizes.scale_large

    def versus(key):
        """A PostgreSQL row compared with Procrastinate's `key`."""
        return dict(section='postgres', needs=POSTGRES,
                    reference=(PROCRASTINATE, key))
    blocked = '{:,}'.format(sizes.blocked)
    claim_rows = []
    for kind, what in (('quota', 'quota-blocked jobs'),
                       ('filter', 'jobs the filter rejects')):
        for state in ('cold', 'warm'):
            claim_rows += [
                Row('claim, %s, empty queue (%s)' % (state, kind),
                    'claim %s empty %s' % (kind, state), 'ms', 2,
                    section='claim'),
                Row('claim, %s, behind %s %s' % (state, blocked, what),
                    'claim %s blocked %s' % (kind, state), 'ms', 2,
                    section='claim'),
                Row('  ratio to the empty queue (%s, %s)' % (kind, state),
                    'claim %s ratio %s' % (kind, state), 'x', 2, atMost(2),
                    section='claim'),
                Row('  objects loaded: empty / behind (%s, %s)'
                    % (kind, state), 'claim %s loads %s' % (kind, state),
                    '', 0, section='claim'),
            ]
    return [
        Row('commit ceiling: FileStorage, 1 thread', 'ceiling fs 1',
            'commits/s', 0, section='ceilings'),
        Row('commit ceiling: FileStorage, 4 threads', 'ceiling fs 4',
            'commits/s', 0, section='ceilings'),
        Row('enqueue: {:,} jobs, 1 commit each, 1 producer'.format(
            sizes.jobs), 'enqueue', 'jobs/s', 0, atLeast(2500),
            section='inprocess', reference=(HUEY, 'enqueue')),
        Row('enqueue: {:,} jobs, {:,} per commit'.format(
            sizes.bulk_jobs, sizes.fill_batch), 'bulk enqueue', 'jobs/s', 0,
            atLeast(20000), section='inprocess'),
        Row('drain in-process: FileStorage, 1 agent of size %d'
            % sizes.size, 'drain', 'jobs/s', 0, drainTarget,
            section='inprocess', reference=(HUEY, 'drain')),
        Row('commits per job (in-process drain)', 'commits per job', '', 2,
            atMost(1.05), section='inprocess'),
        Row('objects stored per job (in-process drain)',
            'objects stored per job', '', 2, section='inprocess'),
        Row('latency put->start p50 (in-process, idle)', 'latency p50',
            'ms', 1, atMost(2), section='latency',
            reference=(HUEY, 'latency p50')),
        Row('latency put->start p99 (in-process, idle)', 'latency p99',
            'ms', 1, atMost(5), section='latency',
            reference=(HUEY, 'latency p99')),
        Row('commit ceiling: ZEO, 1 client process', 'ceiling zeo 1',
            'commits/s', 0, section='ceilings'),
        Row('commit ceiling: ZEO, 3 client processes', 'ceiling zeo 3',
            'commits/s', 0, section='ceilings'),
        Row('drain over ZEO: 1 worker process', 'drain zeo 1', 'jobs/s', 0,
            atLeast(250), section='zeo'),
        Row('drain over ZEO: 3 worker processes', 'drain zeo 3', 'jobs/s',
            0, atLeast(400), section='zeo'),
        Row('latency p50 over ZEO (1 worker process)', 'latency zeo p50',
            'ms', 1, section='zeo'),
        Row('latency p99 over ZEO (1 worker process)', 'latency zeo p99',
            'ms', 1, section='zeo'),
        Row('commits per job over ZEO, 1 worker', 'commits per job zeo 1',
            '', 2, section='zeo'),
        Row('commits per job over ZEO, 3 workers', 'commits per job zeo 3',
            '', 2, section='zeo'),
        Row('commit ceiling: PostgreSQL (RelStorage), 1 thread',
            'ceiling pg 1', 'commits/s', 0, section='ceilings',
            needs=POSTGRES),
        Row('commit ceiling: PostgreSQL (RelStorage), 2 threads',
            'ceiling pg 2', 'commits/s', 0, section='ceilings',
            needs=POSTGRES),
        Row('commit ceiling: PostgreSQL (RelStorage), 4 threads',
            'ceiling pg 4', 'commits/s', 0, section='ceilings',
            needs=POSTGRES),
        Row('commit ceiling: PostgreSQL, 1 thread, just before enqueue',
            'pg enqueue ceiling', 'commits/s', 0, section='postgres',
            needs=POSTGRES),
        Row('enqueue on PostgreSQL: {:,} jobs, 1 commit each'.format(
            sizes.pg_jobs), 'pg enqueue', 'jobs/s', 0, pgEnqueueTarget,
            **versus('enqueue')),
        Row('  that enqueue / the ceiling just before', 'pg enqueue of '
            'ceiling', '%', 0, section='postgres', needs=POSTGRES),
        Row('enqueue on PostgreSQL: {:,} jobs, {:,} per commit'.format(
            sizes.pg_bulk_jobs, sizes.fill_batch), 'pg bulk enqueue',
            'jobs/s', 0, ratioAtLeast(1.0, ' one by one'),
            **versus('enqueue')),
        Row('drain on PostgreSQL: in-process, 1 agent of size %d'
            % sizes.size, 'pg drain', 'jobs/s', 0, ratioAtLeast(0.8),
            **versus('drain')),
        Row('drain on PostgreSQL: 3 worker processes of size %d'
            % sizes.size, 'pg drain 3', 'jobs/s', 0,
            ratioAtLeast(1.0, ', same concurrency'), **versus('drain 3')),
        Row('latency put->start p50 on PostgreSQL (in-process)',
            'pg latency p50', 'ms', 1, ratioAtMost(1.0),
            **versus('latency p50')),
        Row('latency put->start p99 on PostgreSQL (in-process)',
            'pg latency p99', 'ms', 1, **versus('latency p99')),
    ] + claim_rows + [
        Row('put at {:,} pending (1 commit each)'.format(small),
            'put at %d' % small, 'jobs/s', 0, section='scale'),
        Row('put at {:,} pending'.format(large), 'put at %d' % large,
            'jobs/s', 0, ratioOf('put at %d' % small), section='scale'),
        Row('claim at {:,} pending (1 commit each)'.format(small),
            'claim at %d' % small, 'jobs/s', 0, section='scale'),
        Row('claim at {:,} pending'.format(large), 'claim at %d' % large,
            'jobs/s', 0, ratioOf('claim at %d' % small), section='scale'),
        Row('put with priorities at {:,} pending'.format(small),
            'priority put at %d' % small, 'jobs/CPU-s', 0,
            section='priority'),
        Row('put with priorities at {:,} pending'.format(large),
            'priority put at %d' % large, 'jobs/CPU-s', 0,
            ratioOf('priority put at %d' % small), section='priority'),
        Row('claim with priorities at {:,} pending'.format(small),
            'priority claim at %d' % small, 'jobs/CPU-s', 0,
            section='priority'),
        Row('claim with priorities at {:,} pending'.format(large),
            'priority claim at %d' % large, 'jobs/CPU-s', 0,
            ratioOf('priority claim at %d' % small), section='priority'),
        Row('worker RSS before {:,} jobs'.format(sizes.rss_jobs),
            'rss before', 'MB', 1, section='rss'),
        Row('worker RSS after {:,} jobs'.format(sizes.rss_jobs),
            'rss after', 'MB', 1, section='rss'),
        Row('worker RSS growth', 'rss growth', 'MB', 1, lessThan(50),
            section='rss'),
        Row('worker drain rate in that run', 'rss drain', 'jobs/s', 0,
            section='rss'),
    ] + [Row('dashboard %s, p95' % label, 'dashboard ' + label, 'ms', 1,
             atMost(200), section='dashboard')
         for label, path in dashboard_bench.REQUESTS] + [
        Row('dashboard: slowest first request (cold)',
            'dashboard first request', 'ms', 1, section='dashboard'),
        Row('dashboard live update: put to event p50 (ZEO)',
            'dashboard live p50', 'ms', 1, atMost(1000),
            section='dashboard'),
        Row('dashboard live update: put to event p99 (ZEO)',
            'dashboard live p99', 'ms', 1, atMost(1000),
            section='dashboard'),
        Row('coroutine jobs: 200 x sleep(1 s), agent size 200, wall',
            'coroutines wall', 's', 2, atMost(2.5), section='coroutines'),
        Row('  of them sleeping at once', 'coroutines at once', '', 0,
            section='coroutines'),
        Row("  the agent's worker threads", 'coroutines worker threads', '',
            0, atMost(4), section='coroutines'),
        Row("  all the dispatcher's threads", 'coroutines threads', '', 0,
            section='coroutines')]


def _number(value, decimals):
    return '{:,.{}f}'.format(value, decimals)


def cell(results, system, key, decimals):
    values = results.values.get((system, key))
    if not values:
        return '-'
    text = _number(support.median(values), decimals)
    if len(values) > 1:
        text += ' [%s-%s]' % (_number(min(values), decimals),
                              _number(max(values), decimals))
    return text


def _loadsCell(results, row):
    """'empty / behind' object counts of a claim (medians)."""
    kind, state = row.key.split()[1], row.key.split()[3]
    empty = results.median('claim %s empty loads %s' % (kind, state))
    behind = results.median('claim %s blocked loads %s' % (kind, state))
    if empty is None or behind is None:
        return '-'
    return '%s / %s' % (_number(empty, 0), _number(behind, 0))


def _referenceCell(results, row):
    system, key = row.reference
    name = REFERENCE_NAMES[system]
    if system in results.skipped:
        return 'skipped'
    if system in results.absent:
        return '%s not installed' % name
    text = cell(results, system, key, row.decimals)
    return '-' if text == '-' else '%s %s' % (name, text)


def shown(row, sections):
    """Whether `row` belongs in a table of `sections` (None: all): its
    section or its reference's ran."""
    if sections is None or row.section in sections:
        return True
    return row.reference is not None and \
        REFERENCE_SECTIONS[row.reference[0]] in sections


def table(results, sizes, verdicts, sections=None):
    """The table of the rows whose section (or reference) ran; skipped
    rows say why below it."""
    lines = [('figure', 'zcasync', 'reference', 'zcasync/ref', 'unit',
              'target')]
    notes = {}
    for row in rows(sizes):
        if not shown(row, sections):
            continue
        reason = results.skipped.get(row.needs) if row.needs else None
        if reason is not None:
            notes[row.needs] = reason
            value = 'skipped: %s' % row.needs
        elif row.key.split()[2:3] == ['loads']:
            value = _loadsCell(results, row)
        else:
            value = cell(results, ZCASYNC, row.key, row.decimals)
        reference = factor = ''
        if row.reference is not None:
            reference = _referenceCell(results, row)
            if row.reference[0] in results.skipped:
                notes[row.reference[0]] = results.skipped[row.reference[0]]
            value_ratio = ratio(results, row)
            if value_ratio is not None and reason is None:
                factor = '%.2fx' % value_ratio
        goal = ''
        if row.target is not None:
            goal, met = row.target(results, row)
            if verdicts and met is not None and reason is None:
                goal += '  ok' if met else '  MISSED'
        lines.append((row.label, value, reference, factor, row.unit, goal))
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    out = []
    for n, line in enumerate(lines):
        out.append('  '.join(text.ljust(width) if i in (0, 4, 5)
                             else text.rjust(width)
                             for i, (text, width) in
                             enumerate(zip(line, widths))).rstrip())
        if n == 0:
            out.append('-' * len(out[0]))
    for what, reason in sorted(notes.items()):
        out.append('skipped: %s: %s' % (what, reason))
    return '\n'.join(out)


def document(results, header):
    data = dict(header)
    data['figures'] = results.figures()
    data['huey'] = 'not installed' if HUEY in results.absent else \
        'installed'
    data['skipped'] = dict(results.skipped)
    data['errors'] = [{'section': s, 'error': e} for s, e in results.errors]
    return data


def writeJSON(path, results, header):
    with open(path, 'w') as f:
        json.dump(document(results, header), f, indent=2, default=str)
        f.write('\n')
