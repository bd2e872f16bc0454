"""When the job machinery fails outside the job's own code, the job is
failed in place instead of staying ACTIVE and holding its agent's slot;
a retry policy that cannot be made falls back on the default one."""
import operator

import zope.component

from test_dispatcher_support import Running, addAgent
from zcasync import interfaces
from zcasync import retry
from zcasync import testing
from zcasync import utils
from zcasync.job import Job


class BrokenJob(Job):
    """A job whose running machinery breaks (not its callable)."""

    def _runClaimedSteps(self, token):  # what a dispatcher's runner runs
        raise RuntimeError('the machinery broke')


def test_machinery_failure_fails_the_job_and_frees_the_slot(db, conn, queue):
    with Running(db, poll_interval=60) as running:
        addAgent(conn, running.dispatcher, 'main', size=1)
        broken = queue.put(BrokenJob(operator.mul, 6, 7))
        good = queue.put(Job(operator.mul, 6, 7))
        conn.transaction_manager.commit()
        result = testing.wait_for_result(broken)
        assert utils.isFailure(result)
        assert 'the machinery broke' in result.getErrorMessage()
        assert testing.wait_for_result(good) == 42  # the slot was freed
        info = running.dispatcher.getJobInfo(broken._p_oid)
        assert info['failed'] and 'the machinery broke' in info['result']


def test_unknown_policy_name_falls_back_on_the_default(db, conn, queue):
    gsm = zope.component.getGlobalSiteManager()
    gsm.registerUtility(retry.NeverRetry, interfaces.IRetryPolicyFactory,
                        'only-here')
    job = queue.put(Job(operator.mul, 6, 7),
                    retry_policy_factory='only-here')
    conn.transaction_manager.commit()
    # the worker process does not know the name
    gsm.unregisterUtility(retry.NeverRetry, interfaces.IRetryPolicyFactory,
                          'only-here')
    with Running(db, poll_interval=60) as running:
        addAgent(conn, running.dispatcher, 'main', size=1)
        assert testing.wait_for_result(job) == 42
