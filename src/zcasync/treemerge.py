"""The three-way bucket merge behind ``zcasync.queue.JobTree``'s conflict
resolution (pure functions on pickled bucket states; the persistent
classes stay in ``zcasync.queue``, their on-disk home).

Plain BTrees refuse to merge a removal of a bucket's *first* key with any
concurrent change to that bucket (a claim and a put in a small queue,
whose jobs share one bucket, would always conflict); ``mergeBuckets``
merges them when that is safe.
"""
from BTrees.Interfaces import BTreesConflictError

# BTreesConflictError reasons handled by JobTree (see BTrees' merge code)
EMPTIED, FIRST_DELETED = 12, 13
_MISSING = object()


def _bucketItems(state):
    if state is None:
        return []
    flat = state[0]
    return list(zip(flat[0::2], flat[1::2]))


def _same(a, b):
    if a is b:
        return True
    try:
        return a == b
    except ValueError:  # two different ZODB PersistentReferences
        return False


def mergeBuckets(old, committed, new, inline):
    """Three-way merge of bucket states that BTrees refused only because
    one side removed the bucket's first key (or, for a tree held in one
    inline bucket, emptied it).  Returns the merged bucket state, None for
    an empty inline tree; raises BTreesConflictError when unsafe.

    A key removed, changed or added by both sides is a real conflict (two
    claims of one job).  Removing a bucket's first key may have moved the
    parent node's separator up to that side's new first key, so keys the
    other side added must sort after it; an emptied bucket is unlinked
    from its tree, so only an inline tree may end up empty.
    """
    o, c, n = (_bucketItems(s) for s in (old, committed, new))
    cd, nd = dict(c), dict(n)
    merged = {}
    for key, value in o:
        cv, nv = cd.get(key, _MISSING), nd.get(key, _MISSING)
        c_changed = cv is _MISSING or not _same(cv, value)
        n_changed = nv is _MISSING or not _same(nv, value)
        if c_changed and n_changed:
            raise BTreesConflictError(-1, -1, -1, 5)
        result = cv if c_changed else nv
        if result is not _MISSING:
            merged[key] = result
    old_keys = {key for key, value in o}
    added_c = [key for key, value in c if key not in old_keys]
    added_n = [key for key, value in n if key not in old_keys]
    if set(added_c) & set(added_n):
        raise BTreesConflictError(-1, -1, -1, 6)
    for key in added_c:
        merged[key] = cd[key]
    for key in added_n:
        merged[key] = nd[key]
    if not inline:
        if not merged or not c or not n:
            raise BTreesConflictError(-1, -1, -1, EMPTIED)
        first = o[0][0]
        for side, added_other in ((c, added_n), (n, added_c)):
            if side[0][0] > first and any(k < side[0][0]
                                          for k in added_other):
                raise BTreesConflictError(-1, -1, -1, FIRST_DELETED)
    if not merged:
        return None
    flat = []
    for key in sorted(merged):
        flat.extend((key, merged[key]))
    state = (tuple(flat),)
    if not inline and old is not None and len(old) > 1:
        state += (old[1],)  # BTrees checked that no side changed `next`
    return state
