"""A producer process for the unique-jobs test.

``python -m tests.processes.unique_producer URI DIR NAME OTHER COUNT``
puts ``jobfuncs.record(i, ...)`` with ``unique_key='key-i'`` for i in
range(COUNT), one transaction each.  To make every key a real race, each
put waits before committing until the other producer (OTHER) has made
its own put of that key: it touches ``DIR/ready-NAME-i`` and waits for
``DIR/ready-OTHER-i``; so both transactions read the database before
either commits.  A conflicting commit is retried, as an application
does.  Writes ``i OID`` (the job the put returned) to ``DIR/NAME.out``
after each commit, and ``conflicts N`` at the end.
"""
import os
import sys
import time

import transaction
import ZODB.POSException
import ZODB.utils

import zcasync.configure
from zcasync.cli import db as cli_db
from zcasync.interfaces import KEY
from zcasync.job import Job

from tests.processes import jobfuncs


def waitForFile(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError('%s never appeared' % path)
        time.sleep(0.002)


def main(uri, directory, name, other, count):
    zcasync.configure.base()
    db = cli_db.openDatabase(uri)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conflicts = 0
    log = os.path.join(directory, 'runs.log')
    with open(os.path.join(directory, name + '.out'), 'w') as out:
        for i in range(int(count)):
            first = True
            while True:
                tm.begin()
                job = conn.root()[KEY][''].put(
                    Job(jobfuncs.record, i, log), unique_key='key-%d' % i)
                if first:
                    open(os.path.join(directory, 'ready-%s-%d' % (name, i)),
                         'w').close()
                    waitForFile(os.path.join(directory, 'ready-%s-%d'
                                             % (other, i)))
                    first = False
                try:
                    tm.commit()
                    break
                except ZODB.POSException.ConflictError:
                    tm.abort()
                    conflicts += 1
            out.write('%d %d\n' % (i, ZODB.utils.u64(job._p_oid)))
        out.write('conflicts %d\n' % conflicts)
    tm.abort()
    conn.close()
    db.close()


if __name__ == '__main__':
    main(*sys.argv[1:])
