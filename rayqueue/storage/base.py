"""The Storage protocol (defined by the core, :mod:`rayqueue.core.port`)."""

from rayqueue.core.port import Storage, StoredState

__all__ = ["Storage", "StoredState"]
