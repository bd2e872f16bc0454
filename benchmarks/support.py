"""Small helpers shared by the benchmarks: sizes, waiting, statistics,
child processes and machine facts."""
import dataclasses
import math
import os
import platform
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchmarkError(Exception):
    """A benchmark could not produce its figure (never raised for speed)."""


@dataclasses.dataclass
class Sizes:
    jobs: int = 20_000           # enqueue and drain
    latency_jobs: int = 200      # single jobs on an idle dispatcher
    rss_jobs: int = 100_000      # jobs run by the worker measured for RSS
    scale_small: int = 1_000     # pending jobs, queue scale
    scale_large: int = 100_000
    scale_ops: int = 1_000       # puts and claims timed at each scale
    fill_batch: int = 1_000      # jobs per commit when filling a queue
    size: int = 4                # jobs an agent (or huey) runs at once
    poll_interval: float = 5.0
    idle_gap: float = 0.02       # seconds between latency jobs
    dashboard_completed: int = 100_000  # completed jobs the dashboard shows
    dashboard_pending: int = 10_000
    dashboard_requests: int = 20        # timed requests per URL
    bulk_jobs: int = 20_000      # enqueue, fill_batch jobs per commit
    ceiling_seconds: float = 3.0  # each commit-ceiling measurement
    pg_jobs: int = 2_000         # enqueue and drain on PostgreSQL
    pg_bulk_jobs: int = 10_000   # enqueue on PostgreSQL, fill_batch per commit
    blocked: int = 20_000        # jobs ahead of the claimed one (claim cost)
    claims_cold: int = 3         # timed claims with an empty cache, per run
    claims_warm: int = 5         # timed claims with a warm cache, per run


FULL = Sizes()
QUICK = Sizes(jobs=500, latency_jobs=20, rss_jobs=2_000, scale_small=1_000,
              scale_large=10_000, scale_ops=200, dashboard_completed=5_000,
              dashboard_pending=1_000, dashboard_requests=5, bulk_jobs=2_000,
              ceiling_seconds=0.5, pg_jobs=100, pg_bulk_jobs=2_000,
              blocked=2_000, claims_cold=2, claims_warm=3)


# --- waiting ---------------------------------------------------------------

def waitFor(progress, goal, what, stall=60.0, interval=0.01):
    """Call ``progress()`` every `interval` seconds until it returns at
    least `goal`; BenchmarkError when it stops advancing for `stall`
    seconds.  Returns ``time.perf_counter()`` when the goal was seen."""
    last, last_change = None, time.monotonic()
    while True:
        value = progress()
        if value >= goal:
            return time.perf_counter()
        now = time.monotonic()
        if value != last:
            last, last_change = value, now
        elif now - last_change > stall:
            raise BenchmarkError('%s: stuck at %s of %s for %g s'
                                 % (what, value, goal, stall))
        time.sleep(interval)


def waitUntil(condition, what, timeout=60.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError('%s: not within %g s' % (what, timeout))
        time.sleep(interval)


# --- statistics ------------------------------------------------------------

def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values, fraction):
    """Nearest-rank percentile (`fraction` in 0..1)."""
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# --- child processes -------------------------------------------------------

def _prctl():
    if not sys.platform.startswith('linux'):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


# resolved here: a child between fork and exec only calls it
_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _dieWithParent():
    """The child is killed if the benchmark dies first (Linux).  SIGKILL:
    a worker asked to stop gracefully after its ZEO server died with the
    benchmark can wait forever for the server."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def zcasyncCommand():
    """The ``zcasync`` console script of this Python, else ``-m``."""
    script = os.path.join(os.path.dirname(sys.executable), 'zcasync')
    if os.path.exists(script):
        return [script]
    return [sys.executable, '-m', 'zcasync']


def childEnvironment(extra=None):
    env = dict(os.environ)
    env.update(extra or {})
    paths = [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    return env


def spawn(command, log_path, stdout=None, stdin=None, env=None):
    """Start a child process with stderr (and stdout unless given) in
    `log_path`; `env`: variables added to this process's environment."""
    log = open(log_path, 'ab')
    try:
        return subprocess.Popen(
            command, stdout=stdout or log, stderr=log,
            stdin=stdin or subprocess.DEVNULL, env=childEnvironment(env),
            cwd=ROOT,
            preexec_fn=_dieWithParent if _PRCTL is not None else None)
    finally:
        log.close()


def stop(process, timeout=30.0):
    """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def checkLog(path, what):
    """BenchmarkError when a child's log shows errors."""
    with open(path, errors='replace') as f:
        text = f.read()
    bad = [line for line in text.splitlines()
           if ' ERROR ' in line or ' CRITICAL ' in line or
           line.startswith('Traceback')]
    if bad:
        raise BenchmarkError('%s logged errors (see %s):\n%s'
                             % (what, path, '\n'.join(bad[:5])))


def rss(pid=None):
    import psutil
    return psutil.Process(pid or os.getpid()).memory_info().rss


# --- machine ---------------------------------------------------------------

def machineInfo():
    info = {
        'python': platform.python_version(),
        'implementation': platform.python_implementation(),
        'platform': platform.platform(),
        'logical cores': os.cpu_count(),
    }
    try:
        info['load average'] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import psutil
        info['physical cores'] = psutil.cpu_count(logical=False)
        info['memory GB'] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions = {}
    from importlib import metadata
    for name in ('zcasync', 'ZODB', 'ZEO', 'RelStorage', 'Twisted', 'huey',
                 'procrastinate'):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info['versions'] = versions
    return info
