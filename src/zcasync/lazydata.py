"""A job's arguments and annotations, kept in the job's own record until
they change.

Each persistent sub-object of a job costs a write when the job is put and
a load -- a round trip over ZEO or PostgreSQL -- when it runs.  So a job
stores its positional arguments as a tuple, its keyword arguments as a
dict, and no annotations tree, until something changes them.  The mutable
API stays: ``job.args`` is a ``PersistentList``, ``job.kwargs`` a
``PersistentMapping``, ``job.annotations`` an ``OOBTree``.  Reading them
writes nothing (an agent's filter reads ``job.args``; were that a write,
two claimers would conflict on every job they look at); their first
change makes them the job's stored sub-object.

No class here is ever stored: ``ArgsList`` and ``KwargsMapping`` turn
into a plain ``PersistentList``/``PersistentMapping`` as they attach, and
``LazyAnnotations`` hands over to a real ``OOBTree``.
"""
import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping


class _Attaching:
    """Mixin: on the first change, become the base class and attach to
    the job (a volatile reference until then)."""

    _attach_as: str = ''  # the job's attribute to store this object in
    _base: type = object

    def __setattr__(self, name, value):
        if name == '_p_changed' and value:
            job = self.__dict__.pop('_v_job', None)
            if job is not None:
                attribute = self._attach_as
                self.__class__ = self._base
                setattr(job, attribute, self)
                job.__dict__.pop('_v' + attribute, None)
        persistent.Persistent.__setattr__(self, name, value)


class ArgsList(_Attaching, persistent.list.PersistentList):
    """``job.args`` of a job whose arguments are still a tuple."""

    _base = persistent.list.PersistentList
    _attach_as = '_args'


class KwargsMapping(_Attaching, persistent.mapping.PersistentMapping):
    """``job.kwargs`` of a job whose keyword arguments are still a dict."""

    _base = persistent.mapping.PersistentMapping
    _attach_as = '_kwargs'


def view(job, attribute, cls, values):
    """The mutable view of `job`'s stored `attribute` (not stored yet):
    one per job while it is in memory."""
    cached = job.__dict__.get('_v' + attribute)
    if cached is not None:
        return cached
    made = cls(values)
    made.__dict__['_v_job'] = job
    job.__dict__['_v' + attribute] = made
    return made


_MUTATORS = ('__setitem__', '__delitem__', 'update', 'setdefault', 'pop',
             'popitem', 'clear', 'insert')


class LazyAnnotations:
    """``job.annotations`` of a job that has none yet: reads see an empty
    ``OOBTree``; the first change makes the job's tree."""

    def __init__(self, job):
        self._job = job
        self._empty = BTrees.OOBTree.OOBTree()

    def _tree(self):
        job = self._job
        if job._annotations is None:
            job._annotations = BTrees.OOBTree.OOBTree()
        return job._annotations

    def __getattr__(self, name):
        if name in _MUTATORS:
            return getattr(self._tree(), name)
        tree = self._job._annotations
        return getattr(self._empty if tree is None else tree, name)

    def __setitem__(self, key, value):
        self._tree()[key] = value

    def __delitem__(self, key):
        del self._tree()[key]

    def _current(self):
        tree = self._job._annotations
        return self._empty if tree is None else tree

    def __getitem__(self, key):
        return self._current()[key]

    def __contains__(self, key):
        return key in self._current()

    def __iter__(self):
        return iter(self._current())

    def __len__(self):
        return len(self._current())

    def __bool__(self):
        return bool(self._current())

    def __repr__(self):
        return '<annotations of %r (none yet)>' % (self._job,)
