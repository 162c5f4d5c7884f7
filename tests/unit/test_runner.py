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


def test_the_loop_is_woken_at_low_water_and_when_nothing_is_left_not_per_task() -> None:
    started.clear()
    GATE.clear()

    async def scenario() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        batches: list[list[str]] = []
        got = asyncio.Event()

        def deliver(done: list[tuple[Lease, Outcome]]) -> None:
            batches.append([lease.task_id for lease, _ in done])
            if sum(map(len, batches)) == 6:
                got.set()

        runner = SyncRunner(1, "w-test", loop, deliver)
        runner.low_water = 2
        runner.submit(_lease(0, hold=True), Step)
        while not started:  # the thread is inside task 0: the rest queue behind it
            await asyncio.sleep(0)
        for i in range(1, 6):
            runner.submit(_lease(i), Step)
        GATE.set()
        await asyncio.wait_for(got.wait(), 10)
        runner.stop()
        return batches

    batches = asyncio.run(scenario())
    # No wake-up while more than 2 were left to start (t0..t2 finished with 5..3 left),
    # one at low water (after t3), one when nothing was left (after t5).
    assert len(batches[0]) >= 4 and batches[0][:4] == ["t0", "t1", "t2", "t3"]
    assert len(batches) <= 2
    assert [t for b in batches for t in b] == [f"t{i}" for i in range(6)]


def test_the_loops_poll_collects_outcomes_that_woke_nobody() -> None:
    started.clear()
    GATE.clear()

    async def scenario() -> tuple[int, list[str]]:
        loop = asyncio.get_running_loop()
        done: list[str] = []
        runner = SyncRunner(1, "w-test", loop, lambda b: done.extend(x.task_id for x, _ in b))
        runner.submit(_lease(0), Step)
        runner.submit(_lease(1, hold=True), Step)
        runner.submit(_lease(2), Step)
        while len(started) < 2:  # t0 finished (its outcome is in the outbox), t1 holds
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # a wake-up, had one been sent, would have run by now
        before = len(done)
        runner.collect()
        got = list(done)
        GATE.set()
        runner.stop()
        return before, got

    before, got = asyncio.run(scenario())
    assert before == 0  # two tasks were left to start: no wake-up for t0
    assert got == ["t0"]


def test_log_records_inside_an_attempt_carry_its_ids() -> None:
    from loguru import logger

    from rayqueue.actors.runner import attempt_context
    from rayqueue.logging import configure

    configure("worker")
    seen: list[dict[str, object]] = []
    sink = logger.add(lambda m: seen.append(dict(m.record["extra"])), level="INFO")
    try:
        with attempt_context(_lease(7), "w-test"):
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.remove(sink)
    assert seen[0]["task_id"] == "t7" and seen[0]["attempt"] == 1
    assert "task_id" not in seen[1]


def test_prefetch_capacity_comes_from_the_pace_and_outlives_an_idle_spell() -> None:
    """What a worker may hold beyond its slots: the attempts its threads finish in the
    horizon at the pace of recent ones, at most ``per_thread`` each. Nothing is known
    before the first attempt; after it, idle time changes nothing (the old measure, tasks
    finished per second, fell to zero in a pause, and a burst after it was claimed one
    task per call)."""
    started.clear()

    async def scenario() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        done: list[tuple[Lease, Outcome]] = []
        runner = SyncRunner(2, "w-test", loop, done.extend)
        before = runner.capacity(0.05, 32)
        for i in range(50):
            runner.submit(_lease(i), Step)
        while len(done) < 50:
            runner.collect()
            await asyncio.sleep(0.001)
        after = runner.capacity(0.05, 32)  # a Step takes well under 1.5 ms: the cap
        await asyncio.sleep(0.3)  # idle: nothing ran
        idle = runner.capacity(0.05, 32)
        runner.stop()
        return before, after, idle

    before, after, idle = asyncio.run(scenario())
    assert (before, after, idle) == (0, 64, 64)
