"""README.md as a new user follows it: its Python snippets run in order,
as written, in a fresh directory (``tests/unit/test_readme.py`` is the
only place that knows how); and the demo its quick start runs leaves
nothing behind.

A block whose first line is ``# file: NAME.py`` (or ``# file: NAME.py
(continued)``) is a module the reader writes beside their script: its
lines go to that file.  Every other ``python`` block runs, in order, in
one script.  The script's one blocking call, ``reactor.run()``, is ended
by the harness once the README's job completed (an operator's Ctrl-C),
and the harness then checks what the README says the job returns.
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FILE = re.compile(r'# file: (\S+\.py)( \(continued\))?\n')

PROLOGUE = '''\
# --- the harness: stop the reactor once the README's job completed ---
from twisted.internet import reactor as _reactor, task as _task


def _stopWhenDone(started=[]):
    import time, transaction
    from zcasync import interfaces
    started.append(time.monotonic()) if not started else None
    if time.monotonic() - started[0] > 60:
        _reactor.stop()  # the epilogue reports it
        return
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        if conn.get(job._p_oid).status == interfaces.COMPLETED:
            _reactor.stop()
    finally:
        tm.abort()
        conn.close()


_reactor.callWhenRunning(
    lambda: _task.LoopingCall(_stopWhenDone).start(0.1))
# --- README.md, in order ---
'''

EPILOGUE = '''
# --- the harness: what the README promises ---
import transaction as _transaction
_transaction.begin()
assert first.result == 'document-42.pdf', first.result
print('README snippets ran')
'''


def blocks(text):
    """(files {name: text}, code [text]) from the python blocks."""
    files, code = {}, []
    for block in re.findall(r'```python\n(.*?)```', text, re.DOTALL):
        match = FILE.match(block)
        if match is None:
            code.append(block)
            continue
        name, continued = match.groups()
        body = block[match.end():]
        if continued:
            assert name in files, '%s continued before it began' % name
            files[name] += '\n\n' + body
        else:
            assert name not in files, '%s begins twice' % name
            files[name] = body
    return files, code


def test_the_readme_snippets_run_in_order(tmp_path):
    with open(os.path.join(ROOT, 'README.md')) as f:
        files, code = blocks(f.read())
    assert 'tasks.py' in files and len(code) >= 4
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    # the first block that puts a job names it `job`; keep it as `first`
    script = [PROLOGUE]
    for block in code:
        script.append(block)
        if 'first = ' not in ''.join(script) and 'job = queue.put' in block:
            script.append('first = job\n')
    script.append(EPILOGUE)
    (tmp_path / 'readme_script.py').write_text('\n'.join(script))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('ZCASYNC_') and k != 'ZC_ASYNC_UUID'}
    done = subprocess.run([sys.executable, 'readme_script.py'],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'README snippets ran' in done.stdout
    # the dispatcher's UUID file went where the README says
    assert (tmp_path / 'uuid.txt').exists()


def test_the_demo_leaves_nothing_behind(tmp_path):
    temp, cwd = tmp_path / 'temp', tmp_path / 'cwd'
    temp.mkdir()
    cwd.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))
    env.pop('ZC_ASYNC_UUID', None)
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'examples', 'demo.py')],
        cwd=str(cwd), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'report progress' in done.stdout
    assert list(temp.iterdir()) == []
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize('block, problem', [
    ('```python\n# file: a.py (continued)\nx = 1\n```\n', 'continued'),
])
def test_the_block_reader_refuses_a_continuation_without_a_start(block,
                                                                 problem):
    with pytest.raises(AssertionError, match=problem):
        blocks(block)
