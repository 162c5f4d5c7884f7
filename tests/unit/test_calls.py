"""The client's retry budget, on a fake clock: what counts as the queue being unreachable.

Ray is not started: each attempt is scripted (how long it takes, then its answer or
error), and the clock moves only when an attempt runs or the retry loop backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from rayqueue import calls
from rayqueue.errors import QueueLostError, QueueUnavailableError


class Script:
    """Attempts as (seconds taken, answer or exception to raise), on a fake clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, steps: list[tuple[float, Any]],
                 first: list[tuple[float, Any]] | None = None):
        self.now = 0.0
        self.steps: Iterator[tuple[float, Any]] = iter(steps)
        self.first = list(first or [])  # several shards' first attempts, run together
        self.attempts = self.submitted = 0
        # rayqueue.calls's own `time`, so nothing else sees the fake clock.
        monkeypatch.setattr("rayqueue.calls.time", self)
        monkeypatch.setattr(calls, "_get", self.get)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def get(self, ref: int, timeout: float | None = None) -> Any:
        self.attempts += 1
        if ref < len(self.first):  # a first attempt: all ran together from time 0
            took, outcome = self.first[ref]
            self.now = max(self.now, took)
        else:
            took, outcome = next(self.steps)
            self.now += took
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def call(self) -> int:
        self.submitted += 1
        return self.submitted - 1  # the ref: submissions in order


def unreachable() -> QueueUnavailableError:
    return QueueUnavailableError("the queue's actor is unreachable (ActorUnavailableError)")


def test_replies_lost_after_a_long_poll_do_not_spend_the_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Lossy RPC: five result waits in a row park 30 s each, then lose their reply.
    script = Script(monkeypatch, [(30.0, unreachable())] * 5 + [(1.0, "answer")])
    assert calls._retrying(script.call, 30.0, hold=30.0) == "answer"
    assert script.attempts == 6


def test_an_actor_refusing_every_call_is_given_up_on_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(monkeypatch, [(0.01, unreachable())] * 1_000)
    with pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 10.0)
    assert 9.0 <= script.now <= 10.0
    # A long-poll that is refused at once fares no better: backing off counts.
    script = Script(monkeypatch, [(0.01, unreachable())] * 1_000)
    with pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 10.0, hold=30.0)
    assert 9.0 <= script.now <= 11.0


def test_a_retry_cap_shortens_every_budget_in_its_context(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The dashboard's call threads: a 30-s budget is cut to the 2 s the page waits.
    script = Script(monkeypatch, [(0.01, unreachable())] * 1_000)
    with calls.retry_cap(2.0), pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 30.0)
    assert 1.5 <= script.now <= 2.0
    # Outside it, the caller's own budget again; a cap never lengthens one.
    script = Script(monkeypatch, [(0.01, unreachable())] * 1_000)
    with pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 10.0)
    assert 9.0 <= script.now <= 10.0
    script = Script(monkeypatch, [(0.01, unreachable())] * 1_000)
    with calls.retry_cap(60.0), pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 10.0)
    assert 9.0 <= script.now <= 10.0


def test_time_beyond_the_hold_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each attempt was meant to park 30 s but took 45: 15 s of it was unreachability.
    script = Script(monkeypatch, [(45.0, unreachable())] * 10)
    with pytest.raises(QueueUnavailableError):
        calls._retrying(script.call, 30.0, hold=30.0)
    assert script.attempts == 2


def test_a_lost_queue_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(monkeypatch, [(0.01, QueueLostError("node gone"))] * 3)
    with pytest.raises(QueueLostError):
        calls._retrying(script.call, 30.0)
    assert script.attempts == 1


def test_calls_on_several_shards_are_retried_on_the_same_terms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Both shards' long-polls lose their replies; shard A's retries lose two more, then
    # it answers. Shard B is charged for its own wait only, not for A's retries.
    script = Script(monkeypatch, first=[(30.0, unreachable()), (30.0, unreachable())],
                    steps=[(30.0, unreachable()), (30.0, unreachable()), (1.0, "a"),
                           (30.0, unreachable()), (2.0, "b")])
    assert calls._retrying_all([script.call, script.call], 30.0, hold=30.0) == ["a", "b"]
    assert script.attempts == 7
    # Without the hold, the first lost reply spends the budget: one more try, then the
    # error surfaces, once shard B's call has settled too.
    script = Script(monkeypatch, first=[(30.0, unreachable()), (0.0, "b")],
                    steps=[(0.01, unreachable())])
    with pytest.raises(QueueUnavailableError):
        calls._retrying_all([script.call, script.call], 30.0)
    assert script.attempts == 3


def test_a_renewal_never_waits_for_an_earlier_ones_lost_answer() -> None:
    """``every`` starts a call each period while the first one is never answered (a lost
    reply: Ray's reference never resolves), and gives that one up at its deadline. A
    heartbeat loop that waited for it let the worker's leases expire under its tasks."""

    async def scenario() -> int:
        calls_made = 0
        third, gave_up = asyncio.Event(), asyncio.Event()
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def beat() -> None:
            nonlocal calls_made
            calls_made += 1
            if calls_made == 3:
                third.set()
            if calls_made == 1:
                try:
                    await never
                except asyncio.CancelledError:
                    gave_up.set()
                    raise

        renewing = asyncio.ensure_future(calls.every(0.01, beat, deadline=0.05))
        await asyncio.wait_for(third.wait(), 10)  # hang guard, not a timing assertion
        await asyncio.wait_for(gave_up.wait(), 10)
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        return calls_made

    # Three calls started while the first was unanswered, which was given up (cancelled).
    assert asyncio.run(scenario()) >= 3


def test_a_renewal_that_raises_is_reported_and_the_next_one_still_goes_out() -> None:
    async def scenario() -> list[str]:
        made = 0
        heard: list[str] = []
        second = asyncio.Event()

        async def beat() -> None:
            nonlocal made
            made += 1
            if made == 1:
                raise RuntimeError("boom")
            second.set()

        renewing = asyncio.ensure_future(
            calls.every(0.01, beat, deadline=1.0, on_error=lambda e: heard.append(repr(e))))
        await asyncio.wait_for(second.wait(), 10)  # hang guard, not a timing assertion
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        return heard

    assert asyncio.run(scenario()) == ["RuntimeError('boom')"]


def test_stop_ends_a_task_that_swallowed_its_first_cancel() -> None:
    """Before Python 3.12, asyncio.wait_for can swallow a cancel that lands as its wait
    completes (CPython gh-86296); the task goes on to its next await. A recycled worker
    once hung for good in ``cancel(); await reporter`` so. ``stop`` cancels again."""
    swallowed = []

    async def reporter() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append(1)  # as wait_for does when the inner wait just finished
        await asyncio.Event().wait()  # the next round of its loop: waits for good

    async def main() -> None:
        task = asyncio.ensure_future(reporter())
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(calls.stop(task))
        done, _ = await asyncio.wait({stopping}, timeout=5)  # (a wait that cancels nothing)
        assert stopping in done, "stop() still waits for a task that swallowed a cancel"
        assert task.cancelled() and swallowed == [1]

    asyncio.run(main())


def test_stop_raises_what_the_task_raised() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ValueError("while stopping") from None

    async def main() -> None:
        task = asyncio.ensure_future(failing())
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="while stopping"):
            await calls.stop(task)

    asyncio.run(main())
