"""The job commands against a ZEO server with a live worker: ``put
--wait`` prints the result (exit 0), the traceback of a failure (exit 1),
or gives up after its timeout (exit 9); ``status`` and ``jobs`` show the
live worker and its running job; ``cancel`` refuses a running job."""
import json
import subprocess

from tests.processes.conftest import (
    ROOT, zcasync, childEnvironment, waitFor, startLines)


def cli(*argv, timeout=60):
    return subprocess.run(zcasync(*argv), cwd=ROOT, env=childEnvironment(),
                          capture_output=True, text=True, timeout=timeout)


def test_put_wait_status_jobs_and_cancel_with_a_live_worker(processes, zeo,
                                                            tmp_path):
    worker = processes.worker('worker', zeo.uri)
    db = ('--db', zeo.uri)
    waitFor(lambda: '"activated": null' not in cli('status', '--json',
                                                   *db).stdout and
            json.loads(cli('status', '--json', *db).stdout)['queues'],
            60, 'the worker to show in status')

    log = str(tmp_path / 'runs.log')
    done = cli('put', '--wait', '30', 'tests.processes.jobfuncs:record',
               '5', log, *db)
    assert done.returncode == 0, done.stderr
    ident, result = done.stdout.splitlines()
    assert json.loads(result) == [5, worker.pid]

    done = cli('put', '--wait', 'tests.processes.jobfuncs:hold', '1',
               '"not a number"', *db)
    assert done.returncode == 1, done.stderr
    assert 'Traceback' in done.stdout
    assert 'FileNotFoundError' in done.stdout.splitlines()[-1]

    done = cli('put', '--in', '3600', '--wait', '0.5',
               'tests.processes.jobfuncs:record', '6', log, *db)
    assert done.returncode == 9
    later = done.stdout.strip()
    assert done.stderr.strip() == (
        'zcasync put: error: job %s is still pending after 0.5 s; it stays '
        'queued ("zcasync job %s" shows it later)' % (later, later))

    done = cli('put', 'tests.processes.jobfuncs:hold', '7', str(tmp_path),
               *db)
    running = done.stdout.strip()
    waitFor(lambda: startLines(tmp_path), 30, 'the job to start')
    status = json.loads(cli('status', '--json', *db).stdout)
    [queue] = status['queues']
    [dispatcher] = queue['dispatchers']
    assert dispatcher['activated'] and not dispatcher['dead']
    assert dispatcher['agents'][0]['held'] == 1
    assert queue['pending'] == 1  # the scheduled one
    active = json.loads(cli('jobs', 'active', '--json', *db).stdout)
    assert [j['id'] for j in active] == [running]
    assert active[0]['call'].startswith('tests.processes.jobfuncs.hold(7')
    done = cli('cancel', running, *db)
    assert done.returncode == 7
    assert 'it is active (it is running in a worker)' in done.stderr
    done = cli('cancel', later, *db)
    assert done.returncode == 0
    (tmp_path / 'release-7').touch()
    done = cli('put', '--wait', '30', 'tests.processes.jobfuncs:record',
               '8', log, *db)  # the worker is free again
    assert done.returncode == 0
    assert json.loads(cli('job', running, '--json', *db).stdout)[
        'result'] == [7, worker.pid]
    failed = json.loads(cli('jobs', 'failed', '--json', *db).stdout)
    assert len(failed) == 1 and 'hold(1' in failed[0]['call']
