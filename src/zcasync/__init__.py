"""zcasync: a durable, transactional job queue built on ZODB.

The Python 3 successor of zc.async.  See README.md and docs/.
"""
from zcasync import local  # noqa: F401
from zcasync.utils import Failure  # noqa: F401
