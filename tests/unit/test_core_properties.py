"""Property tests: random interleavings of queue operations never lose or duplicate a task."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rayqueue import (
    ErrorInfo,
    Failure,
    FakeClock,
    InMemoryStorage,
    InvalidStateError,
    Lease,
    QueueConfig,
    QueueCore,
    RetryPolicy,
    StaleLeaseError,
    TaskState,
)
from tests.unit.conftest import new

POLICY = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=4.0, max_lost_attempts=2)


class QueueMachine(RuleBasedStateMachine):
    """Drives one core with random operations and checks its invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_000.0)
        self.storage = InMemoryStorage()
        self.core = QueueCore(QueueConfig(lease_ttl=5.0, result_ttl=1e9, aging_rate=0.5),
                              self.storage, rng=random.Random(0))
        self.ids: set[str] = set()
        self.held: dict[str, Lease] = {}  # leases the simulated workers still hold
        self.stale: list[Lease] = []
        self.n = 0

    @rule(k=st.integers(1, 5), prio=st.integers(0, 100), delay=st.sampled_from([None, 0.0, 3.0]))
    def enqueue(self, k: int, prio: int, delay: float | None) -> None:
        news = []
        for _ in range(k):
            self.n += 1
            run_at = None if delay is None else self.clock.now() + delay
            news.append(new(task_id=f"t{self.n}", priority=prio, run_at=run_at,
                            retry=POLICY, timeout=20.0))
        self.core.enqueue_many(news, self.clock.now())
        self.ids.update(n.task_id for n in news if n.task_id)

    @rule(k=st.integers(1, 4), worker=st.sampled_from(["a", "b", "c"]))
    def claim(self, k: int, worker: str) -> None:
        for lease in self.core.claim(worker, k, self.clock.now()):
            assert lease.task_id not in self.held, "handed out twice under a live lease"
            self.held[lease.task_id] = lease

    @precondition(lambda self: self.held)
    @rule(data=st.data(), outcome=st.sampled_from(["ack", "fail", "release", "fatal"]))
    def report(self, data: st.DataObject, outcome: str) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.held)))
        lease = self.held.pop(task_id)
        now = self.clock.now()
        try:
            if outcome == "ack":
                self.core.ack(task_id, lease.token, "null", now)
            elif outcome == "release":
                self.core.release(task_id, lease.token, now)
            else:
                failure = Failure(ErrorInfo("E", "x"), retryable=outcome == "fail")
                self.core.fail(task_id, lease.token, failure, now)
        except StaleLeaseError:
            rec = self.core.get(task_id)
            assert rec.lease_token != lease.token or rec.state is not TaskState.LEASED
        self.stale.append(lease)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def late_report_is_fenced(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.stale))
        before = self.core.get(lease.task_id)
        if before.state is TaskState.LEASED and before.lease_token == lease.token:
            return  # cannot happen: stale leases were reported already
        assert self.core.ack_many([(lease.task_id, lease.token, "1")], self.clock.now()) == [False]
        assert self.core.get(lease.task_id) == before

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0, 25.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        report = self.core.tick(self.clock.now())
        for task_id in report.expired:
            self.stale.append(self.held.pop(task_id))
        for task_id, _worker in report.timed_out:
            self.stale.append(self.held.pop(task_id))

    @precondition(lambda self: self.held)
    @rule(worker=st.sampled_from(["a", "b", "c"]))
    def worker_dies(self, worker: str) -> None:
        for task_id in self.core.worker_lost(worker, self.clock.now()):
            self.stale.append(self.held.pop(task_id))

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.ids)))
        try:
            self.core.cancel(task_id, self.clock.now())
        except InvalidStateError:
            assert self.core.get(task_id).state in (TaskState.LEASED, TaskState.SUCCEEDED,
                                                    TaskState.DEAD)

    @invariant()
    def nothing_lost_and_one_state_each(self) -> None:
        stats = self.core.stats()
        assert sum(stats.by_state.values()) == len(self.ids)
        for task_id in self.ids:
            assert self.core.find(task_id) is not None, f"{task_id} lost"

    @invariant()
    def leases_match_what_workers_hold(self) -> None:
        leased = {i for i in self.ids if self.core.get(i).state is TaskState.LEASED}
        assert leased == set(self.held)
        assert self.core.ready_count() == sum(
            1 for i in self.ids if self.core.get(i).state is TaskState.READY)

    @invariant()
    def journal_agrees_with_memory(self) -> None:
        if self.n % 7:  # a full reload is costly; check regularly, not every step
            return
        again = QueueCore.recover(self.storage, self.core.config)
        assert again.stats() == self.core.stats()


QueueMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase
