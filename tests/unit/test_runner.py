"""The sync runner: claim order is start order, outcomes come back in batches, a drain
takes back what has not started. No Ray: a plain event loop stands in for the actor's."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from pydantic import field_validator

from rayqueue import RetryPolicy, Task
from rayqueue.actors.runner import SyncRunner, run_sync
from rayqueue.core.lease import Lease, Outcome
from rayqueue.task import current

started: list[int] = []
GATE = threading.Event()


class Step(Task[int]):
    task_name: ClassVar[str] = "test.runner.step"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2)

    i: int
    fail: bool = False
    hold: bool = False

    def execute(self) -> int:
        started.append(self.i)
        if self.hold:
            GATE.wait(10)
        if self.fail:
            raise KeyError(self.i)
        return self.i * 10


class Picky(Task[int]):
    """A model whose validator raises a TypeError (pydantic passes it through)."""

    task_name: ClassVar[str] = "test.runner.picky"
    i: int

    @field_validator("i")
    @classmethod
    def _odd_only(cls, value: int) -> int:
        if value % 2 == 0:
            raise TypeError("even numbers are not welcome")
        return value

    def execute(self) -> int:
        return self.i


def _lease(i: int, payload: str | None = None, **fields: bool) -> Lease:
    body = payload if payload is not None else Step(i=i, **fields).model_dump_json()
    return Lease(f"t{i}", 1, Step.task_name, body, 1, 50, "default", 0.0, None,
                 RetryPolicy(), False)


async def _run(leases: list[Lease], threads: int) -> tuple[list[list[tuple[Lease, Outcome]]],
                                                            SyncRunner]:
    loop = asyncio.get_running_loop()
    batches: list[list[tuple[Lease, Outcome]]] = []
    got = asyncio.Event()

    def deliver(done: list[tuple[Lease, Outcome]]) -> None:
        batches.append(done)
        if sum(len(b) for b in batches) == len(leases):
            got.set()

    runner = SyncRunner(threads, "w-test", loop, deliver)
    for lease in leases:
        runner.submit(lease, Step)
    await asyncio.wait_for(got.wait(), 10)
    return batches, runner


def test_one_thread_starts_tasks_in_submission_order_and_batches_outcomes() -> None:
    started.clear()
    batches, runner = asyncio.run(_run([_lease(i) for i in range(200)], threads=1))
    runner.stop()
    assert started == list(range(200))
    outcomes = [o for batch in batches for _, o in batch]
    assert [o.result for o in outcomes] == [str(i * 10) for i in range(200)]
    assert len(batches) < 200  # handed back in batches, not one wake-up per task


def test_failures_and_bad_payloads_become_outcomes() -> None:
    loop = asyncio.new_event_loop()
    try:
        failed = run_sync(_lease(1, fail=True), Step, "w", loop)
        rejected = run_sync(_lease(2, payload='{"i": "not a number"}'), Step, "w", loop)
    finally:
        loop.close()
    assert failed.failure is not None and failed.failure.error.type == "KeyError"
    assert failed.failure.retryable
    assert rejected.failure is not None and not rejected.failure.retryable
    assert rejected.failure.reason == "schema_mismatch"
    assert current() is None  # the attempt's context does not outlive it


def test_a_drain_takes_back_what_no_thread_started() -> None:
    started.clear()
    GATE.clear()

    async def scenario() -> tuple[list[str], list[tuple[Lease, Outcome]]]:
        loop = asyncio.get_running_loop()
        done: list[tuple[Lease, Outcome]] = []
        runner = SyncRunner(1, "w-test", loop, done.extend)
        runner.submit(_lease(0, hold=True), Step)
        for i in range(1, 6):
            runner.submit(_lease(i), Step)
        while not started:  # the one thread is inside task 0
            await asyncio.sleep(0)
        taken = [lease.task_id for lease in runner.take_unstarted()]
        GATE.set()
        runner.stop()
        while not done:
            await asyncio.sleep(0)
        return taken, done

    taken, done = asyncio.run(scenario())
    assert taken == ["t1", "t2", "t3", "t4", "t5"]
    assert [lease.task_id for lease, _ in done] == ["t0"]


def test_a_validator_raising_anything_fails_the_attempt_and_the_thread_lives_on() -> None:
    async def scenario() -> list[Outcome]:
        loop = asyncio.get_running_loop()
        done: list[tuple[Lease, Outcome]] = []
        got = asyncio.Event()

        def deliver(batch: list[tuple[Lease, Outcome]]) -> None:
            done.extend(batch)
            if len(done) == 2:
                got.set()

        runner = SyncRunner(1, "w-test", loop, deliver)
        for i in (2, 3):  # the even one is refused by its validator, the odd one runs
            runner.submit(Lease(f"p{i}", 1, Picky.task_name, f'{{"i": {i}}}', 1, 50,
                                "default", 0.0, None, RetryPolicy(), False), Picky)
        await asyncio.wait_for(got.wait(), 10)
        runner.stop()
        return [o for _, o in done]

    refused, ran = asyncio.run(scenario())
    assert refused.failure is not None and not refused.failure.retryable
    assert "even numbers" in refused.failure.error.message
    assert ran.result == "3"
