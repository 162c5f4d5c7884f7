"""The Storage protocol: a durable journal of task and schedule records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rayqueue.core.record import ScheduleRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything a storage holds, as loaded at recovery."""

    tasks: list[TaskRecord] = field(default_factory=list)
    schedules: list[ScheduleRecord] = field(default_factory=list)


@runtime_checkable
class Storage(Protocol):
    """Where the queue journals every state change.

    ``write`` applies one batch atomically: after it returns the batch is durable (as
    durable as the backend promises); if it raises :class:`~rayqueue.errors.StorageError`
    nothing of the batch was applied. The core calls ``write`` before it changes its
    in-memory state, so a failed write leaves the queue as it was. Storage holds data
    only (names and JSON), never pickles, and no business rules.
    """

    def load(self) -> StoredState:
        """Return every stored task and schedule."""
        ...

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Upsert ``tasks`` and ``schedules`` and delete the given ids, in one batch."""
        ...

    def close(self) -> None:
        """Release resources; further calls may fail."""
        ...
