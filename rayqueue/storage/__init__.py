"""Storage backends: the protocol and its implementations."""

from rayqueue.storage.base import Storage, StoredState
from rayqueue.storage.memory import InMemoryStorage

__all__ = ["InMemoryStorage", "Storage", "StoredState"]
