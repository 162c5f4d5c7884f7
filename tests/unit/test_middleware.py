"""Middleware and task headers without Ray: hook order, the attempt pipeline's hooks,
a raising middleware changing nothing, headers validated and journaled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rayqueue import (
    FakeClock,
    InvalidArgumentTypeError,
    InvalidTaskError,
    Middleware,
    QueueCore,
    RetryPolicy,
    Task,
)
from rayqueue.actors.runner import SIGNALS, run_async, run_sync
from rayqueue.core.checks import MAX_HEADERS, check_headers
from rayqueue.core.lease import Lease
from rayqueue.middleware import (
    Attempt,
    AttemptResult,
    Hooks,
    check_middleware,
    install_worker_hooks,
)
from rayqueue.protocol import pack_leases, pack_news, unpack_leases, unpack_news
from rayqueue.storage.sqlite import SQLiteStorage
from rayqueue.task import TaskSignals, current, to_new_task
from tests.unit.conftest import new


class Log(Middleware):
    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name, self.calls = name, calls

    def before_attempt(self, attempt: Attempt) -> None:
        ctx = current()
        self.calls.append((self.name, f"before {ctx.task_id if ctx else None}"))

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        self.calls.append((self.name, f"after {result.outcome} {result.error_type}"))


class Boom(Middleware):
    def before_attempt(self, attempt: Attempt) -> None:
        raise RuntimeError("bug")

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        raise RuntimeError("bug")


class Adds(Task[int]):
    task_name: ClassVar[str] = "mw.adds"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2)
    a: int
    mode: str = "ok"

    def execute(self) -> int:
        if self.mode == "raise":
            raise ValueError("nope")
        if self.mode == "bad-result":
            return "not an int"  # type: ignore[return-value]
        ctx = current()
        assert ctx is not None
        return self.a + len(ctx.headers)


class AsyncAdds(Task[int]):
    task_name: ClassVar[str] = "mw.async"
    a: int

    async def execute(self) -> int:
        return self.a * 2


def _lease(payload: str, name: str = "mw.adds", headers: dict[str, str] | None = None) -> Lease:
    return Lease("t1", 1, name, payload, 1, 50, "default", 0.0, None, RetryPolicy(),
                 headers=headers)


@pytest.fixture
def hooks() -> Any:
    yield install_worker_hooks
    install_worker_hooks(Hooks())


def test_before_hooks_run_in_order_after_hooks_in_reverse(hooks: Any) -> None:
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Log("a", calls), Log("b", calls)]))
    loop = asyncio.new_event_loop()
    outcome = run_sync(_lease('{"a": 1}', headers={"k": "v"}), Adds, "w", loop)
    loop.close()
    assert outcome.result == "2"  # 1 + one header, seen through current()
    assert calls == [("a", "before t1"), ("b", "before t1"),
                     ("b", "after succeeded None"), ("a", "after succeeded None")]


@pytest.mark.parametrize(("payload", "outcome", "error"), [
    ('{"a": 1, "mode": "raise"}', "failed", "ValueError"),
    ('{"a": 1, "mode": "bad-result"}', "failed", "InvalidResultError"),
    ('{"a": "x"}', "rejected", "InvalidPayloadError"),
])
def test_after_attempt_says_how_the_attempt_ended(
        hooks: Any, payload: str, outcome: str, error: str) -> None:
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Log("a", calls)]))
    loop = asyncio.new_event_loop()
    run_sync(_lease(payload), Adds, "w", loop)
    loop.close()
    assert calls[-1] == ("a", f"after {outcome} {error}")


def test_a_raising_middleware_changes_no_outcome(hooks: Any) -> None:
    loop = asyncio.new_event_loop()
    plain = [run_sync(_lease(p), Adds, "w", loop)
             for p in ('{"a": 1}', '{"a": 1, "mode": "raise"}', '{"a": "x"}')]
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Boom(), Log("after-boom", calls)]))
    hooked = [run_sync(_lease(p), Adds, "w", loop)
              for p in ('{"a": 1}', '{"a": 1, "mode": "raise"}', '{"a": "x"}')]
    loop.close()
    assert [(o.result, o.failure and (o.failure.retryable, o.failure.reason, o.failure.error.type))
            for o in hooked] == [
        (o.result, o.failure and (o.failure.retryable, o.failure.reason, o.failure.error.type))
        for o in plain]
    assert len(calls) == 6  # the one after it still ran, every time


def test_async_attempts_go_through_the_same_hooks(hooks: Any) -> None:
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Log("a", calls)]))
    outcome = asyncio.run(run_async(_lease('{"a": 4}', "mw.async"), AsyncAdds, "w"))
    assert outcome.result == "8"
    assert calls == [("a", "before t1"), ("a", "after succeeded None")]


class Cooperative(Task[int]):
    task_name: ClassVar[str] = "mw.coop"

    def execute(self) -> int:
        ctx = current()
        assert ctx is not None
        ctx.progress(0.25, "a quarter")
        SIGNALS["t1"].cancelled = True  # as the worker does when the queue says so
        return 1 if ctx.cancelled else 0


class AsyncWaitsForever(Task[int]):
    task_name: ClassVar[str] = "mw.forever"

    async def execute(self) -> int:
        await asyncio.sleep(3600)
        return 0


def test_a_cancelled_attempt_ends_cancelled_through_the_hooks(hooks: Any) -> None:
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Log("a", calls)]))
    loop = asyncio.new_event_loop()
    SIGNALS["t1"] = signals = TaskSignals()
    try:
        outcome = run_sync(_lease("{}", "mw.coop"), Cooperative, "w", loop)
    finally:
        SIGNALS.pop("t1", None)
        loop.close()
    assert signals.progress == (0.25, "a quarter") and not signals.sent
    assert outcome.failure is not None and not outcome.failure.retryable
    assert outcome.failure.reason == "cancelled"
    assert calls[-1] == ("a", "after cancelled TaskCancelledError")


def test_an_async_attempt_is_cancelled_on_the_loop(hooks: Any) -> None:
    calls: list[tuple[str, str]] = []
    hooks(Hooks([Log("a", calls)]))

    async def main() -> Any:
        SIGNALS["t1"] = TaskSignals()
        job = asyncio.create_task(run_async(_lease("{}", "mw.forever"), AsyncWaitsForever,
                                            "w"))
        while not calls:
            await asyncio.sleep(0)  # until it started
        SIGNALS["t1"].cancelled = True
        job.cancel()
        return await job

    try:
        outcome = asyncio.run(main())
    finally:
        SIGNALS.pop("t1", None)
    assert outcome.failure is not None and outcome.failure.error.type == "TaskCancelledError"
    assert calls[-1] == ("a", "after cancelled TaskCancelledError")


def test_an_attempt_cancelled_otherwise_has_no_outcome() -> None:
    async def main() -> Any:
        job = asyncio.create_task(run_async(_lease("{}", "mw.forever"), AsyncWaitsForever,
                                            "w"))
        await asyncio.sleep(0.01)
        job.cancel()  # a drain deadline: no cancel from the queue
        return await job

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_only_overridden_hooks_are_called() -> None:
    h = Hooks([Log("a", [])])
    assert h.wants("before_attempt") and not h.wants("before_enqueue")
    assert not Hooks().wants("after_attempt") and not Hooks()


@pytest.mark.parametrize("bad", [Log, [Log], "x", None, Log("a", [])])
def test_middleware_must_be_a_list_of_instances(bad: Any) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="middleware"):
        check_middleware(bad)


@pytest.mark.parametrize(("headers", "match"), [
    (["a"], "must be a dict"),
    ({"a": 1}, "must be a str"),
    ({1: "a"}, "header name must be a str"),
    ({"": "a"}, "header name must be 1 to"),
    ({"a\n": "a"}, "control characters"),
    ({"a": "b\x00"}, "control characters"),
    ({"a": "\ud800"}, "not valid text"),
    ({"a": "x" * 5_000}, "over 4096"),
    ({f"h{i}": "v" for i in range(MAX_HEADERS + 1)}, "at most 64"),
    ({f"h{i}": "v" * 4_000 for i in range(5)}, "bytes; at most"),
])
def test_bad_headers_are_refused_with_a_typed_error(headers: Any, match: str) -> None:
    with pytest.raises(InvalidTaskError, match=match):
        check_headers(headers)
    with pytest.raises(InvalidTaskError, match=match):
        to_new_task(Adds(a=1), headers=headers)


def test_headers_are_journaled_and_reach_every_lease(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    storage = SQLiteStorage(tmp_path / "j.sqlite")
    core = QueueCore(storage=storage)
    headers = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "x-id": "é"}
    news = unpack_news(pack_news([to_new_task(Adds(a=1), task_id="h1", headers=headers)]))
    core.enqueue_many([*news, new(task_id="plain")], clock.now())
    storage.close()
    again = QueueCore.recover(SQLiteStorage(tmp_path / "j.sqlite"))
    leases = unpack_leases(pack_leases(again.claim("w", 2, clock.now())))
    assert {lease.task_id: lease.headers for lease in leases} == {"h1": headers, "plain": None}
    rec = again.find("h1")
    assert rec is not None and rec.headers == headers


class Records(Task[int]):
    task_name: ClassVar[str] = "mw.records"
    a: int
    seen: ClassVar[list[str]] = []

    def execute(self) -> int:
        Records.seen.append("execute")
        return self.a


class AsyncRecords(Task[int]):
    task_name: ClassVar[str] = "mw.arecords"
    a: int

    async def execute(self) -> int:
        Records.seen.append("execute")
        return self.a


@pytest.mark.parametrize("cls", [Records, AsyncRecords])
def test_a_start_is_told_after_validation_and_before_attempt_right_before_execute(
        hooks: Any, cls: type[Task[int]]) -> None:
    """The start a worker confirms to the queue (lower work waits for it) is told as
    late as it can be: after the payload's validation and ``before_attempt``, right
    before the body; a payload refused is never told as started."""
    Records.seen = []

    class Before(Middleware):
        def before_attempt(self, attempt: Attempt) -> None:
            Records.seen.append("before_attempt")

    hooks(Hooks([Before()]))

    def told() -> None:
        Records.seen.append("told")

    def attempt(payload: str) -> Any:
        lease = _lease(payload, cls.task_name)
        if cls is AsyncRecords:
            return asyncio.run(run_async(lease, cls, "w", told))
        loop = asyncio.new_event_loop()
        try:
            return run_sync(lease, cls, "w", loop, told)
        finally:
            loop.close()

    assert attempt('{"a": 3}').result == "3"
    assert Records.seen == ["before_attempt", "told", "execute"]
    Records.seen = []
    assert attempt('{"a": "x"}').failure.retryable is False
    assert Records.seen == ["before_attempt"]
    # Cancelled before it started: never told as started either.
    Records.seen = []
    SIGNALS["t1"] = TaskSignals()
    SIGNALS["t1"].cancelled = True
    try:
        assert attempt('{"a": 3}').failure.reason == "cancelled"
    finally:
        del SIGNALS["t1"]
    assert Records.seen == ["before_attempt"]
