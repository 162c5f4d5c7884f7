"""What a handle and a claimed task show when printed (issue 16, item 7): id, task type
and the state this process knows, with no call to the queue."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, ClassVar

from rayqueue import Task
from rayqueue.core.lease import Lease, Outcome
from rayqueue.handle import ClaimedTask, TaskHandle
from rayqueue.task import to_new_task


class Resize(Task[int]):
    task_name: ClassVar[str] = "test.reprs.resize"
    width: int = 1

    def execute(self) -> int:
        return self.width


class FakeQueue:
    def __init__(self, current: bool) -> None:
        self.current = current
        self.reports: list[Outcome] = []

    def _report(self, outcome: Outcome) -> bool:
        self.reports.append(outcome)
        return self.current


def _claimed(queue: Any) -> ClaimedTask[Resize]:
    task = Resize(width=3)
    lease = Lease("t-1", 7, Resize.task_name, to_new_task(task).payload, 2, 50, "default",
                  0.0, None, Resize.retry)
    return ClaimedTask(lease, task, queue._report, lambda task_id, token: queue.current)


def test_task_handle_repr_shows_id_type_and_what_is_known() -> None:
    assert repr(TaskHandle(None, "t-1", Resize)) == "TaskHandle('t-1', task='test.reprs.resize')"  # type: ignore[arg-type]
    assert repr(TaskHandle(None, "t-2", None)) == "TaskHandle('t-2')"  # type: ignore[arg-type]
    sent: Future[list[str]] = Future()
    handle = TaskHandle(None, "t-3", Resize, sent=sent)  # type: ignore[arg-type]
    assert repr(handle).endswith(", sending)")
    sent.set_result(["t-3"])
    assert repr(handle).endswith(", sent)")
    refused: Future[list[str]] = Future()
    refused.set_exception(RuntimeError("full"))
    assert repr(TaskHandle(None, "t-4", Resize, sent=refused)).endswith(  # type: ignore[arg-type]
        ", refused)")


def test_claimed_task_repr_follows_what_this_client_did() -> None:
    claimed = _claimed(FakeQueue(current=True))
    assert repr(claimed) == "ClaimedTask('t-1', task='test.reprs.resize', attempt=2, leased)"
    assert claimed.ack(3)
    assert repr(claimed).endswith("attempt=2, acked)")
    stale = _claimed(FakeQueue(current=False))
    assert not stale.fail(RuntimeError("boom"))
    assert stale.state == "failed (stale)"
