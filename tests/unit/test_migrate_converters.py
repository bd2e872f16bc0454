"""The state converters of ``zcasync.migrate`` on objects built in memory
with zc.async's layouts (what the renaming stage leaves)."""
import datetime
import pickle

import BTrees.OOBTree
import persistent.list
import persistent.mapping

from zcasync import interfaces
from zcasync import retry
from zcasync import utils
from zcasync.job import Job, SuccessFailureCallbackProxy
from zcasync.migrate import converters, legacy, survey

UTC = datetime.timezone.utc
T = datetime.datetime(2011, 6, 15, 9, 10, tzinfo=UTC)


def double(value):
    return value * 2


def _legacyJob(**state):
    """A zcasync Job holding zc.async's state, as the renaming leaves
    it."""
    job = Job.__new__(Job)
    base = {'_status_id': 0, '_callable_root': double,
            '_callable_name': None,
            'args': persistent.list.PersistentList([21]),
            'kwargs': persistent.mapping.PersistentMapping(),
            'annotations': BTrees.OOBTree.OOBTree(),
            'callbacks': _bucket(), '_begin_after': T}
    base.update(state)
    job.__setstate__(base)
    return job


def _bucket(*items):
    bucket = legacy.BucketQueue()
    bucket.__setstate__({'_data': tuple(items)})
    return bucket


def _failure(type_=ValueError, message='bad', parents=None):
    failure = legacy.Failure()
    failure.__setstate__({
        'type': type_, 'value': type_(message), 'tb': None,
        'frames': [['run', '/srv/app.py', 12, [], []]], 'stack': [],
        'count': 3, 'captureVars': False, 'pickled': 1, 'sanitized': True,
        'parents': parents or ['builtins.ValueError', 'builtins.Exception',
                               'builtins.BaseException', 'builtins.object']})
    return failure


def test_failure_keeps_type_message_traceback_and_stores():
    converted = converters.convertFailure(_failure())
    assert isinstance(converted, utils.Failure)
    assert converted.check(ValueError) and not converted.check(KeyError)
    assert converted.getErrorMessage() == 'bad'
    text = converted.getTraceback()
    assert '/srv/app.py' in text and 'bad' in text
    copy = pickle.loads(pickle.dumps(converted))
    assert copy.check(ValueError) and copy.getErrorMessage() == 'bad'
    assert '/srv/app.py' in copy.getTraceback()


def test_python2_exception_names_in_parents():
    old = _failure(parents=['exceptions.ValueError',
                            'exceptions.StandardError',
                            'exceptions.Exception'])
    converted = converters.convertFailure(old)
    assert converted.check(ValueError)
    assert converted.parents[0] == 'builtins.ValueError'


def test_job_statuses():
    for status_id, status in ((0, interfaces.NEW), (1, interfaces.ACTIVE),
                              (2, interfaces.CALLBACKS),
                              (3, interfaces.COMPLETED)):
        job = _legacyJob(_status_id=status_id)
        assert converters.convertJob(job, converters.Problems())
        assert job._status == status
        assert '_status_id' not in job.__dict__


def test_pre_1_0_status_attribute():
    job = _legacyJob()
    del job.__dict__['_status_id']
    job.__dict__['_status'] = interfaces.PENDING
    assert converters.convertJob(job, converters.Problems())
    assert job._status == interfaces.NEW


def test_job_state_mapped():
    callback = _legacyJob(parent=None)
    job = _legacyJob(
        _status_id=3, _result=_failure(), _active_start=T, _active_end=T,
        key=12345, retry_policy_factory=legacy.NeverRetry,
        callbacks=_bucket(callback),
        kwargs=persistent.mapping.PersistentMapping(x=1))
    policy = legacy.RetryCommonFourTimes()
    data = BTrees.OOBTree.OOBTree()
    data['interruptions'] = 2
    policy.__setstate__({'parent': job, 'data': data})
    job.__dict__['_retry_policy'] = policy
    job.annotations['app.note'] = 'kept'
    assert converters.convertJob(job, converters.Problems())
    assert job.status == interfaces.COMPLETED
    assert job.result.check(ValueError)
    assert (job.active_start, job.active_end) == (T, T)
    assert job.retry_policy_factory is retry.NeverRetry
    assert list(job.callbacks) == [callback]
    assert job.callArguments() == ((21,), {'x': 1})
    assert job.annotations['app.note'] == 'kept'
    assert job.annotations[converters.POLICY_DATA_KEY] == {
        'interruptions': 2}
    for name in ('key', '_retry_policy', 'callbacks', 'kwargs',
                 'retry_policy_factory'):
        assert name not in job.__dict__
    # converted: nothing more to do
    assert not converters.convertJob(job, converters.Problems())


def test_survey_reads_the_status_of_a_legacy_job():
    assert survey.jobStatus({'_status_id': 1}) == 'active'
    queue = survey.Reference(b'\0' * 8, ('zc.async.queue', 'Queue'))
    agent = survey.Reference(b'\0' * 8, ('zc.async.agent', 'Agent'))
    assert survey.jobStatus({'_status_id': 0, 'parent': queue}) == 'pending'
    assert survey.jobStatus({'_status_id': 0, 'parent': agent}) == \
        'assigned'
    assert survey.jobStatus({'_status_id': 0, 'parent': None}) == 'new'
    assert survey.jobStatus({'_status': interfaces.NEW}) is None


def _legacyProxy(default, conditionals):
    proxy = SuccessFailureCallbackProxy.__new__(SuccessFailureCallbackProxy)
    proxy.__setstate__({
        'default': default, 'callbacks': _bucket(),
        'conditionals': persistent.list.PersistentList(conditionals),
        'parent': None})
    return proxy


def test_success_failure_proxy():
    success, failure = _legacyJob(), _legacyJob()
    proxy = _legacyProxy(success, [(utils.isFailure, failure)])
    assert converters.convertProxy(proxy, converters.Problems())
    assert (proxy.success, proxy.failure) == (success, failure)
    assert proxy.callbacks == ()
    assert proxy._choose(utils.makeFailure(ValueError())) is failure
    assert proxy._choose(42) is success
    assert not converters.convertProxy(proxy, converters.Problems())


def test_proxy_without_success_job_passes_results_on():
    failure = _legacyJob()
    proxy = _legacyProxy(None, [(utils.isFailure, failure)])
    assert converters.convertProxy(proxy, converters.Problems())
    assert proxy.failure is failure
    assert proxy.success.callable.__name__ == 'passThrough'
    assert proxy.success.parent is proxy


def test_other_conditions_cannot_be_mapped():
    proxy = _legacyProxy(None, [(callable, _legacyJob())])
    problems = converters.Problems()
    assert not converters.convertProxy(proxy, problems)
    assert len(problems) == 1 and 'success and failure only' in \
        problems[0][2]
    assert 'conditionals' in proxy.__dict__  # left as it was


def test_pytz_utc_stand_in():
    value = datetime.datetime(2011, 6, 15, tzinfo=legacy._UTC())
    assert value.utcoffset() == datetime.timedelta(0)
    assert value.tzinfo is datetime.timezone.utc


def test_proxy_with_a_default_only():
    default = _legacyJob()
    proxy = _legacyProxy(default, [])
    assert converters.convertProxy(proxy, converters.Problems())
    assert proxy._choose(utils.makeFailure(ValueError())) is default
    assert proxy._choose(42) is default


def test_conditional_proxy_renamed_to_zcasync_proxy():
    from zcasync.migrate import renames
    assert renames.RENAMES['zc.async.job', 'ConditionalCallbackProxy'] == \
        ('zcasync.job', 'SuccessFailureCallbackProxy')
