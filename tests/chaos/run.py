"""The long chaos run, as a script (from the repository root):

    python -m tests.chaos.run --jobs 2000 --minutes 10 [--storage zeo|postgres]

Same engine and checks as the short runs in ``test_chaos.py``, over more
jobs and more faults.  Prints the progress, then the table; exit code 0
when every invariant holds, 1 when one is violated, 2 when the variant
cannot run here (e.g. PostgreSQL unreachable) or an option is wrong.  The processes' logs and
the external run log stay in ``--dir`` (default: a new temporary
directory, named in the table).
"""
import argparse
import os
import random
import sys
import tempfile


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m tests.chaos.run',
        description='zcasync chaos run: real workers, injected faults, '
                    'invariants checked over every job')
    parser.add_argument('--jobs', type=int, default=2000,
                        help='normal jobs to put (default 2000)')
    parser.add_argument('--minutes', type=float, default=10,
                        help='length of the run: jobs are put and faults '
                             'injected over its first three quarters '
                             '(default 10)')
    parser.add_argument('--storage', choices=('zeo', 'postgres'),
                        default='zeo')
    parser.add_argument('--fault-every', type=float, default=5.0,
                        metavar='SECONDS', help='default 5')
    parser.add_argument('--settle', type=float, default=120.0,
                        metavar='SECONDS', help='how long to wait for '
                        'every job once the faults are over (default 120)')
    parser.add_argument('--faults', default=None, metavar='KIND,...',
                        help='the kinds of fault to inject, in the order of '
                             'the first round (default: kill, cancel, '
                             'stop, zeo-restart or pg-terminate, poison)')
    parser.add_argument('--seed', type=int, default=None)
    parser.add_argument('--dir', default=None,
                        help='where the logs go (created if missing)')
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.minutes <= 0 or args.fault_every <= 0:
        parser.error('--jobs, --minutes and --fault-every must be positive')
    from tests.chaos.invariants import (
        FAULT_KINDS, ZEO_RESTART, PG_TERMINATE)
    kinds = None
    if args.faults:
        kinds = [k.strip() for k in args.faults.split(',') if k.strip()]
        wrong = {ZEO_RESTART: 'zeo', PG_TERMINATE: 'postgres'}
        for kind in kinds:
            if kind not in FAULT_KINDS:
                parser.error('unknown fault %r in --faults; use some of %s'
                             % (kind, ', '.join(FAULT_KINDS)))
            if wrong.get(kind, args.storage) != args.storage:
                parser.error('--faults %s needs --storage %s'
                             % (kind, wrong[kind]))
        if not kinds:
            parser.error('--faults names no fault')

    from tests.chaos.harness import ChaosRun, Unavailable, throwawayPostgres
    seed = args.seed if args.seed is not None else random.randrange(10 ** 6)
    directory = args.dir or tempfile.mkdtemp(prefix='zcasync-chaos-')
    os.makedirs(directory, exist_ok=True)
    print('seed %d, logs in %s' % (seed, directory), flush=True)

    def out(line):
        print(line, flush=True)
    settings = dict(jobs=args.jobs, duration=args.minutes * 60,
                    fault_every=args.fault_every, settle=args.settle,
                    kinds=kinds, seed=seed, out=out)
    try:
        if args.storage == 'postgres':
            with throwawayPostgres('zcasync_chaos') as uri:
                report = ChaosRun(directory, 'postgres', uri,
                                  **settings).run()
        else:
            report = ChaosRun(directory, 'zeo', **settings).run()
    except Unavailable as e:
        print('cannot run the %s variant: %s' % (args.storage, e),
              file=sys.stderr)
        return 2
    print(report.table())
    return 1 if report.violations else 0


if __name__ == '__main__':
    sys.exit(main())
