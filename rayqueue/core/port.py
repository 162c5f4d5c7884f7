"""The storage port: what the core needs of a journal, and two adapters that need no I/O.

The core journals every state change through a :class:`Storage`; the durable
implementations (SQLite, ...) live in :mod:`rayqueue.storage` and depend on the core,
never the other way round. :class:`InMemoryStorage` (records kept as JSON-ready dicts,
for tests and throwaway queues) and :class:`NullStorage` (keeps nothing) are pure and
live here, beside the port, so the core can default to one without importing the
storage layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


class InMemoryStorage:
    """Keeps records as JSON-ready dicts, so what it holds is data, as on disk.

    ``writes`` counts batches, which tests use to check that batch operations are one
    write each.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, dict[str, Any]] = {}
        self._schedules: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def load(self) -> StoredState:
        """Return every stored record, rebuilt from its JSON form."""
        return StoredState(
            tasks=[TaskRecord.from_json(d) for d in self._tasks.values()],
            schedules=[ScheduleRecord.from_json(d) for d in self._schedules.values()],
        )

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Apply one batch, all or nothing (records are encoded before anything changes)."""
        encoded_tasks = [(rec.id, rec.to_json()) for rec in tasks]
        encoded_schedules = [(sched.id, sched.to_json()) for sched in schedules]
        self._tasks.update(encoded_tasks)
        self._schedules.update(encoded_schedules)
        for task_id in delete_tasks:
            self._tasks.pop(task_id, None)
        for schedule_id in delete_schedules:
            self._schedules.pop(schedule_id, None)
        self.writes += 1

    def close(self) -> None:
        """Nothing to release."""


class NullStorage:
    """Keeps nothing: the journal of a queue that lives only in its actor's memory.

    The core already holds every record; copying each into an InMemoryStorage would
    double a volatile queue's memory and cost an encode per change for nothing.
    """

    def load(self) -> StoredState:
        """Nothing was kept."""
        return StoredState()

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Accept and forget one batch."""

    def close(self) -> None:
        """Nothing to release."""
