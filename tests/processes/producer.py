"""A long-lived producer process for the ZEO restart test.

``python -m tests.processes.producer URI LOG OUT STOPFILE`` queues
``jobfuncs.record(n, LOG)`` jobs one transaction at a time, about 20 per
second, until STOPFILE exists, through one ZEO connection that must
survive a server restart.  After each commit it appends ``N OID`` to OUT.
A commit that fails because the server went away is retried (the ZEO
client waits up to 60 s for the server to come back).
"""
import os
import sys
import time

import transaction
import ZODB.utils

import zcasync.configure
from zcasync.cli import db as cli_db
from zcasync.interfaces import KEY
from zcasync.job import Job

from tests.processes import jobfuncs


def main(uri, log, out, stopfile):
    zcasync.configure.base()
    db = cli_db.openDatabase(uri + '?wait_timeout=60')
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    n = 0
    while not os.path.exists(stopfile):
        for attempt in tm.attempts(20):
            with attempt:
                job = conn.root()[KEY][''].put(Job(jobfuncs.record, n, log))
        with open(out, 'a') as f:
            f.write('%d %d\n' % (n, ZODB.utils.u64(job._p_oid)))
        n += 1
        time.sleep(0.05)  # pacing: the producer spans the outage
    tm.abort()
    conn.close()
    db.close()


if __name__ == '__main__':
    main(*sys.argv[1:])
