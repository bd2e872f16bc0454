"""The dashboard's JSON shapes (zcasync.web.api) and job lists
(zcasync.web.listing) on a FileStorage: jobs run in immediate mode, so
they are claimed by an agent and completed into its collection as under
a worker."""
import datetime
import math
import operator

import pytest

from zcasync import interfaces
from zcasync import utils
from zcasync.job import Job, serial
from zcasync.queue import Queue
from zcasync.web import api
from zcasync.web.api import ApiError
from zcasync.web.listing import JobQuery

from web_support import putJobs, runJobs, startJob


def listAll(root, **kw):
    """Every page of a list, following the cursors; (ids, pages)."""
    ids, pages, cursor = [], 0, None
    while True:
        page = JobQuery(cursor=cursor, **kw).run(root)
        pages += 1
        ids.extend(j['id'] for j in page['items'])
        if page['next'] is None:
            return ids, pages
        cursor = api.decodeCursor(page['next'])


def test_status_names_map_known_constants_and_show_unknown_ones():
    assert [api.statusName(s) for s in interfaces.STATUSES] == [
        'new', 'pending', 'parked', 'assigned', 'active', 'callbacks',
        'completed']
    assert api.statusName('some-future-status') == 'some-future-status'


@pytest.mark.parametrize('value, expected', [
    (0.5, {'fraction': 0.5, 'done': None, 'total': None}),
    (1, {'fraction': 1.0, 'done': None, 'total': None}),
    (2.5, {'fraction': 1.0, 'done': None, 'total': None}),
    (-1, {'fraction': 0.0, 'done': None, 'total': None}),
    ((1, 4), {'fraction': 0.25, 'done': 1, 'total': 4}),
    ([3, 3], {'fraction': 1.0, 'done': 3, 'total': 3}),
    ({'done': 1, 'total': 3}, {'fraction': 0.3333, 'done': 1, 'total': 3}),
    ('half', None), (None, None), (True, None), ((1, 0), None),
    ((1, 2, 3), None), (('a', 2), None), (float('nan'), None),
    ({'done': 1}, None),
])
def test_progress_conventions(value, expected):
    assert api.progressOf(value) == expected


def test_display_makes_values_json_ready():
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(
        datetime.timedelta(hours=1)))
    assert api.display((1, 'a', [2.5, None])) == [1, 'a', [2.5, None]]
    assert api.display({'when': when}) == {
        'when': '2030-01-02T02:04:05+00:00'}
    assert api.display(2 ** 70) == str(2 ** 70)
    assert api.display(math.inf) == 'inf'
    assert api.display('x' * 3000) == 'x' * api.TEXT_LIMIT + '...'
    assert api.display({1: 2}) == '{1: 2}'
    assert api.display(object()).startswith('<object object at')
    assert api.display([[[[['deep']]]]]) == [[[[
        "['deep']"]]]]


def test_overview_counts_queues_dispatchers_and_running_jobs(conn, queue,
                                                             ticking):
    conn.root()[interfaces.KEY]['reports'] = Queue()
    putJobs(conn, (operator.add, 1, 2), (operator.truediv, 1, 0))
    runJobs(conn)
    running = putJobs(conn, (operator.add, 3, 4))[0]
    putJobs(conn, (operator.add, 5, 6), (operator.add, 7, 8),
            begin_after=ticking.now + datetime.timedelta(hours=1))
    job = startJob(conn)
    assert job is running
    job.annotations['progress'] = (1, 4)
    job.annotations['status'] = 'step 1'
    conn.transaction_manager.commit()
    ticking.advance(5)
    data = api.overview(conn.root())
    assert [q['name'] for q in data['queues']] == ['', 'reports']
    primary = data['queues'][0]
    assert primary['pending'] == 2
    assert primary['oldest_wait_seconds'] is None  # both scheduled later
    assert primary['next_due'] is not None
    assert primary['running'] == 1 and primary['capacity'] == 3
    # the immediate-mode registration is not activated: stopped
    assert primary['dispatchers'] == {'alive': 1, 'dead': 0, 'stopped': 1}
    assert data['totals']['pending'] == 2
    [row] = data['running']
    assert row['id'] == api.jobId(job)
    assert row['status'] == 'active'
    assert row['progress'] == {'fraction': 0.25, 'done': 1, 'total': 4}
    assert row['status_text'] == 'step 1'
    assert row['call'] == '_operator.add(3, 4)'
    assert 5 <= row['duration_seconds'] < 6


