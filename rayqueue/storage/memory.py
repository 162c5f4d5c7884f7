"""InMemoryStorage: the Storage protocol in a process's memory, for tests and throwaway queues."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rayqueue.core.record import ScheduleRecord, TaskRecord
from rayqueue.storage.base import StoredState


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
