"""zcasync demo: a real dispatcher on an embedded FileStorage.

Queues a few jobs in the application's own transaction, lets a dispatcher
(a Twisted reactor in a thread) run them in worker threads, follows one
job's progress through live annotations, and prints results, a failure and
the dispatcher's statistics.

Run: python examples/demo.py [DATA_DIR]

Without DATA_DIR the database lives in a temporary folder that the demo
removes when it ends; the instance UUID file always does.
"""
import operator
import os
import shutil
import sys
import tempfile
import threading
import time

import transaction
import ZODB
import ZODB.FileStorage

sys.dont_write_bytecode = True  # leave no __pycache__ in the clone
here = tempfile.mkdtemp(prefix='zcasync-demo-')
os.environ.setdefault('ZC_ASYNC_UUID', os.path.join(here, 'uuid.txt'))

import twisted.internet.selectreactor  # noqa: E402

import zcasync  # noqa: E402
import zcasync.agent  # noqa: E402
import zcasync.configure  # noqa: E402
import zcasync.dispatcher  # noqa: E402
import zcasync.job  # noqa: E402
import zcasync.queue  # noqa: E402
from zcasync import testing  # noqa: E402
from zcasync.interfaces import KEY  # noqa: E402


def render_report(pages):
    """A 'slow' job that reports its progress live."""
    for page in range(1, pages + 1):
        time.sleep(0.05)
        zcasync.local.setLiveAnnotation('progress', '%d/%d' % (page, pages))
    return 'report of %d pages' % pages


def summarize(*jobs):
    return sum(job.result for job in jobs)


def main():
    # the dispatcher logs every job on 'zcasync.trace' (failures with a
    # verbose traceback); the demo prints its own summary instead
    import logging
    logging.getLogger('zcasync.trace').setLevel(logging.CRITICAL)
    data_dir = sys.argv[1] if len(sys.argv) > 1 else here
    zcasync.configure.base()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(data_dir, 'Data.fs')))
    reactor = twisted.internet.selectreactor.SelectReactor()
    dispatcher = zcasync.dispatcher.Dispatcher(db, reactor, poll_interval=1)

    def run():
        dispatcher.activate()
        reactor.run(installSignalHandlers=False)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    conn = db.open()
    root = conn.root()
    queues = root[KEY] = zcasync.queue.Queues()
    queue = queues[''] = zcasync.queue.Queue()
    transaction.commit()
    def registered():
        transaction.begin()
        return dispatcher.UUID in queue.dispatchers
    testing.wait(registered, message='the dispatcher did not register')
    agents = queue.dispatchers[dispatcher.UUID]
    agents['main'] = zcasync.agent.Agent(size=3)
    transaction.commit()
    print('dispatcher %s is running' % dispatcher.UUID)

    product = queue.put(zcasync.job.Job(operator.mul, 6, 7))
    report = queue.put(zcasync.job.Job(render_report, 20))
    failing = queue.put(zcasync.job.Job(operator.truediv, 1, 0))
    total = queue.put(zcasync.job.parallel(
        zcasync.job.Job(operator.add, 1, 2),
        zcasync.job.Job(operator.add, 3, 4),
        postprocess=summarize))
    transaction.commit()  # the jobs exist from this commit on

    seen = None
    while True:
        transaction.begin()
        progress = report.annotations.get('progress')
        if progress != seen:
            print('report progress: %s' % progress)
            seen = progress
        if report.status == zcasync.interfaces.COMPLETED:
            break
        time.sleep(0.02)
    for name, job in [('6 * 7', product), ('report', report),
                      ('1 / 0', failing), ('parallel sum', total)]:
        print('%-13s -> %r' % (name, testing.wait_for_result(job)))
    stats = dispatcher.getStatistics()
    print('statistics: started %(started)d, successful %(successful)d, '
          'failed %(failed)d' % stats)
    print('status: %s' % dispatcher.getStatusInfo()['status'])
    reactor.callFromThread(reactor.stop)
    thread.join(10)
    print('stopped: %s' % dispatcher.getStatusInfo()['status'])
    conn.close()
    db.close()


if __name__ == '__main__':
    try:
        main()
    finally:
        shutil.rmtree(here, ignore_errors=True)
