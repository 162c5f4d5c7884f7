"""Storage backends: the protocol and its implementations."""

from rayqueue.storage.base import Storage, StoredState
from rayqueue.storage.faulty import FaultyStorage
from rayqueue.storage.memory import InMemoryStorage, NullStorage
from rayqueue.storage.sqlite import SQLiteStorage

__all__ = [
    "FaultyStorage",
    "InMemoryStorage",
    "NullStorage",
    "SQLiteStorage",
    "Storage",
    "StoredState",
]
