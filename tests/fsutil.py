"""Helpers shared by the test tiers for FileStorage files."""
import ZODB.FileStorage


def lastTransaction(path):
    """The id of the last transaction in the FileStorage at `path` (read
    only): equal before and after means the file was not written."""
    storage = ZODB.FileStorage.FileStorage(str(path), read_only=True)
    try:
        return storage.lastTransaction()
    finally:
        storage.close()
