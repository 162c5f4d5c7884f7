"""CommitBuffer folds many batches into one commit with last-writer-wins semantics."""

from __future__ import annotations

from dataclasses import replace

from rayqueue import InMemoryStorage, QueueCore
from rayqueue.storage.buffered import CommitBuffer
from tests.unit.conftest import new


def test_many_operations_commit_as_one_write_with_the_same_result() -> None:
    direct, inner = InMemoryStorage(), InMemoryStorage()
    buffer = CommitBuffer(inner)
    a, b = QueueCore(storage=direct), QueueCore(storage=buffer)
    for core in (a, b):
        core.enqueue_many([new(task_id=f"t{i}") for i in range(10)], 0.0)
        leases = core.claim("w", 4, 1.0)
        core.ack_many([(x.task_id, x.token, "1") for x in leases], 2.0)
        core.cancel("t9", 3.0)
    assert buffer.pending and inner.writes == 0
    merged = buffer.take()
    assert merged.batches == 4 and not buffer.pending
    merged.write_to(inner)
    assert inner.writes == 1
    assert QueueCore.recover(inner).stats() == QueueCore.recover(direct).stats()


def test_delete_after_upsert_and_upsert_after_delete() -> None:
    buffer = CommitBuffer(InMemoryStorage())
    rec = QueueCore().enqueue(new(task_id="x"), 0.0)
    buffer.write(tasks=[rec])
    buffer.write(delete_tasks=["x"])
    merged = buffer.take()
    assert merged.tasks == {} and merged.delete_tasks == {"x"}
    buffer.write(delete_tasks=["x"])
    later = replace(rec, priority=99)
    buffer.write(tasks=[later])
    merged = buffer.take()
    assert merged.tasks == {"x": later} and merged.delete_tasks == set()
