"""The job commands against a ZEO server with a live worker: ``put
--wait`` prints the result (exit 0), the traceback of a failure (exit 1),
or gives up after its timeout (exit 9); ``status`` and ``jobs`` show the
live worker and its running job; ``cancel`` cancels a scheduled job and
refuses a completed one."""
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
    def alive():
        found = json.loads(cli('status', '--json', *db).stdout)
        return [d for d in found['dispatchers'] if d['state'] == 'alive']
    waitFor(alive, 60, 'the worker to show in status')

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
    [dispatcher] = status['dispatchers']
    assert dispatcher['state'] == 'alive'
    assert dispatcher['agents'][0]['held'] == 1
    assert [j['id'] for j in dispatcher['agents'][0]['jobs']] == [running]
    assert queue['pending'] == 1  # the scheduled one
    assert (queue['running'], queue['capacity']) == (1, 3)
    assert status['warnings'] == []
    active = json.loads(cli('jobs', 'active', '--json', *db).stdout)[
        'items']
    assert [j['id'] for j in active] == [running]
    assert active[0]['call'].startswith('tests.processes.jobfuncs.hold(7')
    done = cli('cancel', later, *db)
    assert done.returncode == 0
    assert 'completed with CancelledError' in done.stdout
    (tmp_path / 'release-7').touch()
    done = cli('put', '--wait', '30', 'tests.processes.jobfuncs:record',
               '8', log, *db)  # the worker is free again
    assert done.returncode == 0
    assert json.loads(cli('job', running, '--json', *db).stdout)[
        'result'] == [7, worker.pid]
    done = cli('cancel', running, *db)
    assert done.returncode == 7
    assert 'it is completed' in done.stderr
    assert 'nothing to cancel' in done.stderr
    failed = json.loads(cli('jobs', 'failed', '--json', *db).stdout)[
        'items']
    assert len(failed) == 2  # newest first: the cancelled one
    assert failed[0]['id'] == later and 'hold(1' in failed[1]['call']
    cancelled = json.loads(cli('jobs', 'cancelled', '--json', *db).stdout)
    assert [j['id'] for j in cancelled['items']] == [later]


def test_put_wait_json_is_one_document_and_a_terminal_sees_progress(
        processes, zeo, tmp_path):
    import os
    import pty
    import select
    worker = processes.worker('worker', zeo.uri)
    db = ('--db', zeo.uri)
    waitFor(lambda: json.loads(cli('status', '--json', *db).stdout)[
        'queues'], 60, 'the worker to create its queue')
    done = cli('put', '--wait', '60', '--json',
               'tests.processes.jobfuncs:record', '1',
               str(tmp_path / 'runs.log'), *db)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)  # nothing before or after the document
    assert info['result'] == [1, worker.pid]
    assert (info['status'], info['state']) == ('completed', 'succeeded')
    assert info['kwargs'] == {} and info['warnings'] == []

    # stderr on a terminal: the job's progress on one line, kept up to
    # date; stdout (piped) gets the id, then the result as JSON
    master, slave = pty.openpty()
    process = subprocess.Popen(
        zcasync('put', '--wait', '60', 'tests.processes.jobfuncs:report',
                '2', str(tmp_path), *db), cwd=ROOT, env=childEnvironment(),
        stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = []

    def shows(text):
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            seen.append(os.read(master, 4096).decode())
        return text in ''.join(seen)
    try:
        waitFor(lambda: shows('active 0% (0/2) step 1'), 60, 'progress')
        (tmp_path / 'step-0').touch()
        waitFor(lambda: shows('active 50% (1/2) step 2'), 60, 'progress')
        (tmp_path / 'step-1').touch()
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert process.returncode == 0
    ident, result = out.splitlines()
    assert json.loads(result) == '{2}'  # not JSON: its repr, as a string
    assert 'job %s: active' % ident in ''.join(seen)
