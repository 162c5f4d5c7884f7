"""Property tests: random interleavings of queue operations never lose, duplicate or
re-run a task (issue 13, build 6).

One rule-based state machine drives a QueueCore with every operation the queue has:
enqueues over the whole priority range (and out of it), delays, periodic schedules
(interval and cron in zones with DST), pause and resume, claims of several with
prefetch, heartbeats, acks, failures, releases, late reports, dead workers, cancels,
``retry_dead``, restarts from the journal, and a clock that moves forwards and back.
It runs twice: on an in-memory journal and on a real SQLite file.

Invariants, after every step:

- a finished task (succeeded, dead, cancelled) never changes and is never handed out
  again (``retry_dead`` alone brings a dead one back);
- nothing is lost: every task enqueued (or fired by a schedule) is there, across
  restarts, and nothing acknowledged changes;
- the counts in ``stats()`` agree with the records, and the journal with memory;
- leases are exactly what the workers hold; a claim hands out the best ready tasks
  first (rank order).

Examples per run: the ``machine-ci`` profile (default; what CI runs) or
``RAYQUEUE_PROPERTY_PROFILE=machine-deep`` for a long search (with ``--timeout=0``: it
runs for minutes).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from datetime import datetime, timezone

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rayqueue import (
    ErrorInfo,
    Failure,
    InMemoryStorage,
    InvalidStateError,
    Lease,
    QueueConfig,
    QueueCore,
    RetryPolicy,
    StaleLeaseError,
    TaskState,
)
from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN
from rayqueue.core.record import TaskRecord
from rayqueue.core.schedule import CronSpec, IntervalSpec, MisfirePolicy, ScheduleSpec
from rayqueue.errors import InvalidPriorityError
from rayqueue.storage.base import Storage
from rayqueue.storage.sqlite import SQLiteStorage
from tests.unit.conftest import new

POLICY = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=4.0, max_lost_attempts=2)
#: An hour before Europe/Berlin springs forward (2026-03-29 01:00 UTC): big time steps
#: carry the schedules across a DST gap.
START = datetime(2026, 3, 29, 0, 0, tzinfo=timezone.utc).timestamp()
WORKERS = ["a", "b", "c"]
POOLS = ["default", "p2"]
SPECS: list[ScheduleSpec] = [
    IntervalSpec(7.0), IntervalSpec(60.0), CronSpec("* * * * *", "Europe/Berlin"),
    CronSpec("*/15 * * * *", "America/New_York"), CronSpec("30 2 * * *", "Europe/Berlin"),
]
TERMINAL = (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED)

settings.register_profile("machine-ci", max_examples=500, stateful_step_count=15,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: `make unit`, the quick loop while editing; `make test` and CI run machine-ci.
settings.register_profile("machine-quick", max_examples=120, stateful_step_count=15,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("machine-deep", max_examples=5_000, stateful_step_count=60,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("RAYQUEUE_PROPERTY_PROFILE", "machine-ci"))
#: the SQLite machine runs fewer examples (each creates, fsyncs and reopens a file)
SQLITE_PROFILE = settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 12))


class WallClock:
    """A clock a test moves either way (FakeClock refuses to go back, as it should for
    tests that need monotonic time; a wall clock stepped by NTP does go back)."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class QueueMachine(RuleBasedStateMachine):
    """Drives one core with random operations and checks its invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = WallClock(START)
        self.config = QueueConfig(lease_ttl=5.0, result_ttl=1e9, aging_rate=0.5)
        self.storage = self.open_storage(create=True)
        self.restarts = 0
        self.core = QueueCore(self.config, self.storage, rng=random.Random(0))
        self.ids: set[str] = set()
        self.schedule_ids: set[str] = set()
        self.held: dict[str, Lease] = {}  # leases the simulated workers still hold
        self.stale: list[Lease] = []
        #: finished records as first seen: they must never change (nor be handed out)
        self.finished: dict[str, TaskRecord] = {}
        self.acked: set[str] = set()
        self.n = 0
        self.steps = 0

    # ------------------------------------------------------------- journal
    def open_storage(self, *, create: bool) -> Storage:
        if create:
            return InMemoryStorage()
        return self.storage  # memory survives a "restart" of the core

    def close_storage(self) -> None:
        """Nothing to release in memory."""

    def teardown(self) -> None:
        self.close_storage()

    # --------------------------------------------------------------- rules
    @rule(k=st.integers(1, 5), prio=st.integers(PRIORITY_MIN, PRIORITY_MAX),
          delay=st.sampled_from([None, 0.0, 3.0, 100.0]), pool=st.sampled_from(POOLS))
    def enqueue(self, k: int, prio: int, delay: float | None, pool: str) -> None:
        news = []
        for _ in range(k):
            self.n += 1
            run_at = None if delay is None else self.clock.now() + delay
            news.append(new(task_id=f"t{self.n}", priority=prio, run_at=run_at,
                            retry=POLICY, timeout=20.0, pool=pool))
        self.core.enqueue_many(news, self.clock.now())
        self.ids.update(n.task_id for n in news if n.task_id)

    @rule(prio=st.one_of(st.integers(max_value=PRIORITY_MIN - 1),
                         st.integers(min_value=PRIORITY_MAX + 1),
                         st.sampled_from([2**63, -(2**63), 10**400])))
    def enqueue_out_of_range_is_refused(self, prio: int) -> None:
        before = self.core.stats()
        self.n += 1
        try:
            self.core.enqueue_many([new(task_id="ok-" + str(self.n)), new(
                task_id=f"bad{self.n}", priority=prio)], self.clock.now())
        except InvalidPriorityError:
            pass
        else:
            raise AssertionError(f"priority {prio} was accepted")
        assert self.core.stats() == before  # all or nothing: the good one is not in
        assert self.core.find(f"ok-{self.n}") is None

    @rule(spec=st.sampled_from(SPECS), prio=st.integers(PRIORITY_MIN, PRIORITY_MAX),
          misfire=st.sampled_from(list(MisfirePolicy)))
    def add_schedule(self, spec: ScheduleSpec, prio: int, misfire: MisfirePolicy) -> None:
        if len(self.schedule_ids) >= 3:
            return  # enough to fire often; more only slows the run
        self.n += 1
        sid = f"s{self.n}"
        self.core.add_schedule(schedule_id=sid, task_name="t", payload="{}", spec=spec,
                               now=self.clock.now(), priority=prio, misfire=misfire,
                               retry=POLICY, timeout=20.0)
        self.schedule_ids.add(sid)

    @rule(k=st.integers(0, 4), worker=st.sampled_from(WORKERS), pool=st.sampled_from(POOLS),
          prefetch=st.integers(0, 3), idle=st.booleans())
    def claim(self, k: int, worker: str, pool: str, prefetch: int, idle: bool) -> None:
        idle = idle and all(self.core.get(i).worker != worker for i in self.held)
        leases = self.core.claim(worker, k, self.clock.now(), pool, idle=idle,
                                 prefetch=prefetch)
        if self.core.paused:
            assert leases == [], "a paused queue handed out work"
        assert len(leases) <= k + prefetch
        for lease in leases:
            assert lease.task_id not in self.held, "handed out twice under a live lease"
            assert lease.task_id not in self.finished, "a finished task was handed out again"
            assert lease.pool == pool
            self.held[lease.task_id] = lease
        if leases:  # the best first: nothing left ready ranks before what was taken
            worst = max(self._rank(self.core.get(lease.task_id)) for lease in leases)
            left = [r for r in self._records() if r.state is TaskState.READY
                    and r.pool == pool and not r.lost_attempts]
            assert all(self._rank(r) >= worst for r in left), "a claim skipped better work"

    def _rank(self, rec: TaskRecord) -> float:
        # ReadyIndex's static key: the order of effective priorities under aging
        return self.config.aging_rate * rec.due_at - rec.priority

    @precondition(lambda self: self.held)
    @rule(data=st.data(), outcome=st.sampled_from(["ack", "fail", "release", "fatal"]))
    def report(self, data: st.DataObject, outcome: str) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.held)))
        lease = self.held.pop(task_id)
        now = self.clock.now()
        try:
            if outcome == "ack":
                self.core.ack(task_id, lease.token, "null", now)
                self.acked.add(task_id)
            elif outcome == "release":
                self.core.release(task_id, lease.token, now)
            else:
                failure = Failure(ErrorInfo("E", "x"), retryable=outcome == "fail")
                self.core.fail(task_id, lease.token, failure, now)
        except StaleLeaseError:
            rec = self.core.get(task_id)
            assert rec.lease_token != lease.token or rec.state is not TaskState.LEASED
        self.stale.append(lease)

    @precondition(lambda self: len(self.held) >= 2)
    @rule(data=st.data())
    def ack_several(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.held)), min_size=2,
                                    max_size=4, unique=True))
        leases = [self.held.pop(i) for i in chosen]
        done = self.core.ack_many([(x.task_id, x.token, "1") for x in leases],
                                  self.clock.now())
        assert done == [True] * len(leases)  # every one of them was current
        self.acked.update(chosen)
        self.stale.extend(leases)

    @precondition(lambda self: self.held or self.stale)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        pool = sorted(self.held) + [f"stale:{i}" for i in range(len(self.stale))]
        chosen = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
        leases = [self.stale[int(c[6:])] if c.startswith("stale:") else self.held[c]
                  for c in chosen]
        now = self.clock.now()
        alive = self.core.heartbeat([(x.task_id, x.token) for x in leases], now)
        for lease, ok in zip(leases, alive, strict=True):
            live = self.held.get(lease.task_id) == lease
            assert ok == live, "a heartbeat answered wrongly"
            if live:
                expires = self.core.get(lease.task_id).lease_expires_at
                assert expires is not None and expires >= now + self.config.lease_ttl

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def late_report_is_fenced(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.stale))
        before = self.core.get(lease.task_id)
        if before.state is TaskState.LEASED and before.lease_token == lease.token:
            return  # cannot happen: stale leases were reported already
        assert self.core.ack_many([(lease.task_id, lease.token, "1")], self.clock.now()) == [False]
        assert self.core.get(lease.task_id) == before

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0, 25.0, 900.0, 3_600.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._tick()

    @rule(seconds=st.sampled_from([1.0, 6.0, 120.0, 3_600.0]))
    def clock_goes_back(self, seconds: float) -> None:
        """NTP steps the clock back (scenario 18): nothing may break or run twice."""
        self.clock.advance(-seconds)
        self._tick()

    def _tick(self) -> None:
        report = self.core.tick(self.clock.now())
        for task_id in report.expired:
            self.stale.append(self.held.pop(task_id))
        for task_id, _worker in report.timed_out:
            self.stale.append(self.held.pop(task_id))
        fired = set(self.core.task_ids()) - self.ids
        assert len(fired) == report.fired, "a tick made tasks it did not report"
        for task_id in fired:
            assert self.core.get(task_id).schedule_id in self.schedule_ids
        self.ids |= fired

    @precondition(lambda self: self.held)
    @rule(worker=st.sampled_from(WORKERS))
    def worker_dies(self, worker: str) -> None:
        for task_id in self.core.worker_lost(worker, self.clock.now()):
            self.stale.append(self.held.pop(task_id))

    @precondition(lambda self: self.ids or self.schedule_ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.ids | self.schedule_ids)))
        lease = self.held.get(task_id)
        try:
            self.core.cancel(task_id, self.clock.now())
        except InvalidStateError:
            assert self.core.get(task_id).state in (TaskState.SUCCEEDED, TaskState.DEAD)
        else:
            if lease is not None:  # a running task is cancelled too: its lease is gone
                del self.held[task_id]
                self.stale.append(lease)
                assert self.core.cancelled_leases([(task_id, lease.token)]) == [task_id]
        self.schedule_ids.discard(task_id)

    @precondition(lambda self: any(r.state is TaskState.DEAD for r in self.finished.values()))
    @rule(data=st.data())
    def retry_dead(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(
            i for i, r in self.finished.items() if r.state is TaskState.DEAD)))
        rec = self.core.retry_dead(task_id, self.clock.now())
        assert rec.state is TaskState.READY and rec.attempts == 0
        del self.finished[task_id]  # it may run again: that is what retry_dead is for

    @rule(paused=st.booleans())
    def pause_or_resume(self, paused: bool) -> None:
        if paused:
            self.core.pause()
        else:
            self.core.resume()

    @rule()
    def restart(self) -> None:
        """The queue restarts: its core is rebuilt from the journal alone."""
        before = self.core.stats()
        self.close_storage()
        self.storage = self.open_storage(create=False)
        self.restarts += 1
        self.core = QueueCore.recover(self.storage, self.config,
                                      rng=random.Random(self.restarts))
        after = self.core.stats()
        # Pause is kept in memory only: a restarted queue runs again.
        assert after == before.model_copy(update={"paused": False})
        for task_id in self.acked:
            assert self.core.get(task_id).state is TaskState.SUCCEEDED, "an ack was lost"

    # ---------------------------------------------------------- invariants
    def _records(self) -> list[TaskRecord]:
        """Every task's record (KeyError, TaskNotFoundError: one was lost)."""
        return [self.core.get(i) for i in self.ids]

    @invariant()
    def invariants(self) -> None:
        """All invariants in one (one pass over the records per step)."""
        records = self._records()
        self.nothing_lost_and_counts_agree(records)
        self.leases_match_what_workers_hold(records)
        self.finished_tasks_never_change(records)
        self.journal_agrees_with_memory(records)

    def nothing_lost_and_counts_agree(self, records: list[TaskRecord]) -> None:
        stats = self.core.stats()
        assert len(self.core.task_ids()) == len(self.ids), "a task was lost or made up"
        counts = {s.value: 0 for s in TaskState}
        ready: dict[str, dict[int, int]] = {}
        for rec in records:
            counts[rec.state.value] += 1
            if rec.state is TaskState.READY:
                by_prio = ready.setdefault(rec.pool, {})
                by_prio[rec.priority] = by_prio.get(rec.priority, 0) + 1
        assert stats.by_state == counts
        assert stats.ready_by_priority == ready
        assert stats.size == sum(1 for r in records if r.state not in TERMINAL)
        assert stats.schedules == len(self.schedule_ids)
        assert self.core.ready_count() == counts["ready"]

    def leases_match_what_workers_hold(self, records: list[TaskRecord]) -> None:
        leased = {r.id: r for r in records if r.state is TaskState.LEASED}
        assert set(leased) == set(self.held)
        for task_id, lease in self.held.items():
            assert leased[task_id].lease_token == lease.token

    def finished_tasks_never_change(self, records: list[TaskRecord]) -> None:
        for task_id, rec in self.finished.items():
            assert self.core.get(task_id) == rec, f"finished task {task_id} changed"
        for task_id in self.acked:
            assert self.core.get(task_id).state is TaskState.SUCCEEDED
        for rec in records:
            if rec.state in TERMINAL:
                self.finished.setdefault(rec.id, rec)

    def journal_agrees_with_memory(self, records: list[TaskRecord]) -> None:
        self.steps += 1
        if self.steps % 6:  # a full reload is costly; check regularly, not every step
            return
        again = QueueCore.recover(self.storage, self.core.config)
        assert again.stats() == self.core.stats().model_copy(update={"paused": False})
        for rec in records:
            assert again.get(rec.id) == rec, "the journal holds another record"


class SQLiteQueueMachine(QueueMachine):
    """The same machine on a real SQLite journal, closed and reopened at each restart."""

    def open_storage(self, *, create: bool) -> Storage:
        if create:
            self.tmp = tempfile.mkdtemp(prefix="rq-machine-")
        return SQLiteStorage(os.path.join(self.tmp, "q.sqlite"), durability="process",
                             create=create)

    def close_storage(self) -> None:
        self.storage.close()

    def teardown(self) -> None:
        self.storage.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


QueueMachine.TestCase.settings = PROFILE
TestQueueMachine = QueueMachine.TestCase
SQLiteQueueMachine.TestCase.settings = SQLITE_PROFILE
TestSQLiteQueueMachine = SQLiteQueueMachine.TestCase
