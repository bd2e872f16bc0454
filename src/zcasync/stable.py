"""The database's format version (and, as it grows, every name that
stored objects refer to).

``root[FORMAT_KEY]`` holds the format version of the zcasync data in a
database.  Code that writes a newer format raises it; a process refuses a
database whose version it does not know, and a database still holding
zc.async 1.x objects (see ``zcasync migrate``).
"""
from __future__ import annotations

from typing import Any, MutableMapping

from zcasync import interfaces

#: The key of the format version in the database root.
FORMAT_KEY = 'zcasync.format'

#: The format this code writes and reads.
FORMAT_VERSION = 1

#: The key of the record of a ``zcasync migrate`` in progress (see
#: ``zcasync.migrate.pipeline``).
MIGRATION_KEY = 'zcasync.migration'

#: What a process says when it finds zc.async data it cannot use.
MIGRATE_REMEDY = 'convert it with: zcasync migrate --db URI'


def markFormat(root: MutableMapping[str, Any]) -> None:
    """Record that the zcasync data in `root`'s database has this code's
    format (in the caller's transaction)."""
    if root.get(FORMAT_KEY) != FORMAT_VERSION:
        root[FORMAT_KEY] = FORMAT_VERSION


def formatOf(root: MutableMapping[str, Any]) -> int | None:
    """The recorded format version, or None where none is recorded."""
    return root.get(FORMAT_KEY)


def isLegacyObject(ob: Any) -> bool:
    """Whether `ob` (loaded from the database) is a zc.async object: a
    ZODB broken object (zc.async cannot be imported) or an instance of a
    class from a ``zc.async`` module.  Its state is not loaded."""
    import ZODB.broken
    module = getattr(type(ob), '__module__', '') or ''
    return isinstance(ob, ZODB.broken.Broken) or module == 'zc.async' or \
        module.startswith('zc.async.')


def legacyProblem(root: MutableMapping[str, Any]) -> str | None:
    """A one-line reason why zcasync cannot use the data in `root`'s
    database because it is zc.async's, or a migration of it did not
    finish; None otherwise."""
    if MIGRATION_KEY in root:
        return ('this database is being migrated from zc.async (or a '
                'migration was interrupted); finish it with: zcasync '
                'migrate --db URI')
    found = root.get(interfaces.KEY)
    if found is not None and isLegacyObject(found):
        klass = type(found)
        return ('this database holds zc.async data (root[%r] is a %s.%s); '
                '%s' % (interfaces.KEY, klass.__module__, klass.__name__,
                        MIGRATE_REMEDY))
    return None


def checkFormat(root: MutableMapping[str, Any]) -> None:
    """Raise DatabaseFormatError when this code cannot run on the data in
    `root`'s database: zc.async data not migrated yet (or a migration in
    progress), or a format newer than FORMAT_VERSION."""
    problem = legacyProblem(root)
    if problem is not None:
        raise interfaces.DatabaseFormatError(problem)
    version = formatOf(root)
    if version is not None and version > FORMAT_VERSION:
        raise interfaces.DatabaseFormatError(
            'this database has zcasync format %s, newer than the %s this '
            'zcasync reads; upgrade zcasync in this process'
            % (version, FORMAT_VERSION))
