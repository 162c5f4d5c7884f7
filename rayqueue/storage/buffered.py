"""Group commit: buffer the core's journal writes and commit many in one transaction.

The queue actor's core writes through a :class:`CommitBuffer`, which only records the
batch; the actor then commits every buffered batch together (one transaction, one
fsync) and answers each call only after that commit. If the commit fails, the actor
rebuilds its core from the journal, so memory never runs ahead of what is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    #: the record each buffered task had before its first buffered change (None: it
    #: did not exist): what the journal holds for it until this batch commits
    before: dict[str, TaskRecord | None] = field(default_factory=dict)

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
    """A Storage whose ``write`` only buffers; :meth:`take` hands the batches over.

    ``lookup`` (task id -> the record its owner holds now) lets the buffer keep, for each
    task it buffers, the record as it was before (:attr:`Merged.before`): readers can
    then answer what is committed, not what a commit may still refuse. The core calls
    ``write`` before it changes its memory, so ``lookup`` still sees the old record.
    """

    def __init__(self, inner: Storage,
                 lookup: Callable[[str], TaskRecord | None] | None = None) -> None:
        self.inner = inner
        self._lookup = lookup
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
        if self._lookup is not None:
            before, lookup = m.before, self._lookup
            for task_id in (*(r.id for r in tasks), *delete_tasks):
                if task_id not in before:
                    before[task_id] = lookup(task_id)
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
    def before(self) -> dict[str, TaskRecord | None]:
        """The records as they were before the batches buffered now (see Merged)."""
        return self._merged.before

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
