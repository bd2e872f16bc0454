"""The instance UUID: one per process that runs a dispatcher.

It is read from the file named by the ``ZC_ASYNC_UUID`` environment
variable (default ``./uuid.txt``) the first time something asks for it:
``getUUID()`` or the module attribute ``UUID``.  Only what runs a
dispatcher asks; importing this module, or any other zcasync module, reads
and creates nothing, so producers (web applications, scripts) need no UUID
file.  A missing file is created atomically with a fresh UUID and a short
explanation: two processes starting at once on one path end up with the
same, complete file.

Every worker process needs its own file: two processes with the same UUID
look like one dispatcher to the database, and the second one refuses to
start.
"""
import os
import tempfile
import threading
import uuid

ENV = 'ZC_ASYNC_UUID'

_EXPLANATION = """
------------------------------------------------------------------------
The line above is the UUID of this zcasync instance: the identity of a
worker process in the database.  Every process that runs a dispatcher
needs its own file (set ZC_ASYNC_UUID to its path, or give the worker
--uuid-file).  Do not copy this file to another process or machine: two
processes with one UUID look like one dispatcher, and the second one
refuses to start.  Delete it only when this instance is gone for good; a
new one gets a fresh UUID.
"""

_lock = threading.Lock()
_uuid = None
_listeners: list = []


def path():
    """The UUID file this process uses (from ZC_ASYNC_UUID)."""
    return os.path.abspath(os.environ.get(ENV) or 'uuid.txt')


def _create(filename, value):
    """Write `value` to `filename` unless it exists: the text goes to a
    temporary file first and is linked into place, so a reader never
    sees a half-written file and of two racing creators one wins."""
    directory = os.path.dirname(filename) or '.'
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix='.uuid-', dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(value.hex + '\n' + _EXPLANATION)
        try:
            os.link(temporary, filename)
        except FileExistsError:
            pass  # another process created it first: theirs counts
    finally:
        os.unlink(temporary)


def readUUID(filename=None):
    """The UUID stored in `filename` (default: from ZC_ASYNC_UUID),
    creating the file with a fresh UUID when it is missing."""
    filename = filename or path()
    if not os.path.exists(filename):
        _create(filename, uuid.uuid1())
    with open(filename) as f:
        first = f.readline().strip()
    try:
        return uuid.UUID(first)
    except ValueError:
        raise ValueError(
            'the instance UUID file %s does not start with a UUID (found '
            '%r); remove it to get a fresh UUID, or point the worker at '
            'another file (--uuid-file PATH, or the %s environment '
            'variable)' % (filename, first, ENV)) from None


def getUUID():
    """This process's instance UUID, read (or created) on first use."""
    global _uuid
    with _lock:
        first = _uuid is None
        if first:
            _uuid = readUUID()
            globals()['UUID'] = _uuid
        value = _uuid
    if first:
        for listener in list(_listeners):
            listener(value)
    return value


def whenKnown(listener):
    """Call ``listener(uuid)`` once the instance UUID is known: now if it
    is, else when something first reads it (each listener once)."""
    value = _uuid
    if value is not None:
        listener(value)
    elif listener not in _listeners:
        _listeners.append(listener)


def currentUUID():
    """The instance UUID if this process has read it already (it runs a
    dispatcher), else None; never touches the file system."""
    return _uuid


def _reset():
    """Forget the UUID read so far (for tests: the next getUUID() reads
    the file named by ZC_ASYNC_UUID again)."""
    global _uuid
    with _lock:
        _uuid = None
        globals().pop('UUID', None)


def __getattr__(name):
    # ``instanceuuid.UUID``: read lazily, then a plain module attribute
    if name == 'UUID':
        return getUUID()
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
