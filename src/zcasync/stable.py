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


def markFormat(root: MutableMapping[str, Any]) -> None:
    """Record that the zcasync data in `root`'s database has this code's
    format (in the caller's transaction)."""
    if root.get(FORMAT_KEY) != FORMAT_VERSION:
        root[FORMAT_KEY] = FORMAT_VERSION


def formatOf(root: MutableMapping[str, Any]) -> int | None:
    """The recorded format version, or None where none is recorded."""
    return root.get(FORMAT_KEY)


def checkFormat(root: MutableMapping[str, Any]) -> None:
    """Raise DatabaseFormatError when this code cannot run on the data in
    `root`'s database: a format newer than FORMAT_VERSION."""
    version = formatOf(root)
    if version is not None and version > FORMAT_VERSION:
        raise interfaces.DatabaseFormatError(
            'this database has zcasync format %s, newer than the %s this '
            'zcasync reads; upgrade zcasync in this process'
            % (version, FORMAT_VERSION))
