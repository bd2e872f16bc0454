"""Each storage's own commit ceiling: small commits per second, one small
object changed per commit, with nothing of zcasync involved.

Every committer (a thread with its own connection, or a process) has its
own ``PersistentMapping`` (``root['ceiling-N']``, made beforehand) and
sets one integer in it per commit, so committers never conflict.  They
start together and, after ``WARM_UP`` untimed commits each, commit for
``seconds``; the ceiling is all their commits divided by the time from
the first start to the last end.

Also ``python -m benchmarks.ceilings URI INDEX SECONDS``: one committer
process (ZEO clients).  It opens URI, prints ``ready``, waits for a line
on stdin, commits for SECONDS and prints ``{"commits", "start", "end"}``
(``time.time()``) as one JSON line.
"""
import json
import sys
import threading
import time

import transaction


#: untimed commits of each committer before it is timed
WARM_UP = 10


def _name(index):
    return 'ceiling-%d' % index


def prepare(db, committers):
    """Make each committer's object (one commit)."""
    from persistent.mapping import PersistentMapping
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        root = conn.root()
        for i in range(committers):
            if _name(i) not in root:
                root[_name(i)] = PersistentMapping()
        tm.commit()
    finally:
        tm.abort()
        conn.close()


def commitFor(conn, tm, index, seconds, clock=time.perf_counter):
    """Commit one small change at a time for `seconds`; (commits, start,
    end) on `clock`."""
    tm.begin()
    mapping = conn.root()[_name(index)]
    for i in range(WARM_UP):  # untimed: the first commits of a connection
        mapping['n'] = -1
        tm.commit()
    commits = 0
    start = clock()
    deadline = start + seconds
    while True:
        mapping['n'] = commits
        tm.commit()
        commits += 1
        end = clock()
        if end >= deadline:
            return commits, start, end


def threads(db, count, seconds):
    """Commits per second of `count` threads on `db`, each with its own
    connection."""
    prepare(db, count)
    barrier = threading.Barrier(count)
    results = [None] * count
    errors = []

    def run(i):
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            barrier.wait(60)
            results[i] = commitFor(conn, tm, i, seconds)
        except BaseException as e:
            errors.append(e)
            barrier.abort()
        finally:
            tm.abort()
            conn.close()
    workers = [threading.Thread(target=run, args=(i,), daemon=True,
                                name='ceiling %d' % i)
               for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 120)
    if errors:
        raise errors[0]
    if any(worker.is_alive() for worker in workers) or None in results:
        from benchmarks.support import BenchmarkError
        raise BenchmarkError('a commit-ceiling thread did not finish')
    return rate(results)


def _readLine(process, what, timeout=120.0):
    """The next line `process` prints; BenchmarkError when it exits or
    stays silent for `timeout` seconds."""
    import selectors
    from benchmarks.support import BenchmarkError
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise BenchmarkError('%s printed nothing for %g s'
                                 % (what, timeout))
    line = process.stdout.readline()
    if not line:
        raise BenchmarkError('%s exited with code %s' % (what,
                                                         process.wait(10)))
    return line.decode().strip()


def processes(db, uri, count, seconds, directory, commands=None):
    """Commits per second of `count` committer processes on `uri` (`db`:
    the same database opened here, to make their objects)."""
    import os
    import subprocess
    from benchmarks import support
    prepare(db, count)
    children = []
    try:
        for i in range(count):
            command = [sys.executable, '-m', 'benchmarks.ceilings', uri,
                       str(i), '%g' % seconds]
            if commands is not None:
                commands.append(command)
            children.append(support.spawn(
                command, os.path.join(directory, 'committer%d.log' % i),
                stdout=subprocess.PIPE, stdin=subprocess.PIPE))
        for i, child in enumerate(children):
            what = 'committer process %d (see committer%d.log)' % (i, i)
            if _readLine(child, what) != 'ready':
                raise support.BenchmarkError('%s did not say ready' % what)
        for child in children:
            child.stdin.write(b'go\n')
            child.stdin.flush()
        results = []
        for i, child in enumerate(children):
            line = _readLine(child, 'committer process %d' % i,
                             seconds + 120)
            figures = json.loads(line)
            results.append((figures['commits'], figures['start'],
                            figures['end']))
        return rate(results)
    finally:
        for child in children:
            support.stop(child, 30)
            for stream in (child.stdin, child.stdout):
                stream.close()


def rate(results):
    """All commits over the time from the first start to the last end."""
    commits = sum(r[0] for r in results)
    return commits / (max(r[2] for r in results) -
                      min(r[1] for r in results))


def main(argv):
    import zodburi
    import ZODB
    uri, index, seconds = argv[1], int(argv[2]), float(argv[3])
    factory, dbkw = zodburi.resolve_uri(uri)
    db = ZODB.DB(factory(), **dbkw)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        tm.begin()
        conn.root()[_name(index)]._p_activate()
        print('ready', flush=True)
        sys.stdin.readline()
        commits, start, end = commitFor(conn, tm, index, seconds,
                                        clock=time.time)
        print(json.dumps({'commits': commits, 'start': start, 'end': end}),
              flush=True)
        conn.close()
    finally:
        db.close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
