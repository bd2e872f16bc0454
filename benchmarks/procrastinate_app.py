"""The Procrastinate app of the reference benchmark: a no-op task and a
task that notes when it started.

``makeApp(dsn)`` makes one (the benchmark process makes its own);
``app`` is the one ``procrastinate --app benchmarks.procrastinate_app.app
worker`` runs in worker processes, on the database that the environment
variable ``ZCASYNC_BENCH_PROCRASTINATE_DSN`` names.  Making an app
connects to nothing.

The tasks are ``async``: Procrastinate runs ``concurrency`` of them at
once on its event loop (its documentation advises against concurrency
with blocking synchronous tasks).
"""
import os
import time

DSN_VARIABLE = 'ZCASYNC_BENCH_PROCRASTINATE_DSN'

#: token -> time.time() taken first thing in a ``started`` task (for
#: workers in this process)
STARTED = {}


def makeApp(dsn):
    from procrastinate import App, PsycopgConnector
    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name='noop')
    async def noop():
        """Do nothing: the drain measures the queue, not the work."""

    @app.task(name='started')
    async def started(token):
        STARTED[token] = time.time()

    return app


app = makeApp(os.environ.get(DSN_VARIABLE, ''))