def test_oldest_wait_is_the_first_due_jobs_wait(conn, queue, ticking):
    putJobs(conn, (operator.add, 1, 2))
    ticking.advance(30)
    info = api.queueInfo('', queue, utils.now())
    assert 30 <= info['oldest_wait_seconds'] < 31


def test_pending_pages_follow_claim_order_across_queues(conn, queue,
                                                        ticking):
    conn.root()[interfaces.KEY]['b'] = Queue()
    first = putJobs(conn, *[(operator.add, i, 0) for i in range(4)])
    second = putJobs(conn, *[(operator.add, i, 1) for i in range(3)],
                     queue='b')
    expected = [api.jobId(j) for j in first + second]
    ids, pages = listAll(conn.root(), state='pending', limit=3)
    assert ids == expected
    assert pages == 3
    ids, pages = listAll(conn.root(), state='pending', limit=7)
    assert (ids, pages) == (expected, 1)  # no empty page after a full one
    ids, pages = listAll(conn.root(), state='pending', queue='b', limit=2)
    assert ids == expected[4:]


def test_a_page_cursor_survives_new_jobs(conn, queue, ticking):
    jobs = putJobs(conn, *[(operator.add, i, 0) for i in range(4)])
    page = JobQuery(state='pending', limit=2).run(conn.root())
    queue.putBack(Job(operator.add, 'front', 0))  # sorts first
    putJobs(conn, (operator.add, 'last', 0))
    cursor = api.decodeCursor(page['next'])
    rest = JobQuery(state='pending', limit=10, cursor=cursor).run(
        conn.root())
    assert [j['id'] for j in rest['items']][:2] == [
        api.jobId(j) for j in jobs[2:]]
    assert len(rest['items']) == 3


def test_completed_lists_newest_first_with_outcome_filters(conn, queue,
                                                           ticking):
    putJobs(conn, *[(operator.truediv, i, i % 3) for i in range(9)])
    ran = runJobs(conn)
    newest_first = [api.jobId(j) for j in reversed(ran)]
    ids, pages = listAll(conn.root(), state='completed', limit=4)
    assert ids == newest_first and pages == 3
    failed = [api.jobId(j) for j in reversed(ran) if j.args[1] == 0]
    ids, pages = listAll(conn.root(), state='failed', limit=2)
    assert ids == failed
    page = JobQuery(state='failed', limit=1).run(conn.root())
    assert page['items'][0]['error'] == \
        'builtins.ZeroDivisionError: division by zero'
    assert page['items'][0]['failed'] is True
    ids, pages = listAll(conn.root(), state='succeeded', limit=10)
    assert ids == [i for i in newest_first if i not in failed]
    ids, pages = listAll(conn.root(), state='completed', callable='add')
    assert ids == []
    middle = ran[4].active_end
    ids, pages = listAll(conn.root(), state='completed', since=middle,
                         until=ran[6].active_end)
    assert ids == newest_first[2:5]


def test_a_filtered_walk_stops_and_goes_on_from_its_cursor(
        conn, queue, ticking, monkeypatch):
    putJobs(conn, *[(operator.truediv, i, 0 if i in (1, 5) else 1)
                    for i in range(10)])
    ran = runJobs(conn)
    monkeypatch.setattr(api, 'SCAN_LIMIT', 3)
    page = JobQuery(state='failed').run(conn.root())
    assert page['complete'] is False and page['scanned'] == 3
    assert page['items'] == []  # the newest three all succeeded
    ids, pages = listAll(conn.root(), state='failed')
    assert ids == [api.jobId(ran[5]), api.jobId(ran[1])]
    assert pages == 4


def test_running_lists_held_jobs_by_status(conn, queue, ticking):
    putJobs(conn, (operator.add, 1, 2), (operator.add, 3, 4))
    first = startJob(conn)
    agent = first.agent
    second = agent.claimJob()  # assigned, not started
    conn.transaction_manager.commit()
    ids, pages = listAll(conn.root(), state='running', limit=1)
    assert ids == [api.jobId(first), api.jobId(second)] and pages == 2
    assert listAll(conn.root(), state='active')[0] == [api.jobId(first)]
    assert listAll(conn.root(), state='assigned')[0] == [api.jobId(second)]


