"""What the audit that closed issue 14 found uncovered, on a real queue.

One owner per journal as ``rayqueue.init`` shows it (finding 3, build 3): a second
queue given a running queue's journal is refused with JournalInUseError naming the
owner, at once, and the owner's tasks stay as they were (before issue 14 the thief was
accepted and 40 tasks ran 80 times; before this test, the refusal came back as
QueueLostError). And build 1's reports through a real worker: a result over
``max_result_bytes`` or one no JSON can hold fails its own attempt, with its reason,
while the ten good tasks claimed with it finish once each."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

import rayqueue
from rayqueue import PoolConfig, QueueConfig, RetryPolicy, Task
from rayqueue.errors import JournalInUseError
from tests.integration.probe_tasks import Manual, Probe

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


def test_a_second_queue_on_a_running_queues_journal_is_refused_naming_the_owner(
        make_queue: MakeQueue, tmp_path: Path) -> None:
    path = str(tmp_path / "main.sqlite")
    pools = [PoolConfig(min_workers=0, max_workers=1)]
    q = make_queue(journal=path, pools=pools)
    kept = q.enqueue(Manual(name="kept"), wait=True)
    thief = f"thief-{uuid.uuid4().hex[:6]}"
    with pytest.raises(JournalInUseError, match=rf"in use by queue '{q.name}' \(pid \d+") as err:
        rayqueue.init(thief, journal=path, pools=pools)
    assert err.value.path == str(Path(path).resolve())
    assert thief not in [e.name for e in rayqueue.queues()]  # nothing of it runs
    # The owner goes on with its tasks as they were, and still takes more.
    assert q.get(kept.id).state == "ready"
    claimed = q.dequeue(timeout=10, pool="manual")
    assert claimed is not None and claimed.id == kept.id and claimed.ack("done")
    assert kept.result(timeout=10) == "done" and q.stats().size == 0


class Unkeepable(Task[Any]):
    """Returns what the queue cannot keep: too big for the queue's limit, or no JSON."""

    task_name: ClassVar[str] = "tests.gaps.unkeepable"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=1)

    mode: str

    def execute(self) -> Any:
        return "x" * 5_000 if self.mode == "big" else threading.Lock()


def test_an_unkeepable_result_fails_its_own_attempt_not_its_neighbours(
        make_queue: MakeQueue) -> None:
    q = make_queue(config=QueueConfig(max_result_bytes=1_000),
                   pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    q.pause()  # all of them are claimed together, so their outcomes share reports
    bad = {m: q.enqueue(Unkeepable(mode=m), wait=True) for m in ("big", "lock")}
    good = [q.enqueue(Probe(value=i), wait=True) for i in range(10)]
    q.resume()
    assert [h.result(timeout=60) for h in good] == list(range(10))
    assert all(h.info().attempts == 1 for h in good)  # their leases were not disturbed
    big, lock = bad["big"].info(), bad["lock"].info()
    assert (big.state, big.attempts, big.reason) == ("dead", 1, "result_too_large"), big
    assert (lock.state, lock.attempts, lock.reason) == ("dead", 1, "invalid_result"), lock
    assert big.result_json is None and lock.error_type == "InvalidResultError"
