"""Run the zcasync benchmarks and print one table (see README.md).

    python benchmarks/run.py [--quick] [--runs N] [--json PATH]
                             [--only SECTION,...] [--keep]

Progress goes to stderr; the header and the table to stdout.  The exit
code is 1 when a benchmark failed (an error, never a slow figure).
"""
import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTIONS = ('inprocess', 'latency', 'scale', 'priority', 'zeo', 'ceilings',
            'claim', 'postgres', 'procrastinate', 'rss', 'dashboard', 'huey',
            'coroutines')


def parseArguments(argv):
    parser = argparse.ArgumentParser(
        prog='benchmarks/run.py',
        description='zcasync benchmarks: one table of medians')
    parser.add_argument('--quick', action='store_true',
                        help='small sizes, one run: a smoke check')
    parser.add_argument('--runs', type=int, default=None,
                        help='runs per figure (default 3; 1 with --quick)')
    parser.add_argument('--json', metavar='PATH',
                        help='also write every figure to PATH')
    parser.add_argument('--only', metavar='SECTIONS',
                        help='comma-separated subset of: %s'
                        % ', '.join(SECTIONS))
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary directory (databases, '
                        'worker logs)')
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    args.sections = SECTIONS
    if args.only:
        args.sections = [s.strip() for s in args.only.split(',') if s.strip()]
        unknown = set(args.sections) - set(SECTIONS)
        if unknown:
            parser.error('unknown section(s) %s; choose from %s' % (
                ', '.join(sorted(unknown)), ', '.join(SECTIONS)))
    return args


def progress(message, *args):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'),
                                     message % args if args else message))
    sys.stderr.flush()


def header(args, sizes, machine):
    versions = ', '.join('%s %s' % (k, v or 'not installed')
                         for k, v in machine['versions'].items())
    load = ' '.join('%.2f' % x for x in machine.get('load average', ()))
    lines = [
        'zcasync benchmarks%s' % (' (--quick: small sizes, a smoke check; '
                                  'targets apply to the full run)'
                                  if args.quick else ''),
        'command: %s' % shlex.join([sys.executable] + sys.argv),
        'machine: %s logical cores (%s physical), %s GB; Python %s (%s); '
        '%s; load average at start %s' % (
            machine['logical cores'], machine.get('physical cores', '?'),
            machine.get('memory GB', '?'), machine['python'],
            machine['implementation'], machine['platform'], load or '?'),
        'versions: %s' % versions,
        'sizes: {:,} jobs per enqueue and drain ({:,} in bulk); {:,} '
        'latency jobs; queue scale at {:,} and {:,} pending ({:,} puts and '
        'claims); RSS over {:,} jobs (one run); agent and worker size {}; '
        'poll_interval {:g} s; dashboard with {:,} completed and {:,} '
        'pending jobs, {} requests per URL; commit ceilings over {:g} s; '
        'PostgreSQL: {:,} jobs per enqueue and drain ({:,} in bulk); claims '
        'behind {:,} jobs ({} cold and {} warm per run)'.format(
            sizes.jobs, sizes.bulk_jobs, sizes.latency_jobs,
            sizes.scale_small, sizes.scale_large, sizes.scale_ops,
            sizes.rss_jobs, sizes.size, sizes.poll_interval,
            sizes.dashboard_completed, sizes.dashboard_pending,
            sizes.dashboard_requests, sizes.ceiling_seconds, sizes.pg_jobs,
            sizes.pg_bulk_jobs, sizes.blocked, sizes.claims_cold,
            sizes.claims_warm),
        'each figure: median of %d run(s)%s' % (
            args.runs, ' [min-max]' if args.runs > 1 else ''),
    ]
    return lines


def _terminated(signum, frame):
    raise SystemExit('stopped by signal %d' % signum)


def main(argv=None):
    args = parseArguments(argv)
    # SIGTERM (e.g. from timeout) unwinds like Ctrl-C: every child process
    # and thread is stopped by the finally clauses on the way out
    signal.signal(signal.SIGTERM, _terminated)
    workdir = tempfile.mkdtemp(prefix='zcasync-bench-')
    # a dispatcher reads (or creates) the instance UUID file
    os.environ['ZC_ASYNC_UUID'] = os.path.join(workdir, 'uuid.txt')
    # jobs run in this process (filling databases) log their failures;
    # the table is the output: keep them off the terminal
    import logging
    logging.getLogger('zcasync').addHandler(logging.NullHandler())
    if sys.path and os.path.abspath(sys.path[0] or '.') == HERE:
        sys.path[0] = ROOT
    elif ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks import report, sections, support
    sizes = support.QUICK if args.quick else support.FULL
    machine = support.machineInfo()
    results = report.Results()
    ctx = sections.Context(sizes, args.runs, workdir, results, progress)
    started = time.monotonic()
    try:
        for name, section in sections.ORDER:
            if name not in args.sections:
                continue
            progress('section %s', name)
            try:
                section(ctx)
            except Exception as e:
                results.errors.append((name, '%s: %s' % (
                    type(e).__name__, e)))
                progress('section %s FAILED:\n%s', name,
                         traceback.format_exc())
    finally:
        keep = args.keep or results.errors
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started
    lines = header(args, sizes, machine)
    lines += ['', report.table(results, sizes, verdicts=not args.quick,
                               sections=args.sections), '']
    lines.append('wall time: %.1f s' % wall)
    for name, error in results.errors:
        lines.append('ERROR in %s: %s' % (name, error))
    if keep:
        lines.append('databases and logs kept in %s' % workdir)
    print('\n'.join(lines), flush=True)
    if args.json:
        report.writeJSON(args.json, results, {
            'command': shlex.join([sys.executable] + sys.argv),
            'machine': machine, 'quick': args.quick, 'runs': args.runs,
            'sizes': vars(sizes), 'sections': list(args.sections),
            'worker commands': ctx.commands, 'wall seconds': wall})
    return 1 if results.errors else 0


if __name__ == '__main__':
    sys.exit(main())
