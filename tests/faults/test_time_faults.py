"""RELIABILITY.md scenarios 18 and 19: the clock jumps, or disagrees between nodes.

On the pure core (no Ray): the queue actor's clock is the only one the core ever sees,
as the ``now`` of each call, so a jumping wall clock is a core that is handed a ``now``
lower (or much higher) than the last one. :class:`JumpingClock` is that clock.

What the core does, asserted below:

- **Backward jump (-1 h)**: no scheduled or retrying task becomes due early (due times
  are wall times: they fire when the wall clock reads them again); no lease expires
  and no timeout fires spuriously; a heartbeat renews to ``now + lease_ttl`` in the new
  time, so a live worker keeps its lease for ``lease_ttl`` of real time; an ack is
  accepted; nothing is handed out twice.
  The cost of a wall clock: until the clock catches up, a *dead* worker's lease and a
  hung attempt's deadline wait the length of the jump (a worker's death is still seen
  at once through Ray, scenario 1), and tasks enqueued after the jump rank as if they
  had been due that much earlier (within a priority, ahead of older ones; with aging,
  ``jump x aging_rate`` levels ahead). Nothing is lost or run twice.
- **Forward jump (+2 h)**: every scheduled task fires exactly once, a periodic
  schedule's missed fires coalesce into one; leases older than ``lease_ttl`` in the new
  time expire (a lost attempt, as a paused worker's would), the task is re-leased with
  a new token, and the old holder's late ack is fenced: one terminal record.
- **Skew between nodes (19)**: workers send no time at all; a report is (task id,
  token, result or failure) and a heartbeat is (task id, token). Lease expiry,
  heartbeats and timeouts are computed from the queue's ``now`` alone, so a worker's
  clock offset cannot reach them.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from rayqueue import (
    InMemoryStorage,
    IntervalSpec,
    NewTask,
    Outcome,
    QueueConfig,
    QueueCore,
    RetryPolicy,
    StaleLeaseError,
    TaskState,
)
from rayqueue.core.clock import Clock

T0 = 1_800_000_000.0
HOUR = 3_600.0
TTL = 30.0
RETRY = RetryPolicy(max_attempts=5, max_lost_attempts=3, base_delay=10.0, jitter=False)


class JumpingClock:
    """A :class:`~rayqueue.core.clock.Clock` whose wall time can jump either way, as an
    NTP step or an operator's ``date -s`` does."""

    def __init__(self, start: float = T0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def run(self, seconds: float) -> float:
        """Real time passes."""
        self._now += seconds
        return self._now

    def jump(self, seconds: float) -> float:
        """The wall clock is stepped, by ``seconds`` (negative: backwards)."""
        self._now += seconds
        return self._now


def _core(aging_rate: float = 0.0) -> QueueCore:
    return QueueCore(QueueConfig(lease_ttl=TTL, aging_rate=aging_rate), InMemoryStorage(),
                     rng=random.Random(18))


def _new(task_id: str, *, priority: int = 50, run_at: float | None = None,
         timeout: float | None = None) -> NewTask:
    return NewTask("t", "{}", priority, run_at=run_at, task_id=task_id, retry=RETRY,
                   timeout=timeout)


def test_clock_is_the_core_port() -> None:
    clock: Clock = JumpingClock()
    assert clock.now() == T0


def test_18_wall_clock_jumps_back_then_forward() -> None:
    clock = JumpingClock()
    core = _core()
    core.enqueue_many([_new(f"s{i}", run_at=T0 + 60) for i in range(100)], clock.now())
    core.enqueue_many([_new(f"r{i}") for i in range(4)], clock.now())
    core.enqueue(_new("hung", timeout=20.0), clock.now())
    core.add_schedule(schedule_id="every-min", task_name="t", payload="{}", priority=50,
                      spec=IntervalSpec(60.0), now=clock.now())
    live = {x.task_id: x for x in core.claim("live", 2, clock.now())}  # r0, r1
    dead = {x.task_id: x for x in core.claim("dead", 2, clock.now())}  # r2, r3
    hung = core.claim("slow", 1, clock.now())[0]
    assert set(live) | set(dead) == {"r0", "r1", "r2", "r3"} and hung.task_id == "hung"
    handed: list[str] = [*live, *dead, hung.task_id]

    # ---- backward: -1 h, then 25 min of real time pass (more than any ttl or timeout)
    clock.run(10)
    clock.jump(-HOUR)
    for _ in range(25 * 6):
        assert core.heartbeat([(i, x.token) for i, x in live.items()], clock.now()) == [
            True, True]
        report = core.tick(clock.now())
        assert (report.promoted, report.expired, report.timed_out, report.fired) == (
            0, (), (), 0)  # nothing early, no spurious expiry or timeout
        handed += [x.task_id for x in core.claim("other", 10, clock.now())]
        clock.run(10)
    assert handed == ["r0", "r1", "r2", "r3", "hung"]  # no scheduled task ran early
    # A live worker's lease holds ttl of real time from its last heartbeat, not an hour.
    last_beat = clock.now()
    core.heartbeat([(i, x.token) for i, x in live.items()], last_beat)
    assert {core.get(i).lease_expires_at for i in live} == {last_beat + TTL}
    # Acks in the past-looking time are accepted, once.
    done = core.ack("r0", live["r0"].token, "0", clock.now())
    assert done.state is TaskState.SUCCEEDED
    with pytest.raises(StaleLeaseError):
        core.ack("r0", live["r0"].token, "0", clock.now())

    # ---- forward: +2 h (wall time now ~T0 + 1 h 25 min)
    clock.jump(2 * HOUR)
    report = core.tick(clock.now())
    assert report.promoted == 101 and report.fired == 1  # 100 + one coalesced fire
    assert set(report.expired) == {"r1", "r2", "r3"}  # older than ttl in the new time
    assert [t for t, _ in report.timed_out] == ["hung"]
    assert core.tick(clock.now()).promoted == 0  # no burst of duplicates
    clock.run(1_000)  # the retries of the expired and timed-out ones come due
    core.tick(clock.now())
    again = []
    while batch := core.claim("other", 1_000, clock.now()):  # suspects come one a claim
        again += batch
    ids = [x.task_id for x in again]
    fires = [i for i in ids if i.startswith("every-min@")]
    assert sorted(set(ids) - set(fires)) == sorted(
        [*(f"s{i}" for i in range(100)), "r1", "r2", "r3", "hung"])
    assert len(ids) == len(set(ids))  # each once
    assert len(fires) == 2  # the jump's one coalesced fire, and one for the 1,000 s run
    # The old holder of r1 acks late: fenced; the new lease's ack is the one kept.
    with pytest.raises(StaleLeaseError):
        core.ack("r1", live["r1"].token, '"old"', clock.now())
    new_r1 = next(x for x in again if x.task_id == "r1")
    assert core.ack("r1", new_r1.token, '"new"', clock.now()).result == '"new"'
    assert core.get("r1").attempts == 2 and core.get("r1").lost_attempts == 1


def test_18_backward_jump_keeps_priority_and_bounds_aging() -> None:
    for rate in (0.0, 0.01):
        clock = JumpingClock()
        core = _core(aging_rate=rate)
        core.enqueue_many([_new("old-low", priority=10), _new("old-high", priority=90)],
                          clock.now())
        clock.jump(-HOUR)
        core.enqueue_many([_new("new-low", priority=10), _new("new-high", priority=90)],
                          clock.now())
        order = [x.task_id for x in core.claim("w", 10, clock.now())]
        assert sorted(order) == ["new-high", "new-low", "old-high", "old-low"]  # each once
        if rate == 0.0:
            # Strict priority holds across the jump; within a level, the tasks enqueued
            # after it rank as due earlier (the documented cost of a wall clock).
            assert order == ["new-high", "old-high", "new-low", "old-low"]
        else:
            # Aging: the jump is worth rate * jump = 36 levels, no more: a high task of
            # either side still beats a low one of the other (80 levels apart).
            assert order.index("old-high") < order.index("new-low")
            assert order.index("new-high") < order.index("old-low")


def test_19_workers_send_no_time() -> None:
    # The messages a worker sends carry no clock reading that the core could trust.
    assert [f.name for f in dataclasses.fields(Outcome)] == ["task_id", "token", "result",
                                                              "failure"]
    # So a worker whose clock is 5 min off changes nothing: expiry is the queue's now.
    clock = JumpingClock()
    core = _core()
    core.enqueue(_new("a"), clock.now())
    lease = core.claim("skewed", 1, clock.now())[0]
    assert lease.expires_at == T0 + TTL  # the queue's time, whatever the worker's
    for _ in range(10):
        clock.run(TTL / 2)
        assert core.heartbeat([("a", lease.token)], clock.now()) == [True]
        assert core.tick(clock.now()).expired == ()
    assert core.ack("a", lease.token, "1", clock.now()).attempts == 1
