"""``zcasync.configure.start(db, twisted=True)`` in a process of its own,
as a zc.async application on Twisted's global reactor does it: the
TwistedDispatcherInstaller makes a dispatcher without a reactor argument
(it takes Twisted's global one), which starts when the application runs
the reactor (issue 11, "Process start-up")."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import operator, sys
    import transaction, ZODB, ZODB.FileStorage
    import zcasync.configure, zcasync.dispatcher, zcasync.interfaces
    import zcasync.job
    from twisted.internet import reactor

    db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1]))
    zcasync.configure.start(db, poll_interval=0.2, twisted=True)
    dispatcher = zcasync.dispatcher.get()
    print('GLOBAL REACTOR', dispatcher.reactor is reactor)
    print('BEFORE RUN', dispatcher.getStatusInfo()['status'])
    conn = db.open()
    job = zcasync.interfaces.IQueue(conn).put(
        zcasync.job.Job(operator.mul, 6, 7))
    transaction.commit()

    def check():
        transaction.begin()
        if job.status == zcasync.interfaces.COMPLETED:
            print('RESULT', job.result)
            reactor.stop()
        else:
            reactor.callLater(0.05, check)
    reactor.callLater(0.05, check)
    reactor.callLater(30, reactor.stop)
    reactor.run()
    print('AFTER STOP', dispatcher.getStatusInfo()['status'])
''')


def test_configure_start_on_the_global_twisted_reactor(tmp_path):
    env = dict(os.environ, ZC_ASYNC_UUID=str(tmp_path / 'uuid.txt'))
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT, str(tmp_path / 'Data.fs')],
        capture_output=True, text=True, timeout=60, env=env,
        cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'GLOBAL REACTOR True', 'BEFORE RUN STARTING', 'RESULT 42',
        'AFTER STOP STOPPED'], done.stderr
