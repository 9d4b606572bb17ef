"""The SQLite store: runs, tasks, attempts, events, commands and the engine lease."""

from scripthut.store.records import AttemptRecord, EventRecord, RunRecord, TaskRecord
from scripthut.store.store import Store
from scripthut.store.worker import StoreWorker, drop_resident, keep_resident, release

__all__ = [
    "AttemptRecord",
    "EventRecord",
    "RunRecord",
    "Store",
    "StoreWorker",
    "TaskRecord",
    "drop_resident",
    "keep_resident",
    "release",
]
