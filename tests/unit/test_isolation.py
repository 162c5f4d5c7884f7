"""Bad input stays with its sender (issue 14, items 1, 2, 4, 5, 6), on the pure core:
what the journal could not store is refused before it joins a batch, and one bad
outcome in a worker's report fails only its own attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from rayqueue import (
    DuplicateTaskError,
    ErrorInfo,
    Failure,
    FakeClock,
    IntervalSpec,
    InvalidResultError,
    InvalidTaskError,
    NewTask,
    Outcome,
    PayloadTooLargeError,
    QueueClosedError,
    QueueCore,
    Retry,
    Task,
    TaskState,
)
from rayqueue.actors.runner import run_sync
from rayqueue.core.lease import Lease
from rayqueue.storage.sqlite import SQLiteStorage
from rayqueue.task import encode_result, to_new_task
from tests.unit.conftest import new

BAD_NEWS = [
    pytest.param(new(task_id="bad\ud800id"), "task id is not valid text", id="surrogate-id"),
    pytest.param(NewTask(None, "{}", 50), "task name must be a str", id="name-None"),  # type: ignore[arg-type]
    pytest.param(NewTask("", "{}", 50), "task name must be 1 to", id="name-empty"),
    pytest.param(NewTask("a\0b", "{}", 50), "control characters", id="name-NUL"),
    pytest.param(NewTask("n" * 5_000, "{}", 50), "task name must be 1 to", id="name-long"),
    pytest.param(NewTask("t", '{"x": "\ud800"}', 50), "payload is not valid", id="payload"),
    pytest.param(NewTask("t", "{}", 50, pool=5), "pool name must be a str",  # type: ignore[arg-type]
                 id="pool-int"),
    pytest.param(NewTask("t", "{}", 50, timeout=float("nan")), "timeout", id="timeout-nan"),
    pytest.param(NewTask("t", "{}", 50, retry="x"), "RetryPolicy", id="retry"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("bad", "match"), BAD_NEWS)
def test_what_the_journal_cannot_store_is_refused_before_the_batch(
        tmp_path: Path, clock: FakeClock, bad: NewTask, match: str) -> None:
    storage = SQLiteStorage(tmp_path / "j.sqlite")
    core = QueueCore(storage=storage)
    with pytest.raises(InvalidTaskError, match=match) as err:
        core.enqueue_many([new(task_id="good-1"), bad], clock.now())
    assert isinstance(err.value, ValueError)  # and a rayqueue error users can catch as such
    assert core.size() == 0  # all or nothing: the good one of that call is not in either
    core.enqueue_many([new(task_id="good-2")], clock.now())  # the journal still works
    storage.close()
    again = QueueCore.recover(SQLiteStorage(tmp_path / "j.sqlite"))
    assert again.size() == 1 and again.find("good-2") is not None


def _leased(core: QueueCore, clock: FakeClock, n: int) -> list[Lease]:
    core.enqueue_many([new(task_id=f"t{i}") for i in range(n)], clock.now())
    return core.claim("w", n, clock.now())


@pytest.mark.parametrize("delay", ["soon", [1], 10**400, float("nan"), -1.0])
def test_a_bad_retry_delay_in_a_report_falls_back_to_the_policy_not_the_batch(
        core: QueueCore, clock: FakeClock, delay: Any) -> None:
    leases = _leased(core, clock, 3)
    bad = Failure(ErrorInfo("Retry", "x"), retryable=True, retry_delay=delay)
    outs = core.complete_many([Outcome(leases[0].task_id, leases[0].token, result="1"),
                               Outcome(leases[1].task_id, leases[1].token, failure=bad),
                               Outcome(leases[2].task_id, leases[2].token, result="3")],
                              clock.now())
    assert [o.state for o in outs if o is not None] == [
        TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SUCCEEDED]
    assert outs[1] is not None and outs[1].due_at > clock.now()  # the policy's backoff


@pytest.mark.parametrize(("result", "reason"), [
    ("x" * 2_000, "result_too_large"),
    ('"\ud800"', "invalid_result"),
    (b"1", "invalid_result"),
])
def test_a_result_that_cannot_be_kept_fails_its_attempt_only(
        make_core: Any, clock: FakeClock, result: Any, reason: str) -> None:
    core = make_core(max_result_bytes=1_000)
    leases = _leased(core, clock, 2)
    outs = core.complete_many([Outcome(leases[0].task_id, leases[0].token, result=result),
                               Outcome(leases[1].task_id, leases[1].token, result="2")],
                              clock.now())
    assert outs[0] is not None and outs[0].state is TaskState.DEAD
    assert outs[0].reason == reason and outs[0].error is not None
    assert outs[0].error.type == "InvalidResultError"
    assert outs[1] is not None and outs[1].state is TaskState.SUCCEEDED


def test_error_texts_that_are_not_valid_text_are_escaped_not_fatal(
        core: QueueCore, clock: FakeClock) -> None:
    leases = _leased(core, clock, 1)
    failure = Failure(ErrorInfo("Oops\ud800", "bad \udcff text"), retryable=False)
    (rec,) = core.complete_many([Outcome(leases[0].task_id, leases[0].token,
                                         failure=failure)], clock.now())
    assert rec is not None and rec.error is not None
    assert rec.error.type == "Oops\\ud800" and rec.error.message == "bad \\udcff text"


@pytest.mark.parametrize("delay", ["soon", [1], 10**400, float("inf"), -1])
def test_retry_refuses_a_delay_that_is_not_finite_seconds(delay: Any) -> None:
    with pytest.raises(InvalidResultError, match="retry delay"):
        Retry(delay=delay)


class Flaky(Task[float]):
    task_name: ClassVar[str] = "test.isolation.flaky"
    delay: Any = None
    value: float = 1.0

    def execute(self) -> float:
        if self.delay is not None:
            raise Retry(delay=self.delay)
        return self.value


def test_a_task_raising_a_bad_retry_fails_its_attempt_with_the_reason() -> None:
    import asyncio

    new_task = to_new_task(Flaky(delay="soon"))
    lease = Lease("a", 1, Flaky.task_name, new_task.payload, 1, 50, "default", 0.0, None,
                  Flaky.retry)
    outcome = run_sync(lease, Flaky, "w", asyncio.new_event_loop())
    assert outcome.failure is not None
    assert outcome.failure.error.type == "InvalidResultError"
    assert "retry delay" in outcome.failure.error.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_results_with_nan_or_infinity_are_refused_not_turned_into_null(value: float) -> None:
    with pytest.raises(Exception, match="not a JSON value"):
        encode_result(Flaky, value)
    assert encode_result(Flaky, 2.5) == "2.5"


def test_tasks_and_schedules_share_one_id_space(core: QueueCore, clock: FakeClock) -> None:
    now = clock.now()
    core.enqueue(new(task_id="S1"), now)
    with pytest.raises(DuplicateTaskError, match="share one id space"):
        core.add_schedule(schedule_id="S1", task_name="t", payload="{}",
                          spec=IntervalSpec(60), now=now, priority=50)
    core.add_schedule(schedule_id="S2", task_name="t", payload="{}", spec=IntervalSpec(60),
                      now=now, priority=50)
    with pytest.raises(DuplicateTaskError, match="share one id space"):
        core.enqueue(new(task_id="S2"), now)
    assert core.get("S1").state is TaskState.READY and len(core.schedules()) == 1


def test_schedules_follow_the_enqueue_rules(make_core: Any, clock: FakeClock) -> None:
    core = make_core(max_payload_bytes=100)
    now = clock.now()
    with pytest.raises(PayloadTooLargeError):
        core.add_schedule(schedule_id="big", task_name="t", payload='"' + "x" * 200 + '"',
                          spec=IntervalSpec(60), now=now, priority=50)
    with pytest.raises(InvalidTaskError):
        core.add_schedule(schedule_id="nul", task_name="t\0", payload="{}",
                          spec=IntervalSpec(60), now=now, priority=50)
    core.close()
    with pytest.raises(QueueClosedError):
        core.add_schedule(schedule_id="late", task_name="t", payload="{}",
                          spec=IntervalSpec(60), now=now, priority=50)
    assert core.schedules() == []


class WrongResult(Task[int]):
    task_name: ClassVar[str] = "test.isolation.wrong_result"

    def execute(self) -> int:
        return "not an int"  # type: ignore[return-value]


def test_a_result_of_the_wrong_type_fails_as_invalid_result_not_invalid_payload() -> None:
    import asyncio

    new_task = to_new_task(WrongResult())
    lease = Lease("w", 1, WrongResult.task_name, new_task.payload, 1, 50, "default", 0.0,
                  None, WrongResult.retry)
    outcome = run_sync(lease, WrongResult, "w", asyncio.new_event_loop())
    assert outcome.failure is not None and outcome.failure.reason == "invalid_result"
    assert outcome.failure.error.type == "InvalidResultError"
    assert "invalid result of task 'test.isolation.wrong_result'" in outcome.failure.error.message
    assert not outcome.failure.retryable
