"""Job functions for the dashboard's process tests (workers and the
dashboard import this module with ``--import tests.processes.webjobs``).
"""
import os
import time

import zcasync


def steps(directory, total, timeout=60.0):
    """Report progress ``(done, total)`` and a status text as live
    annotations; step N waits for the file directory/release-N."""
    for done in range(total):
        zcasync.local.setLiveAnnotation('progress', (done, total))
        zcasync.local.setLiveAnnotation(
            'status', 'waiting for step %d of %d' % (done + 1, total))
        release = os.path.join(directory, 'release-%d' % (done + 1))
        deadline = time.monotonic() + timeout
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                raise RuntimeError('step %d was never released' % (done + 1))
            time.sleep(0.05)
    return total


def explode(text):
    """Fail with `text` as the message."""
    raise ValueError(text)
