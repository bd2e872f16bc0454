"""The job functions the benchmarks queue.

They live in an importable module (``benchmarks.jobs``) because jobs store
their callable by reference: worker processes load it with ``--import
benchmarks.jobs`` and the repository root on ``PYTHONPATH``.
"""
import time


def noop():
    """Do nothing: the drain measures the queue, not the work."""


def started():
    """Return when the job started (``time.time()``, taken first thing
    inside the job): the latency benchmark compares it with the time its
    put committed."""
    return time.time()
