"""Job functions for the chaos suite; workers import this module with
``--import tests.chaos.chaosjobs`` (the repository root is on their
PYTHONPATH).

``work(n, path, pause)`` leaves two kinds of traces:

- external, outside any transaction: one ``O_APPEND`` write of
  ``begin N PID RUNID NS`` before it works and ``end N PID RUNID NS ok``
  after (``raised`` instead of ``ok`` when it raised: a disconnection or
  a conflict while loading; RUNID is random per call, NS is
  ``time.monotonic_ns()``, which on
  Linux is one clock for every process of the machine), so that every
  execution, even one whose transaction is later aborted or whose process
  is killed, is on record with its interval;
- transactional, one effect: ``root['chaos'][n]`` (an OOBTree whose keys
  exist before the run, so that no bucket splits) gets ``(PID, RUNID)``
  appended, in the job's own transaction.  The tuple's length is how many
  runs of job N committed; distinct keys merge under BTree conflict
  resolution, two runs of one job conflict.
"""
import os
import random
import time

import zcasync

#: root keys used by the suite
EFFECTS = 'chaos'


def appendLine(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + '\n').encode())
    finally:
        os.close(fd)


def work(n, path, pause):
    """Log begin, sleep up to `pause` seconds, record the effect, log end
    (also when it raises, e.g. a disconnection while loading); returns
    n."""
    pid = os.getpid()
    run = '%012x' % random.getrandbits(48)
    appendLine(path, 'begin %d %d %s %d' % (n, pid, run, time.monotonic_ns()))
    outcome = 'raised'
    try:
        time.sleep(random.uniform(0, pause))
        job = zcasync.local.getJob()
        effects = job._p_jar.root()[EFFECTS]
        effects[n] = effects[n] + ((pid, run),)
        outcome = 'ok'
    finally:
        appendLine(path, 'end %d %d %s %d %s' % (
            n, pid, run, time.monotonic_ns(), outcome))
    return n
