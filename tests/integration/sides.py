"""Several connections to one FileStorage, each playing a process (no
tests here; the ``sides`` fixture of conftest.py opens them)."""
import transaction

from zcasync import interfaces


class Side:
    """One connection (think: one process) with its own transaction
    manager."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def agent(self, uid):
        return self.queue.dispatchers[uid]['main']

    def commit(self):
        self.tm.commit()

    def close(self):
        self.tm.abort()
        self.conn.close()
