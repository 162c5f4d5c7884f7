"""Group commit: buffer the core's journal writes and commit many in one transaction.

The queue actor's core writes through a :class:`CommitBuffer`, which only records the
batch; the actor then commits every buffered batch together (one transaction, one
fsync) and answers each call only after that commit. If the commit fails, the actor
rebuilds its core from the journal, so memory never runs ahead of what is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rayqueue.core.record import ScheduleRecord, TaskRecord
from rayqueue.storage.base import Storage, StoredState


@dataclass
class Merged:
    """Buffered batches folded into one: the last version of each record wins."""

    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    schedules: dict[str, ScheduleRecord] = field(default_factory=dict)
    delete_tasks: set[str] = field(default_factory=set)
    delete_schedules: set[str] = field(default_factory=set)
    batches: int = 0

    def __bool__(self) -> bool:
        return self.batches > 0

    def write_to(self, storage: Storage) -> None:
        """Commit everything as one batch."""
        storage.write(
            tasks=list(self.tasks.values()),
            schedules=list(self.schedules.values()),
            delete_tasks=sorted(self.delete_tasks),
            delete_schedules=sorted(self.delete_schedules),
        )


class CommitBuffer:
    """A Storage whose ``write`` only buffers; :meth:`take` hands the batches over."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self._merged = Merged()

    def load(self) -> StoredState:
        """Load from the real storage."""
        return self.inner.load()

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Buffer one batch (never fails)."""
        m = self._merged
        for rec in tasks:
            m.tasks[rec.id] = rec
            m.delete_tasks.discard(rec.id)
        for task_id in delete_tasks:
            m.tasks.pop(task_id, None)
            m.delete_tasks.add(task_id)
        for sched in schedules:
            m.schedules[sched.id] = sched
            m.delete_schedules.discard(sched.id)
        for sched_id in delete_schedules:
            m.schedules.pop(sched_id, None)
            m.delete_schedules.add(sched_id)
        m.batches += 1

    @property
    def pending(self) -> bool:
        """Whether uncommitted batches are buffered."""
        return bool(self._merged)

    def take(self) -> Merged:
        """Hand over (and forget) everything buffered."""
        merged, self._merged = self._merged, Merged()
        return merged

    def close(self) -> None:
        """Close the real storage."""
        self.inner.close()
