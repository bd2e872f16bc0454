"""The zcasync dashboard: web pages, a JSON API and Prometheus metrics.

Served by ``twisted.web`` from ``zcasync dashboard --db URI`` or from a
worker (``zcasync worker --http ADDRESS``):

- ``api``: the one place that turns queues, dispatchers, agents, quotas
  and jobs into JSON-ready dicts, with cursor paging and bounded walks;
- ``stats``: an observer that reads each newly completed job once and
  keeps an hour of per-queue buckets (throughput, failures, latencies);
- ``charts``: server-side SVG charts of those buckets;
- ``metrics``: ``/metrics`` in Prometheus text format;
- ``actions``: retry, cancel, resize, prune -- only with the token;
- ``server``: the twisted.web resources, reader threads and server-sent
  events driven by ``zcasync.invalidations``;
- ``static/``: the page (HTML, JavaScript, CSS; no third-party code).

The model never imports this package; the ``zcasync dashboard`` and
``zcasync worker --http`` commands that serve it are in ``zcasync.cli``
(``dashboard``).
"""
