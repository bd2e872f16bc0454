"""SIGTERM stops a worker gracefully: it claims nothing more, lets its
running jobs finish within ``--grace``, exits 0, and what did not finish
is recovered by a sibling."""
import signal

from tests.processes import jobfuncs
from tests.processes.conftest import Client, waitFor, readUUID, startLines


def test_sigterm_finishes_short_jobs_and_leaves_long_ones_to_siblings(
        processes, zeo, tmp_path):
    grace = 4
    stopping = processes.worker('stopping', zeo.uri, None, '--grace', grace)
    client = Client(zeo.uri)
    try:
        uuid = readUUID(waitFor(
            lambda: (tmp_path / 'stopping.uuid').exists() and
            tmp_path / 'stopping.uuid', 30, 'the uuid file'))
        waitFor(lambda: client.activeDispatchers() == {uuid}, 60,
                'the worker')
        short, long = client.put((jobfuncs.hold, 1, str(tmp_path)),
                                 (jobfuncs.hold, 2, str(tmp_path)))
        waitFor(lambda: len(startLines(tmp_path)) == 2, 60, 'both jobs')
        assert {pid for n, pid in startLines(tmp_path)} == {stopping.pid}
        sibling = processes.worker('sibling', zeo.uri)
        waitFor(lambda: len(client.activeDispatchers()) == 2, 60,
                'the sibling')

        stopping.signal(signal.SIGTERM)
        waitFor(lambda: 'claiming no more jobs' in stopping.text(), 30,
                'the worker to stop claiming')
        # a job queued now goes to the sibling: the stopping worker has
        # free slots but claims nothing
        log = str(tmp_path / 'runs.log')
        [later] = client.put((jobfuncs.record, 3, log))
        waitFor(lambda: client.completed([later]), 30, 'the later job')
        assert client.job(later).result == [3, sibling.pid]
        # the short job finishes within the grace period, in the worker
        (tmp_path / 'release-1').touch()
        waitFor(lambda: client.completed([short]), 30, 'the short job')
        assert client.job(short).result == [1, stopping.pid]
        # the long one outlives the grace period: the worker exits 0
        assert stopping.wait(grace + 20) == 0
        assert 'grace period of 4 s over' in stopping.text()
        assert client.queue().dispatchers[uuid].activated is None
        # ... and the sibling recovers the long job
        (tmp_path / 'release-2').touch()
        waitFor(lambda: client.completed([long]), 30, 'the long job')
        job = client.job(long)
        assert job.result == [2, sibling.pid]
        assert job.annotations['runs'] == 1
        assert startLines(tmp_path) == [
            (1, stopping.pid), (2, stopping.pid), (2, sibling.pid)] or \
            startLines(tmp_path) == [
            (2, stopping.pid), (1, stopping.pid), (2, sibling.pid)]
    finally:
        client.close()
    sibling.signal(signal.SIGINT)
    assert sibling.wait(30) == 0
    assert 'SIGINT: claiming no more jobs' in sibling.text()
