"""The dashboard page in a real headless browser (Debian's chromium driven
by playwright), against a ZEO server, a worker and ``zcasync dashboard``:
the overview follows a job from pending to running to completed without
a reload, its progress bar moves, a failed job's traceback shows (its
``<script>`` inert), retrying it is refused without the token and done
with it, a result holding ``<script>`` shows as text, and a page whose
event stream fails polls instead.

A screenshot of the overview is saved in the test's folder; with
ZCASYNC_DOCS_SCREENSHOT=1 also as docs/dashboard.png (README's).
"""
import json
import operator
import os
import re
import shutil

import pytest
import ZODB.utils

from tests.processes import webjobs
from tests.processes.conftest import Client, ROOT, waitFor
from tests.processes.dashboard_support import TOKEN, WEBJOBS, startDashboard

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run']
WAIT = 15000  # ms, for the page to show a change
EVIL = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip('no chromium at %s (apt-get install -y chromium; '
                    '.ci/run installs it)' % CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('playwright is not installed (pip install -e '
                    '".[test]")')
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def ident(oid):
    return '%d@unnamed' % ZODB.utils.u64(oid)


def setSize(client, size):
    for attempt in client.tm.attempts(10):
        with attempt:
            queue = client.queue()
            [agents] = [a for a in queue.dispatchers.values()
                        if a.activated]
            agents['main'].size = size


def test_the_page_follows_jobs_live_and_retries_with_the_token(
        processes, zeo, tmp_path, browser):
    from playwright.sync_api import expect
    processes.worker('worker', zeo.uri, None, '--import', WEBJOBS, size=1)
    dashboard, port = startDashboard(processes, zeo.uri)
    client = Client(zeo.uri)
    try:
        waitFor(lambda: client.activeDispatchers(), 60, 'the worker')
        setSize(client, 0)  # the job stays pending until we say so
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors = []
        page.on('pageerror', lambda error: errors.append(str(error)))
        page.goto('http://127.0.0.1:%d/' % port)
        page.wait_for_selector('#live.on', timeout=WAIT)
        page.evaluate('window.__marker = "no reload"')

        [job] = map(ident, client.put((webjobs.steps, str(tmp_path), 2)))
        pending, running, completed, failures = (
            page.locator('#totals .card .value').nth(i) for i in range(4))
        expect(pending).to_have_text('1', timeout=WAIT)
        expect(page.locator('tr.job')).to_have_count(0)  # not running
        setSize(client, 1)
        row = page.locator('tr.job[data-id="%s"]' % job)
        expect(row.locator('.badge')).to_have_text('active', timeout=WAIT)
        expect(pending).to_have_text('0', timeout=WAIT)
        bar = row.locator('[role=progressbar]')
        expect(bar).to_have_attribute('aria-valuenow', '0', timeout=WAIT)
        expect(row).to_contain_text('waiting for step 1 of 2')
        (tmp_path / 'release-1').touch()
        expect(bar).to_have_attribute('aria-valuenow', '50', timeout=WAIT)
        expect(row).to_contain_text('waiting for step 2 of 2')
        (tmp_path / 'release-2').touch()
        expect(row).to_have_count(0, timeout=WAIT)  # no longer running
        expect(completed).to_have_text('1', timeout=WAIT)
        assert page.evaluate('window.__marker') == 'no reload'

        [failed] = map(ident, client.put((webjobs.explode, EVIL)))
        expect(failures).to_have_text('1', timeout=WAIT)
        page.screenshot(path=str(tmp_path / 'overview.png'), full_page=True)
        if os.environ.get('ZCASYNC_DOCS_SCREENSHOT'):
            shutil.copy(str(tmp_path / 'overview.png'),
                        os.path.join(ROOT, 'docs', 'dashboard.png'))

        page.click('nav a[data-view=jobs]')
        page.click('.tabs a:text-is("failed")')
        page.click('td a:text-is("%s")' % failed)
        traceback = page.locator('pre.traceback')
        expect(traceback).to_contain_text('ValueError: ' + EVIL,
                                          timeout=WAIT)
        expect(page.locator('table.details pre').first).to_contain_text(
            '<script>window.__xss = 1</script><img src=x')  # the argument
        assert page.evaluate('window.__xss') is None  # inert
        assert page.locator('main script, main img[src=x]').count() == 0

        page.click('button:text-is("Retry")')
        expect(page.locator('#toast .error')).to_contain_text(
            'retry refused (403): actions need the dashboard token',
            timeout=WAIT)
        client.tm.begin()
        assert len(client.queue()) == 0
        original = client.conn.get(ZODB.utils.p64(int(failed.split('@')[0])))
        assert 'zcasync.retried_as' not in original.annotations

        page.fill('#token', TOKEN)
        page.click('#token-save')
        page.click('button:text-is("Retry")')
        notice = page.locator('p.notice a')
        expect(notice).to_have_count(1, timeout=WAIT)
        new = notice.inner_text()
        client.tm.begin()
        assert original.annotations['zcasync.retried_as'] == new
        notice.click()
        expect(page.locator('h1')).to_contain_text('Job %s failed' % new,
                                                   timeout=WAIT)
        expect(page.locator('pre.traceback')).to_contain_text(
            'ValueError')  # it ran again, and failed again
        assert page.evaluate('window.__xss') is None
        assert page.evaluate('window.__marker') == 'no reload'
        assert errors == []

        # without server-sent events the page polls, and still follows
        polling = browser.new_page()
        polling.route('**/api/events', lambda route: route.abort())
        polling.goto('http://127.0.0.1:%d/' % port)
        live = polling.locator('#live')
        expect(live).to_have_text('polling', timeout=WAIT)
        done = polling.locator('#totals .card .value').nth(2)
        expect(done).to_have_text(re.compile(r'^\d+$'), timeout=WAIT)
        before = done.inner_text()
        [result] = map(ident, client.put((operator.add, EVIL, '!')))
        expect(done).to_have_text(str(int(before) + 1), timeout=WAIT)
        polling.goto('http://127.0.0.1:%d/#/job/%s' % (port, result))
        expect(polling.locator('pre.result')).to_have_text(
            json.dumps(EVIL + '!'), timeout=WAIT)  # a result, as text
        assert polling.evaluate('window.__xss') is None
    finally:
        client.close()
