"""``zcasync migrate``: convert a zc.async 1.x database for zcasync, in
place.

The modules (no persistent class of zcasync's lives here; the stand-ins
of ``legacy`` keep their paths, as a migration interrupted after its
renaming stage needs them):

- ``pipeline``: the stages in order, their progress record
  (``root['zcasync.migration']``), ``Migration`` and ``Report``;
- ``survey``: what the records hold, read without importing any stored
  class (counts by class, jobs by zc.async state, unknown names);
- ``renames``: the zodbupdate rules (zc.async class paths to zcasync's
  or to the stand-ins) and the renaming stage;
- ``converters``: jobs, callback proxies, failures, retry policies;
- ``containers``: queues, quotas, dispatcher registrations, agents, and
  the batched moves of pending and completed jobs;
- ``legacy``: stand-ins for the objects that are replaced;
- ``python2``: the ``--from-python2`` stage (with ``py2records``, the
  per-record conversion through zodbupdate);
- ``walk``: a record walker that imports nothing (class paths, globals,
  value kinds), used by the Python 2 stage and its tests.

The command line is ``zcasync.cli.migrate``.
"""
