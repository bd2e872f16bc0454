"""Importing any zcasync module has no side effects and needs no other
import first (issue 9, case 9): each module is imported first thing in a
fresh interpreter, in an empty directory, with the instance UUID file
pointing into it; nothing may be created, no thread started."""
import os
import pkgutil
import subprocess
import sys

import zcasync

CHECK = '''
import sys, threading
import %s
assert threading.active_count() == 1, threading.enumerate()
'''


def modules():
    names = ['zcasync']
    for info in pkgutil.walk_packages(zcasync.__path__, 'zcasync.'):
        if info.name.rsplit('.', 1)[-1] != '__main__':
            names.append(info.name)
    return names


def test_every_module_imports_alone_without_side_effects(tmp_path):
    env = dict(os.environ, ZC_ASYNC_UUID=str(tmp_path / 'uuid.txt'))
    names = modules()
    assert 'zcasync.composite' in names and 'zcasync.queue' in names
    processes = {}
    for name in names:
        cwd = tmp_path / name
        cwd.mkdir()
        processes[name] = subprocess.Popen(
            [sys.executable, '-c', CHECK % name], cwd=str(cwd), env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failures = {}
    for name, process in processes.items():
        output = process.communicate(timeout=120)[0]
        if process.returncode != 0:
            failures[name] = output.strip().splitlines()[-1:]
        left = os.listdir(str(tmp_path / name))
        if left:
            failures[name] = 'created %s' % left
    assert failures == {}
    assert sorted(os.listdir(str(tmp_path))) == sorted(names)  # no uuid.txt
