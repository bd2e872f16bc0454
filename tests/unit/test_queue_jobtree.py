"""The conflict resolution of ``zcasync.queue.JobTree`` (the tree holding
a queue's and an agent's jobs): what it merges beyond plain BTrees, and
the changes it must still refuse so that no job is lost or handed out
twice.  States are made with real trees and buckets; the end-to-end cases
(two connections on a FileStorage) are in
tests/integration/test_queue_concurrency.py."""
import pytest
from BTrees.Interfaces import BTreesConflictError
from BTrees.OOBTree import OOBTree

from zcasync.queue import JobBucket, JobTree


def key(n):
    return (1, n, b'%08d' % n)


def tree(*numbers):
    t = JobTree()
    for n in numbers:
        t[key(n)] = 'job%d' % n
    return t.__getstate__()


def bucket(*numbers):
    b = JobBucket()
    for n in numbers:
        b[key(n)] = 'job%d' % n
    return b.__getstate__()


def treeItems(state):
    t = JobTree()
    t.__setstate__(state)
    return [k[1] for k in t.keys()]


def bucketItems(state):
    b = JobBucket()
    b.__setstate__(state)
    return [k[1] for k in b.keys()]


def resolveTree(old, committed, new):
    return JobTree()._p_resolveConflict(old, committed, new)


def resolveBucket(old, committed, new):
    return JobBucket()._p_resolveConflict(old, committed, new)


def test_tree_uses_job_buckets():
    t = JobTree()
    for n in range(100):
        t[key(n)] = n
    assert len(t.__getstate__()) == 2  # several buckets now
    assert type(t.__getstate__()[1]) is JobBucket


# --- a tree held in one inline bucket (small queues, agents) ---------------

def test_plain_btrees_refuse_a_claim_with_a_put():
    old, committed, new = tree(1, 2), tree(2), tree(1, 2, 3)
    with pytest.raises(BTreesConflictError):
        OOBTree()._p_resolveConflict(old, committed, new)


@pytest.mark.parametrize('claim_committed', [True, False])
def test_claim_of_the_first_job_with_a_put(claim_committed):
    old, claimed, put = tree(1, 2), tree(2), tree(1, 2, 3)
    states = (claimed, put) if claim_committed else (put, claimed)
    assert treeItems(resolveTree(old, *states)) == [2, 3]


def test_claim_of_the_only_job_with_a_put():
    old, claimed, put = tree(1), tree(), tree(1, 2)
    assert claimed is None  # an empty tree
    assert treeItems(resolveTree(old, claimed, put)) == [2]
    assert treeItems(resolveTree(old, put, claimed)) == [2]


def test_two_claims_of_different_jobs():
    old = tree(1, 2, 3)
    assert treeItems(resolveTree(old, tree(2, 3), tree(1, 3))) == [3]


def test_two_claims_emptying_the_tree():
    assert resolveTree(tree(1, 2), tree(2), tree(1)) is None


def test_two_claims_of_the_same_job_refused():
    old = tree(1, 2)
    with pytest.raises(BTreesConflictError):
        resolveTree(old, tree(2), tree(2))
    with pytest.raises(BTreesConflictError):
        resolveTree(tree(1), tree(), tree())


def test_a_claim_and_a_change_of_the_same_job_refused():
    old = tree(1, 2)
    changed = JobTree()
    changed.__setstate__(old)
    changed[key(1)] = 'other'
    with pytest.raises(BTreesConflictError):
        resolveTree(old, tree(2), changed.__getstate__())


def test_dueling_inserts_refused():
    old = tree(1, 2)
    with pytest.raises(BTreesConflictError):
        resolveTree(old, tree(2, 5), tree(1, 2, 5))


def test_a_tree_of_several_buckets_is_not_merged_here():
    big = JobTree()
    for n in range(100):
        big[key(n)] = n
    old = big.__getstate__()
    with pytest.raises(BTreesConflictError):
        resolveTree(old, old, tree(5))


# --- a bucket of a larger tree ------------------------------------------

@pytest.mark.parametrize('claim_committed', [True, False])
def test_bucket_claim_of_the_first_key_with_an_append(claim_committed):
    old, claimed, put = bucket(1, 2, 3), bucket(2, 3), bucket(1, 2, 3, 4)
    states = (claimed, put) if claim_committed else (put, claimed)
    assert bucketItems(resolveBucket(old, *states)) == [2, 3, 4]


def test_bucket_insert_below_the_new_first_key_refused():
    # the claim may have moved the parent's separator up to key 3, so a
    # key 2 added by the other side could no longer be found
    old, claimed, other = bucket(1, 3, 5), bucket(3, 5), bucket(1, 2, 3, 5)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, claimed, other)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, other, claimed)


def test_bucket_emptied_refused():
    # an emptied bucket is unlinked from its tree: adding to it would
    # lose the job
    old, emptied, put = bucket(1), bucket(), bucket(1, 2)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, emptied, put)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, put, emptied)


def test_bucket_two_claims_of_the_same_key_refused():
    old = bucket(1, 2, 3)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, bucket(2, 3), bucket(2, 3))


def test_bucket_next_pointer_change_refused():
    # a split (the other side added a bucket after this one) is not merged
    first, second = JobBucket(), JobBucket()
    for n in (1, 2, 3):
        first[key(n)] = n
    second[key(9)] = 9
    old = first.__getstate__()
    split = (old[0], second)
    with pytest.raises(BTreesConflictError):
        resolveBucket(old, bucket(2, 3), split)
