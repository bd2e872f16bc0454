"""Collected values, the table and the JSON document."""
import json

from benchmarks import dashboard_bench, support

ZCASYNC, HUEY = 'zcasync', 'huey'
#: the huey figures that mirror a zcasync row
HUEY_KEYS = ('enqueue', 'drain', 'latency p50', 'latency p99')


class Results:
    def __init__(self):
        self.values = {}  # (system, key) -> [value of each run]
        self.absent = set()  # systems not installed
        self.errors = []  # (section, message)

    def add(self, system, key, value):
        self.values.setdefault((system, key), []).append(value)

    def missing(self, system):
        self.absent.add(system)

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


# --- targets (issue 6); a target returns (text, met or None) ---------------

def atLeast(limit):
    def target(results, key):
        value = results.median(key)
        return '>= {:,}'.format(limit), \
            None if value is None else value >= limit
    return target


def atMost(limit):
    def target(results, key):
        value = results.median(key)
        return '<= %g' % limit, None if value is None else value <= limit
    return target


def drainTarget(results, key):
    value, huey = results.median(key), results.median('drain', HUEY)
    met = None if value is None else value >= 1000 and (
        huey is None or value >= huey)
    return '>= 1,000 and >= huey', met


def fasterThanOne(results, key):
    one, three = results.median('drain zeo 1'), results.median(key)
    met = None if one is None or three is None else three > one
    return '> 1 worker', met


def ratioOf(small_key):
    def target(results, key):
        small, large = results.median(small_key), results.median(key)
        if small is None or large is None:
            return '>= 80% of small', None
        return '%.0f%% of small (>= 80%%)' % (100 * large / small), \
            large >= 0.8 * small
    return target


def rows(sizes):
    """(label, key, unit, decimals, target) of each line of the table."""
    small, large = sizes.scale_small, sizes.scale_large
    return [
        ('enqueue: {:,} jobs, 1 commit each, 1 producer'.format(sizes.jobs),
         'enqueue', 'jobs/s', 0, atLeast(2000)),
        ('drain in-process: FileStorage, 1 agent of size %d' % sizes.size,
         'drain', 'jobs/s', 0, drainTarget),
        ('drain over ZEO: 1 worker process', 'drain zeo 1', 'jobs/s', 0,
         None),
        ('drain over ZEO: 3 worker processes', 'drain zeo 3', 'jobs/s', 0,
         fasterThanOne),
        ('latency put->start p50 (in-process, idle)', 'latency p50', 'ms', 1,
         atMost(10)),
        ('latency put->start p99 (in-process, idle)', 'latency p99', 'ms', 1,
         atMost(50)),
        ('latency p50 over ZEO (1 worker process)', 'latency zeo p50', 'ms',
         1, None),
        ('latency p99 over ZEO (1 worker process)', 'latency zeo p99', 'ms',
         1, None),
        ('commits per job (in-process drain)', 'commits per job', '', 2,
         None),
        ('objects stored per job (in-process drain)',
         'objects stored per job', '', 2, None),
        ('commits per job over ZEO, 1 worker', 'commits per job zeo 1', '',
         2, None),
        ('commits per job over ZEO, 3 workers', 'commits per job zeo 3', '',
         2, None),
        ('put at {:,} pending (1 commit each)'.format(small),
         'put at %d' % small, 'jobs/s', 0, None),
        ('put at {:,} pending'.format(large), 'put at %d' % large, 'jobs/s',
         0, ratioOf('put at %d' % small)),
        ('claim at {:,} pending (1 commit each)'.format(small),
         'claim at %d' % small, 'jobs/s', 0, None),
        ('claim at {:,} pending'.format(large), 'claim at %d' % large,
         'jobs/s', 0, ratioOf('claim at %d' % small)),
        ('put with priorities at {:,} pending'.format(small),
         'priority put at %d' % small, 'jobs/CPU-s', 0, None),
        ('put with priorities at {:,} pending'.format(large),
         'priority put at %d' % large, 'jobs/CPU-s', 0,
         ratioOf('priority put at %d' % small)),
        ('claim with priorities at {:,} pending'.format(small),
         'priority claim at %d' % small, 'jobs/CPU-s', 0, None),
        ('claim with priorities at {:,} pending'.format(large),
         'priority claim at %d' % large, 'jobs/CPU-s', 0,
         ratioOf('priority claim at %d' % small)),
        ('worker RSS before {:,} jobs'.format(sizes.rss_jobs), 'rss before',
         'MB', 1, None),
        ('worker RSS after {:,} jobs'.format(sizes.rss_jobs), 'rss after',
         'MB', 1, None),
        ('worker RSS growth', 'rss growth', 'MB', 1, atMost(50)),
        ('worker drain rate in that run', 'rss drain', 'jobs/s', 0, None),
    ] + [('dashboard %s, p95' % label, 'dashboard ' + label, 'ms', 1,
          atMost(200)) for label, path in dashboard_bench.REQUESTS] + [
        ('dashboard: slowest first request (cold)',
         'dashboard first request', 'ms', 1, None),
        ('dashboard live update: put to event p50 (ZEO)',
         'dashboard live p50', 'ms', 1, atMost(1000)),
        ('dashboard live update: put to event p99 (ZEO)',
         'dashboard live p99', 'ms', 1, atMost(1000))]


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


def table(results, sizes, verdicts):
    lines = [('figure', 'zcasync', 'huey SqliteHuey', 'unit', 'target')]
    for label, key, unit, decimals, target in rows(sizes):
        if key in HUEY_KEYS:
            huey = 'not installed' if HUEY in results.absent else \
                cell(results, HUEY, key, decimals)
        else:
            huey = ''
        goal = ''
        if target is not None:
            goal, met = target(results, key)
            if verdicts and met is not None:
                goal += '  ok' if met else '  MISSED'
        lines.append((label, cell(results, ZCASYNC, key, decimals), huey,
                      unit, goal))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for n, line in enumerate(lines):
        out.append('  '.join(text.ljust(width) if i in (0, 3, 4)
                             else text.rjust(width)
                             for i, (text, width) in
                             enumerate(zip(line, widths))).rstrip())
        if n == 0:
            out.append('-' * len(out[0]))
    return '\n'.join(out)


def document(results, header):
    data = dict(header)
    data['figures'] = results.figures()
    data['huey'] = 'not installed' if HUEY in results.absent else \
        'installed'
    data['errors'] = [{'section': s, 'error': e} for s, e in results.errors]
    return data


def writeJSON(path, results, header):
    with open(path, 'w') as f:
        json.dump(document(results, header), f, indent=2, default=str)
        f.write('\n')
