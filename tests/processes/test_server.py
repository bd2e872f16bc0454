"""``zcasync server`` stops promptly on SIGTERM, with and without
clients (it used to wait out a 2 s timeout whenever a client was
connected), and its log is not flooded by ZEO's per-connection lines."""
import signal
import subprocess
import time

from tests.processes.conftest import ROOT, zcasync, childEnvironment, waitFor


def stopTime(process):
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0
    return time.monotonic() - started


def test_sigterm_without_clients_stops_at_once(zeo):
    elapsed = stopTime(zeo.process)
    text = zeo.process.text()
    assert 'ZEO server stopped (0 client(s) disconnected)' in text
    # generous for a loaded machine, yet below the old 2 s timeout
    assert elapsed < 1.5, elapsed


def test_sigterm_with_a_worker_connected_closes_it_and_stops(processes, zeo):
    worker = processes.worker('worker', zeo.uri)
    waitFor(lambda: 'attempting to activate' in worker.text(), 60,
            'the worker to connect')
    elapsed = stopTime(zeo.process)
    text = zeo.process.text()
    assert 'ZEO server stopped (1 client(s) disconnected)' in text
    assert 'still open after' not in text
    assert elapsed < 1.9, elapsed
    assert worker.alive  # it rides out the outage, reconnecting


def test_a_short_command_adds_no_line_to_the_server_log(zeo):
    before = zeo.process.text()
    done = subprocess.run(zcasync('status', '--db', zeo.uri), cwd=ROOT,
                          env=childEnvironment(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    time.sleep(0.2)  # let the server log the disconnection, if it would
    assert zeo.process.text() == before