def test_job_detail(conn, queue, ticking):
    [job] = putJobs(conn, (operator.truediv, 1, 0))
    runJobs(conn)
    job.annotations['zcasync.RetryCommonFourTimes'] = {'interruption': 2}
    job.annotations['elapsed'] = datetime.timedelta(seconds=3)
    conn.transaction_manager.commit()
    info = api.jobDetail(job)
    assert info['status'] == 'completed' and info['failed'] is True
    assert info['args'] == [1, 0] and info['kwargs'] == {}
    assert 'ZeroDivisionError' in info['traceback']
    assert info['result'] is None
    assert info['retry_counts'] == {'interruption': 2}
    assert info['annotations']['elapsed'] == 'datetime.timedelta(seconds=3)'
    assert info['queue'] == '' and info['agent'] == 'immediate'
    assert info['repr'] == repr(job)
    assert info['callbacks'] == [] and info['parent'] is None


def test_job_detail_of_a_serial_job_links_parts(conn, queue, ticking):
    from zcasync.interfaces import KEY
    main = conn.root()[KEY][''].put(serial(
        Job(operator.add, 1, 2), Job(operator.mul, 3, 4)))
    conn.transaction_manager.commit()
    runJobs(conn)
    info = api.jobDetail(main)
    assert info['status'] == 'completed' and info['result'] == [3, 12]
    children = [c['call'] for c in info['children']]
    assert children[:2] == ['_operator.add(1, 2)', '_operator.mul(3, 4)']
    assert children[2].startswith('zcasync.composite._results(')
    first = main.args[0]
    part = api.jobDetail(first)
    assert [r['id'] for r in part['reports_to']] == [api.jobId(main)]
    assert part['callbacks'][0]['call'].startswith(
        'zcasync.composite._serialNext(')


def test_an_unreadable_job_is_listed_as_such():

    class Unreadable:
        _p_oid = b'\0' * 7 + b'\x05'

        @property
        def status(self):
            raise KeyError('gone')
    summary = api.jobSummary(Unreadable())
    assert summary['status'] == 'unreadable'
    assert summary['error'] == "KeyError: 'gone'"


def test_finding_jobs_refuses_bad_ids_clearly(conn, queue):
    with pytest.raises(ApiError) as e:
        api.findJob(conn, 'abc')
    assert e.value.status == 400 and 'OID@DATABASE' in e.value.message
    with pytest.raises(ApiError) as e:
        api.findJob(conn, '987654')
    assert e.value.status == 404 and 'no job 987654' in e.value.message
    with pytest.raises(ApiError) as e:
        api.findJob(conn, '1@elsewhere')
    assert e.value.status == 404 and "database 'elsewhere'" in \
        e.value.message
    oid = utils.jobId(queue)[0]
    with pytest.raises(ApiError) as e:
        api.findJob(conn, str(int.from_bytes(oid, 'big')))
    assert e.value.status == 404 and 'a Queue, not a job' in e.value.message


@pytest.mark.parametrize('args, message', [
    ({'state': ['lost']}, "state='lost' is not one of pending, running"),
    ({'limit': ['0']}, 'limit must be an integer from 1 to 500'),
    ({'limit': ['many']}, "limit='many' is not an integer"),
    ({'since': ['yesterday']}, "since='yesterday' is not an ISO 8601"),
    ({'since': ['2030-01-01T00:00:00']}, 'has no time zone'),
    ({'since': ['2030-01-02T00:00Z'], 'until': ['2030-01-01T00:00Z']},
     'since (2030-01-02T00:00:00+00:00) is after until'),
    ({'sort': ['new']}, 'unknown parameter(s) sort'),
    ({'state': ['pending', 'failed']}, 'give state once'),
    ({'cursor': ['%%%']}, 'cursor'),
])
def test_job_list_parameters_are_checked(args, message):
    with pytest.raises(ApiError) as e:
        JobQuery.fromArgs(args)
    assert e.value.status == 400
    assert message in e.value.message


def test_a_cursor_of_another_list_is_refused(conn, queue, ticking):
    putJobs(conn, *[(operator.add, i, 0) for i in range(3)])
    page = JobQuery(state='pending', limit=1).run(conn.root())
    cursor = api.decodeCursor(page['next'])
    with pytest.raises(ApiError) as e:
        JobQuery(state='running', cursor=cursor).run(conn.root())
    assert 'another list' in e.value.message
    with pytest.raises(ApiError) as e:
        JobQuery(state='pending', queue='nope').run(conn.root())
    assert e.value.status == 404 and "no queue 'nope'" in e.value.message
