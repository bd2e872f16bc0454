"""The instance UUID: one per process that runs a dispatcher.

Read at import from the file named by the ``ZC_ASYNC_UUID`` environment
variable (default ``./uuid.txt``); a missing file is created with a fresh
UUID and a short explanation.  Every worker process needs its own file:
two processes with the same UUID look like one dispatcher to the
database, and the second one refuses to start.
"""
import os
import uuid

ENV = 'ZC_ASYNC_UUID'

_EXPLANATION = """
------------------------------------------------------------------------
The line above is the UUID of this zcasync instance: the identity of a
worker process in the database.  Every process that runs a dispatcher
needs its own file (set ZC_ASYNC_UUID to its path).  Do not copy this file
to another process or machine: two processes with one UUID look like one
dispatcher, and the second one refuses to start.  Delete it only when this
instance is gone for good; a new one gets a fresh UUID.
"""


def path():
    return os.path.abspath(os.environ.get(ENV) or 'uuid.txt')


def readUUID(filename=None):
    """The UUID stored in `filename` (default: from ZC_ASYNC_UUID),
    creating the file with a fresh UUID when it is missing."""
    filename = filename or path()
    if not os.path.exists(filename):
        value = uuid.uuid1()
        directory = os.path.dirname(filename)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(filename, 'w') as f:
            f.write(value.hex + '\n' + _EXPLANATION)
        return value
    with open(filename) as f:
        first = f.readline().strip()
    try:
        return uuid.UUID(first)
    except ValueError:
        raise ValueError(
            'the instance UUID file %s does not start with a UUID (found '
            '%r); remove it to get a fresh UUID, or point %s at another '
            'file' % (filename, first, ENV)) from None


UUID = readUUID()


def getUUID():
    return UUID
