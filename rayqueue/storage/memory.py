"""In-memory storages (pure; defined beside the port in :mod:`rayqueue.core.port`)."""

from rayqueue.core.port import InMemoryStorage, NullStorage

__all__ = ["InMemoryStorage", "NullStorage"]
