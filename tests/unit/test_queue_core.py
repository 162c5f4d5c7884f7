"""QueueCore rules on a fake clock: order, leases, retries, timeouts, bad input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from rayqueue import (
    DuplicateTaskError,
    ErrorInfo,
    Failure,
    FakeClock,
    InMemoryStorage,
    IntervalSpec,
    InvalidPriorityError,
    InvalidScheduleError,
    InvalidStateError,
    NewTask,
    Outcome,
    PayloadTooLargeError,
    Priority,
    QueueClosedError,
    QueueCore,
    QueueFullError,
    RetryPolicy,
    StaleLeaseError,
    StorageError,
    TaskNotFoundError,
    TaskRecord,
    TaskState,
)
from tests.unit.conftest import NO_JITTER, new

BOOM = Failure(ErrorInfo("RuntimeError", "boom"))


def claim_ids(core: QueueCore, now: float, n: int = 100, pool: str = "default") -> list[str]:
    return [lease.task_id for lease in core.claim("w", n, now, pool)]


# ------------------------------------------------------------------- ordering
def test_higher_priority_first_then_enqueue_order(core: QueueCore, clock: FakeClock) -> None:
    for i, prio in enumerate([Priority.LOW, Priority.HIGH, Priority.NORMAL, Priority.HIGH,
                              Priority.CRITICAL, Priority.LOW]):
        core.enqueue(new(priority=prio, task_id=f"t{i}"), clock.now())
    assert claim_ids(core, clock.now()) == ["t4", "t1", "t3", "t2", "t0", "t5"]


def test_ties_broken_by_due_time_before_enqueue_order(core: QueueCore, clock: FakeClock) -> None:
    now = clock.now()
    core.enqueue(new(task_id="late", run_at=now + 20), now)
    core.enqueue(new(task_id="early", run_at=now + 10), now)
    core.enqueue(new(task_id="plain"), now + 15)
    core.tick(now + 30)
    assert claim_ids(core, now + 30) == ["early", "plain", "late"]


def test_strict_order_lets_low_priority_wait_forever(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(priority=Priority.LOW, task_id="old-low"), clock.now())
    clock.advance(10_000)
    core.enqueue(new(priority=Priority.HIGH, task_id="new-high"), clock.now())
    assert claim_ids(core, clock.now(), 1) == ["new-high"]


def test_aging_lets_a_waiting_low_task_overtake(make_core: Callable[..., QueueCore],
                                               clock: FakeClock) -> None:
    core = make_core(aging_rate=1.0)  # one priority level per second
    core.enqueue(new(priority=Priority.LOW, task_id="old-low"), clock.now())
    clock.advance(50)  # LOW(25) + 50 ties HIGH(75) enqueued now; earlier due wins
    core.enqueue(new(priority=Priority.HIGH, task_id="new-high"), clock.now())
    assert core.peek() is not None and core.peek().id == "old-low"  # type: ignore[union-attr]
    clock.advance(1)
    core.enqueue(new(priority=Priority.HIGH, task_id="newer-high"), clock.now())
    assert claim_ids(core, clock.now()) == ["old-low", "new-high", "newer-high"]


def test_aging_does_not_reorder_before_the_gap_is_closed(make_core: Callable[..., QueueCore],
                                                         clock: FakeClock) -> None:
    core = make_core(aging_rate=1.0)
    core.enqueue(new(priority=Priority.LOW, task_id="low"), clock.now())
    clock.advance(10)  # 25 + 10 < 75
    core.enqueue(new(priority=Priority.HIGH, task_id="high"), clock.now())
    assert claim_ids(core, clock.now(), 1) == ["high"]


def test_pools_are_separate(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="cpu"), clock.now())
    core.enqueue(new(task_id="gpu", pool="gpu", priority=100), clock.now())
    assert claim_ids(core, clock.now()) == ["cpu"]
    assert claim_ids(core, clock.now(), pool="gpu") == ["gpu"]


def test_peek_does_not_claim(core: QueueCore, clock: FakeClock) -> None:
    assert core.peek() is None
    core.enqueue(new(task_id="a"), clock.now())
    peeked = core.peek()
    assert peeked is not None and peeked.id == "a"
    assert core.get("a").state is TaskState.READY
    assert claim_ids(core, clock.now()) == ["a"]
    assert core.peek() is None


# --------------------------------------------------------------------- leases
def test_claim_leases_with_token_and_expiry(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id=f"t{i}") for i in range(5)], clock.now())
    leases = core.claim("w1", 3, clock.now())
    assert [lease.attempt for lease in leases] == [1, 1, 1]
    assert all(lease.expires_at == clock.now() + core.config.lease_ttl for lease in leases)
    assert core.get("t0").state is TaskState.LEASED and core.get("t0").worker == "w1"
    assert len(core.claim("w2", 10, clock.now())) == 2
    assert core.claim("w3", 10, clock.now()) == []


def test_ack_records_result_and_stale_ack_changes_nothing(core: QueueCore,
                                                           clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    done = core.ack("a", lease.token, '{"ok":true}', clock.now())
    assert done.state is TaskState.SUCCEEDED and done.result == '{"ok":true}'
    with pytest.raises(StaleLeaseError):
        core.ack("a", lease.token, '{"ok":false}', clock.now())
    with pytest.raises(StaleLeaseError):
        core.fail("a", lease.token, BOOM, clock.now())
    assert core.get("a").result == '{"ok":true}'


def test_zombie_ack_after_expiry_and_re_lease_is_fenced(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (old,) = core.claim("zombie", 1, clock.now())
    clock.advance(core.config.lease_ttl + 1)
    report = core.tick(clock.now())
    assert report.expired == ("a",)
    (fresh,) = core.claim("b", 1, clock.now())  # a lost attempt is ready again at once
    assert fresh.token > old.token and fresh.attempt == 2
    assert core.ack_many([("a", old.token, '"zombie"')], clock.now()) == [False]
    core.ack("a", fresh.token, '"b"', clock.now())
    rec = core.get("a")
    assert rec.result == '"b"' and rec.attempts == 2 and rec.lost_attempts == 1


def test_heartbeat_keeps_lease_alive(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    for _ in range(5):
        clock.advance(core.config.lease_ttl * 0.8)
        assert core.heartbeat([("a", lease.token)], clock.now()) == [True]
        assert core.tick(clock.now()).expired == ()
    assert core.get("a").state is TaskState.LEASED
    assert core.heartbeat([("a", lease.token + 1)], clock.now()) == [False]


def test_renew_all_leases_after_a_restart(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="a"), new(task_id="b")], clock.now())
    core.claim("w", 2, clock.now())
    clock.advance(core.config.lease_ttl - 1)
    assert core.renew_all_leases(clock.now()) == 2
    clock.advance(core.config.lease_ttl - 1)
    assert core.tick(clock.now()).expired == ()


def test_release_gives_back_without_counting(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    rec = core.release("a", lease.token, clock.now())
    assert rec.state is TaskState.READY and rec.attempts == 0
    (again,) = core.claim("w", 1, clock.now())
    assert again.attempt == 1
    with pytest.raises(StaleLeaseError):
        core.release("a", lease.token, clock.now())


def test_worker_lost_returns_its_leases(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="a"), new(task_id="b"), new(task_id="c")], clock.now())
    core.claim("w1", 2, clock.now())
    core.claim("w2", 1, clock.now())
    assert core.worker_lost("w1", clock.now()) == ["a", "b"]
    lost = core.get("a")
    # Ready again at once, its due time (its place in line) kept; a suspect since now.
    assert lost.state is TaskState.READY and lost.lost_attempts == 1
    assert lost.due_at == core.get("c").due_at and lost.updated_at == clock.now()
    assert core.get("c").state is TaskState.LEASED
    assert core.worker_lost("nobody", clock.now()) == []


def test_a_lost_attempt_keeps_its_place_in_line(core: QueueCore, clock: FakeClock) -> None:
    """A task whose worker died goes back where it stood among its priority, not behind
    everything that fell due while it ran (a 10-minute chaos run saw such tasks wait
    190 s behind a backlog of their level)."""
    from rayqueue.core.queue import SUSPECT_WAIT_S

    core.enqueue(new(task_id="first"), clock.now())
    core.claim("w1", 1, clock.now())
    clock.advance(5)
    core.enqueue_many([new(task_id=f"later{i}") for i in range(3)], clock.now())
    clock.advance(5)
    core.worker_lost("w1", clock.now())
    # An idle worker gets it first, and alone (a suspect).
    (again,) = core.claim("w2", 4, clock.now(), idle=True)
    assert (again.task_id, again.suspect, again.attempt) == ("first", True, 2)
    # Lost again: a busy worker gets the next task, not the suspect, until the suspect
    # has waited SUSPECT_WAIT_S since its loss (not since its due time, long past);
    # then that worker is emptied for it, and runs it alone.
    core.worker_lost("w2", clock.now())
    (other,) = core.claim("w3", 1, clock.now(), idle=False)
    assert other.task_id == "later0"
    clock.advance(SUSPECT_WAIT_S)
    assert core.claim("w3", 1, clock.now(), idle=False) == []
    (alone,) = core.claim("w3", 4, clock.now(), idle=True)
    assert (alone.task_id, alone.suspect, alone.attempt) == ("first", True, 3)


def test_prefetch_goes_on_past_a_suspect_of_its_level_never_past_a_higher_one(
        core: QueueCore, clock: FakeClock) -> None:
    """A suspect back in its old place (the head of its level) waits for an idle worker;
    a busy worker's prefetch takes the tasks behind it, not nothing."""
    from rayqueue.core.queue import SUSPECT_WAIT_S

    core.enqueue(new(task_id="s"), clock.now())
    core.claim("w1", 1, clock.now())
    core.enqueue_many([new(task_id=f"n{i}") for i in range(10)], clock.now())
    core.worker_lost("w1", clock.now())
    got = core.claim("w2", 0, clock.now(), idle=False, prefetch=4)
    assert [x.task_id for x in got] == ["n0", "n1", "n2", "n3"]
    assert core.get("s").state is TaskState.READY  # still waiting, first in line
    # Once it has waited SUSPECT_WAIT_S, the next busy worker (slots full, asking for
    # prefetch alone, as a 1-slot worker always does) is emptied for it instead.
    clock.advance(SUSPECT_WAIT_S)
    assert core.claim("w2", 0, clock.now(), idle=False, prefetch=4) == []
    assert core.claim("w4", 0, clock.now(), idle=False, prefetch=2) == []  # none past it
    (alone,) = core.claim("w2", 1, clock.now(), idle=True)
    assert alone.task_id == "s" and alone.suspect
    # A suspect of a higher priority than the rest: no prefetch of lower work past it.
    core.enqueue(new(task_id="hs", priority=90), clock.now())
    core.claim("w3", 1, clock.now())
    core.worker_lost("w3", clock.now())
    assert core.claim("w2", 0, clock.now(), idle=False, prefetch=4) == []


def test_a_suspects_wait_counts_from_its_loss_through_a_give_back(
        core: QueueCore, clock: FakeClock) -> None:
    """A suspect given back unrun (released, or its claim reply lost) keeps the time it
    has waited since its loss: the SUSPECT_WAIT_S bound is not restarted by it."""
    from rayqueue.core.queue import SUSPECT_WAIT_S

    core.enqueue(new(task_id="s"), clock.now())
    core.claim("w1", 1, clock.now())
    core.enqueue_many([new(task_id=f"n{i}") for i in range(10)], clock.now())
    core.worker_lost("w1", clock.now())
    clock.advance(SUSPECT_WAIT_S * 0.9)
    (lease,) = core.claim("w2", 4, clock.now(), idle=True)  # taken alone...
    assert lease.task_id == "s" and lease.suspect
    core.release("s", lease.token, clock.now())  # ...and given back unrun
    clock.advance(SUSPECT_WAIT_S * 0.5)
    assert core.claim("w3", 1, clock.now(), idle=False) == []  # w3 is emptied for it
    (again,) = core.claim("w3", 4, clock.now(), idle=True)
    assert again.task_id == "s"


def test_poison_task_dies_after_max_lost_attempts(core: QueueCore, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=5, max_lost_attempts=3, jitter=False)
    core.enqueue(new(task_id="poison", retry=policy), clock.now())
    for n in range(1, 4):
        clock.set(core.get("poison").due_at)
        core.tick(clock.now())
        (lease,) = core.claim(f"w{n}", 1, clock.now())
        assert lease.attempt == n
        core.worker_lost(f"w{n}", clock.now())
    rec = core.get("poison")
    assert rec.state is TaskState.DEAD and rec.reason == "worker_lost" and rec.lost_attempts == 3
    assert core.claim("w4", 1, clock.now()) == []
    assert [r.id for r in core.dead_letters()] == ["poison"]


# -------------------------------------------------------------------- retries
def test_exponential_retry_timings_without_jitter(core: QueueCore, clock: FakeClock) -> None:
    t0 = clock.now()
    core.enqueue(new(task_id="a"), t0)
    started = []
    for _ in range(4):
        core.tick(clock.now())
        leases = core.claim("w", 1, clock.now())
        while not leases:  # advance to the next due time the core announces
            wake = core.next_wakeup()
            assert wake is not None
            clock.set(wake)
            core.tick(clock.now())
            leases = core.claim("w", 1, clock.now())
        started.append(clock.now() - t0)
        core.fail("a", leases[0].token, BOOM, clock.now())
    assert started == [0, 10, 30, 70]
    rec = core.get("a")
    assert rec.state is TaskState.DEAD and rec.reason == "max_attempts"
    assert rec.error == ErrorInfo("RuntimeError", "boom")


def test_jitter_stays_within_the_backoff(make_core: Callable[..., QueueCore],
                                         clock: FakeClock) -> None:
    core = make_core()
    policy = RetryPolicy(max_attempts=50, base_delay=10, factor=2, max_delay=60, jitter=True)
    core.enqueue(new(task_id="a", retry=policy), clock.now())
    for attempt in range(1, 20):
        (lease,) = core.claim("w", 1, clock.now())
        rec = core.fail("a", lease.token, BOOM, clock.now())
        delay = rec.due_at - clock.now()
        assert 0 <= delay <= min(60, 10 * 2 ** (attempt - 1))
        clock.set(rec.due_at)
        core.tick(clock.now())


def test_retry_signal_delay_and_non_retryable(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="a"), new(task_id="b")], clock.now())
    la, lb = core.claim("w", 2, clock.now())
    rec = core.fail("a", la.token, Failure(ErrorInfo("Retry", ""), retry_delay=3.5), clock.now())
    assert rec.state is TaskState.FAILED and rec.due_at == clock.now() + 3.5
    rec = core.fail("b", lb.token, Failure(ErrorInfo("CardDeclined", "no"), retryable=False),
                    clock.now())
    assert rec.state is TaskState.DEAD and rec.reason == "non_retryable"


def test_retry_dead_puts_task_back(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    core.fail("a", lease.token, Failure(BOOM.error, retryable=False), clock.now())
    rec = core.retry_dead("a", clock.now())
    assert rec.state is TaskState.READY and rec.attempts == 0
    with pytest.raises(InvalidStateError):
        core.retry_dead("a", clock.now())


# ------------------------------------------------------------------- timeouts
def test_timeout_reports_worker_then_retries_then_dies(core: QueueCore, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=1, jitter=False)
    core.enqueue(new(task_id="hung", retry=policy, timeout=3.0), clock.now())
    core.claim("w1", 1, clock.now())
    clock.advance(3)
    report = core.tick(clock.now())
    assert report.timed_out == (("hung", "w1"),)
    rec = core.get("hung")
    assert rec.state is TaskState.FAILED and rec.error is not None
    assert rec.error.type == "TaskTimeoutError"
    clock.advance(1)
    core.tick(clock.now())
    core.claim("w2", 1, clock.now())
    clock.advance(3)
    report = core.tick(clock.now())
    assert report.timed_out == (("hung", "w2"),) and report.dead == ("hung",)
    assert core.get("hung").reason == "timeout"


# ------------------------------------------------------------------- schedule
def test_run_at_waits_until_due(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="later", run_at=clock.now() + 60), clock.now())
    assert core.get("later").state is TaskState.SCHEDULED
    assert core.claim("w", 1, clock.now()) == []
    assert core.next_wakeup() == clock.now() + 60
    clock.advance(59.9)
    assert core.tick(clock.now()).promoted == 0
    clock.advance(0.1)
    assert core.tick(clock.now()).promoted == 1
    assert claim_ids(core, clock.now()) == ["later"]


def test_interval_schedule_fires_once_per_period(core: QueueCore, clock: FakeClock) -> None:
    core.add_schedule(schedule_id="every-10", task_name="t", payload="{}", priority=50,
                      spec=IntervalSpec(10.0), now=clock.now())
    fired = []
    for _ in range(30):
        clock.advance(1)
        fired.extend(claim_ids(core, clock.now()) if core.tick(clock.now()).fired else [])
    assert len(fired) == 3 and len(set(fired)) == 3
    assert all(i.startswith("every-10@") for i in fired)
    core.cancel("every-10", clock.now())
    clock.advance(100)
    assert core.tick(clock.now()).fired == 0


def test_schedule_missed_while_down_runs_once(core: QueueCore, clock: FakeClock) -> None:
    core.add_schedule(schedule_id="s", task_name="t", payload="{}", priority=50,
                      spec=IntervalSpec(60.0), now=clock.now())
    clock.advance(3_600 * 5)
    assert core.tick(clock.now()).fired == 1
    assert core.tick(clock.now()).fired == 0


# ---------------------------------------------------------------- cancel, ttl
def test_cancel_queued_scheduled_and_waiting(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="r"), new(task_id="s", run_at=clock.now() + 5)], clock.now())
    assert core.cancel("r", clock.now()).state is TaskState.CANCELLED  # type: ignore[union-attr]
    assert core.cancel("s", clock.now()).state is TaskState.CANCELLED  # type: ignore[union-attr]
    assert core.cancel("r", clock.now()).state is TaskState.CANCELLED  # type: ignore[union-attr]
    clock.advance(10)
    core.tick(clock.now())
    assert core.claim("w", 5, clock.now()) == []
    assert core.size() == 0


def test_cancel_finished_or_unknown_is_an_error(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    core.ack("a", lease.token, "1", clock.now())
    with pytest.raises(InvalidStateError, match="succeeded"):
        core.cancel("a", clock.now())
    with pytest.raises(TaskNotFoundError):
        core.cancel("nope", clock.now())


def test_cancel_running_task_ends_it_and_fences_its_report(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a", retry=NO_JITTER, timeout=5.0), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    rec = core.cancel("a", clock.now())
    assert isinstance(rec, TaskRecord)
    assert rec.state is TaskState.CANCELLED and rec.reason == "cancelled_running"
    assert core.leased_by_worker() == {} and core.size() == 0
    # the worker learns of it (by its lease), and its late outcome changes nothing
    assert core.cancelled_leases([("a", lease.token), ("a", lease.token + 1)]) == ["a"]
    assert core.heartbeat([("a", lease.token)], clock.now()) == [False]
    with pytest.raises(StaleLeaseError):
        core.fail("a", lease.token, BOOM, clock.now())
    with pytest.raises(StaleLeaseError):
        core.ack("a", lease.token, "1", clock.now())
    # never retried: not by its timeout, its lease expiring, nor its worker dying
    assert core.worker_lost("w", clock.now()) == []
    clock.advance(core.config.lease_ttl + 10)
    report = core.tick(clock.now())
    assert report.expired == () and report.timed_out == ()
    assert core.claim("w2", 5, clock.now()) == []
    assert core.get("a").state is TaskState.CANCELLED and core.get("a").attempts == 1
    assert core.cancel("a", clock.now()).state is TaskState.CANCELLED  # type: ignore[union-attr]


def test_restart_keeps_a_running_task_cancelled(
        core: QueueCore, storage: InMemoryStorage, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    core.cancel("a", clock.now())
    again = QueueCore.recover(storage, core.config)
    assert again.get("a").state is TaskState.CANCELLED
    assert again.cancelled_leases([("a", lease.token)]) == ["a"]
    assert again.renew_all_leases(clock.now()) == 0
    with pytest.raises(StaleLeaseError):
        again.ack("a", lease.token, "1", clock.now())
    clock.advance(again.config.lease_ttl + 1)
    assert again.tick(clock.now()).expired == ()
    assert again.claim("w", 1, clock.now()) == []


def test_cancelled_leases_names_only_leases_cancelled_while_running(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="q"), new(task_id="r")], clock.now())
    leases = {x.task_id: x for x in core.claim("w", 2, clock.now())}
    core.ack("r", leases["r"].token, "1", clock.now())
    core.enqueue(new(task_id="s"), clock.now())
    core.cancel("s", clock.now())  # cancelled before it ran
    refs = [("q", leases["q"].token), ("r", leases["r"].token), ("s", 0), ("s", 1)]
    assert core.cancelled_leases(refs) == []


def test_progress_is_kept_per_lease_in_memory(
        core: QueueCore, storage: InMemoryStorage, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a", retry=NO_JITTER), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    assert core.progress("a") is None
    assert core.set_progress([("a", lease.token, 0.5, "half"), ("a", 99, 0.9, None),
                              ("nope", 1, 0.1, None)]) == 1
    assert core.progress("a") == (0.5, "half")
    assert QueueCore.recover(storage, core.config).progress("a") is None  # not journaled
    core.fail("a", lease.token, BOOM, clock.now())
    assert core.set_progress([("a", lease.token, 0.7, None)]) == 0  # a stale lease's
    clock.advance(100)
    core.tick(clock.now())
    (again,) = core.claim("w", 1, clock.now())
    assert core.progress("a") is None  # a new attempt starts without the old progress
    core.set_progress([("a", again.token, 1.0, None)])
    core.ack("a", again.token, "1", clock.now())
    assert core.progress("a") == (1.0, None)  # the last one stays with the result


def test_results_expire_after_ttl(make_core: Callable[..., QueueCore], clock: FakeClock) -> None:
    core = make_core(result_ttl=100.0)
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    core.ack("a", lease.token, "1", clock.now())
    clock.advance(99)
    core.tick(clock.now())
    assert core.get("a").result == "1"
    clock.advance(1)
    assert core.tick(clock.now()).purged == 1
    with pytest.raises(TaskNotFoundError):
        core.get("a")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [True, False, 1.0, math.nan, -1, 101, "50", None, 10**20])
def test_bad_priority_rejected_and_nothing_changes(core: QueueCore, clock: FakeClock,
                                                   bad: Any) -> None:
    core.enqueue(new(task_id="ok"), clock.now())
    with pytest.raises(InvalidPriorityError):
        core.enqueue_many([new(task_id="x"), new(task_id="y", priority=bad)], clock.now())
    assert core.size() == 1 and core.find("x") is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "soon"])
def test_bad_run_at_rejected(core: QueueCore, clock: FakeClock, bad: Any) -> None:
    with pytest.raises(InvalidScheduleError):
        core.enqueue(new(run_at=bad), clock.now())
    assert core.size() == 0


@pytest.mark.parametrize("bad", ["", "x" * 257, 7])
def test_bad_task_id_rejected(core: QueueCore, clock: FakeClock, bad: Any) -> None:
    with pytest.raises(ValueError, match="task id"):
        core.enqueue(new(task_id=bad), clock.now())


def test_queue_full_is_typed_and_changes_nothing(make_core: Callable[..., QueueCore],
                                                 clock: FakeClock) -> None:
    core = make_core(max_size=3)
    core.enqueue_many([new(task_id="a"), new(task_id="b")], clock.now())
    with pytest.raises(QueueFullError) as info:
        core.enqueue_many([new(task_id="c"), new(task_id="d")], clock.now())
    assert info.value.max_size == 3 and core.size() == 2 and core.find("c") is None
    (lease,) = core.claim("w", 1, clock.now())
    core.ack(lease.task_id, lease.token, "null", clock.now())
    core.enqueue_many([new(task_id="c"), new(task_id="d")], clock.now())  # finished ones free room


def test_payload_too_large(make_core: Callable[..., QueueCore], clock: FakeClock) -> None:
    core = make_core(max_payload_bytes=100)
    with pytest.raises(PayloadTooLargeError) as info:
        core.enqueue(new(payload='"' + "é" * 60 + '"'), clock.now())
    assert info.value.size > 100 and core.size() == 0


def test_idempotent_enqueue_and_duplicate_id(core: QueueCore, clock: FakeClock,
                                             storage: InMemoryStorage) -> None:
    first = core.enqueue(new(task_id="order-1", payload='{"a":1}'), clock.now())
    writes = storage.writes
    again = core.enqueue(new(task_id="order-1", payload='{"a":1}'), clock.now() + 5)
    assert again == first and storage.writes == writes
    with pytest.raises(DuplicateTaskError, match="order-1"):
        core.enqueue(new(task_id="order-1", payload='{"a":2}'), clock.now())
    with pytest.raises(DuplicateTaskError):
        core.enqueue_many([new(task_id="n", payload="1"), new(task_id="n", payload="2")],
                          clock.now())
    assert core.find("n") is None


def test_closed_queue_refuses_enqueue(core: QueueCore, clock: FakeClock) -> None:
    core.close()
    with pytest.raises(QueueClosedError):
        core.enqueue(new(), clock.now())


def test_bad_claim_size(core: QueueCore, clock: FakeClock) -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            core.claim("w", bad, clock.now())  # type: ignore[arg-type]


def test_a_busy_worker_asks_for_prefetch_alone() -> None:
    """max_n=0: no free slot, so only prefetch, under the prefetch rules."""
    core = QueueCore()
    assert core.claim("w", 0, 0.0, prefetch=5) == []
    core.enqueue_many([NewTask("t", "{}", 50) for _ in range(10)], 0.0)
    assert core.claim("w", 0, 0.0) == []
    assert len(core.claim("w", 0, 0.0, prefetch=3)) == 3
    core.enqueue_many([NewTask("t", "{}", 10) for _ in range(10)], 0.0)
    assert core.claim("w", 0, 0.0, prefetch=3) == []  # lows are ready below the 50s
    assert [lease.priority for lease in core.claim("w", 1, 0.0)] == [50]


# ------------------------------------------------------------ batches, storage
def test_batches_are_one_write_each(core: QueueCore, clock: FakeClock,
                                    storage: InMemoryStorage) -> None:
    core.enqueue_many([new(task_id=f"t{i}") for i in range(1_000)], clock.now())
    assert storage.writes == 1
    leases = core.claim("w", 500, clock.now())
    assert storage.writes == 2
    assert all(core.ack_many([(x.task_id, x.token, "null") for x in leases], clock.now()))
    assert storage.writes == 3
    assert core.stats().by_state["succeeded"] == 500


class FlakyStorage(InMemoryStorage):
    """Fails the next write when armed, like a full disk."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def write(self, **kwargs: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        super().write(**kwargs)


def test_storage_failure_leaves_queue_unchanged(clock: FakeClock) -> None:
    storage = FlakyStorage()
    core = QueueCore(storage=storage)
    core.enqueue_many([new(task_id="a", priority=80), new(task_id="b")], clock.now())
    before = core.stats()

    def attempt(op: Callable[[], object]) -> None:
        storage.fail_next = True
        with pytest.raises(StorageError, match="disk full"):
            op()
        assert core.stats() == before

    attempt(lambda: core.enqueue(new(task_id="c"), clock.now()))
    attempt(lambda: core.claim("w", 2, clock.now()))
    attempt(lambda: core.cancel("a", clock.now()))
    assert claim_ids(core, clock.now(), 1) == ["a"]  # order survived the failed claim
    lease_b = core.claim("w", 1, clock.now())[0]
    before = core.stats()
    attempt(lambda: core.ack("b", lease_b.token, "1", clock.now()))
    clock.advance(core.config.lease_ttl + 1)
    attempt(lambda: core.tick(clock.now()))
    assert core.tick(clock.now()).expired == ("a", "b")


def test_non_retryable_failure_keeps_its_reason(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    failure = Failure(ErrorInfo("InvalidPayloadError", "x"), retryable=False,
                      reason="schema_mismatch")
    assert core.fail("a", lease.token, failure, clock.now()).reason == "schema_mismatch"


def test_recover_rebuilds_state_and_keeps_leases(clock: FakeClock,
                                                 storage: InMemoryStorage) -> None:
    core = QueueCore(storage=storage)
    core.enqueue_many([new(task_id=f"t{i}", priority=10 * i) for i in range(5)], clock.now())
    core.enqueue(new(task_id="later", run_at=clock.now() + 30), clock.now())
    leases = core.claim("w", 2, clock.now())
    core.add_schedule(schedule_id="s", task_name="t", payload="{}", priority=50,
                      spec=IntervalSpec(10.0), now=clock.now())
    again = QueueCore.recover(storage)
    assert again.stats() == core.stats()
    assert again.ack(leases[0].task_id, leases[0].token, "1", clock.now()).state is \
        TaskState.SUCCEEDED
    assert claim_ids(again, clock.now()) == ["t2", "t1", "t0"]
    assert again.enqueue(new(task_id="new"), clock.now()).seq > 6
    clock.advance(30)
    report = again.tick(clock.now())
    assert report.fired == 3  # runs at +10, +20, +30, all within the misfire grace
    assert again.get("later").state is TaskState.READY


def test_delay_is_measured_on_the_queue_clock(core: QueueCore, clock: FakeClock) -> None:
    rec = core.enqueue(_delayed(2.5), clock.now())
    assert rec.state is TaskState.SCHEDULED and rec.due_at == clock.now() + 2.5
    for bad in (-1.0, math.nan, math.inf, True):
        with pytest.raises(InvalidScheduleError):
            core.enqueue(_delayed(bad), clock.now())


def _delayed(delay: Any) -> Any:
    from dataclasses import replace

    return replace(new(), delay=delay)


def test_a_suspect_runs_alone_on_an_idle_worker(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="s", priority=90), new(task_id="a"), new(task_id="b")],
                      clock.now())
    core.claim("w1", 1, clock.now())
    core.worker_lost("w1", clock.now())  # "s" is now a suspect
    clock.set(core.get("s").due_at)
    core.tick(clock.now())
    assert claim_ids(core, clock.now(), 3) == ["s"]  # alone, though 3 were asked for
    core.release("s", core.get("s").lease_token, clock.now())
    busy = [x.task_id for x in core.claim("w2", 3, clock.now(), idle=False)]
    assert busy == ["a", "b"]  # a busy worker does not get the suspect
    clock.advance(core.config.lease_ttl + 1)  # but it cannot starve
    assert [x.task_id for x in core.claim("w3", 3, clock.now(), idle=False)] == ["s"]


def test_a_waiting_suspect_gets_a_worker_emptied_for_it_within_a_bound(
        core: QueueCore, clock: FakeClock) -> None:
    """Issue 13, item 6: with every worker busy and a backlog of lower work, a suspect
    no longer waits for lease_ttl (or the backlog): after SUSPECT_WAIT_S the next busy
    claimer is emptied for it, and gets it once idle; the others go on with the backlog."""
    from rayqueue.core.queue import SUSPECT_WAIT_S

    core.enqueue_many([new(task_id="s", priority=90)], clock.now())
    core.claim("w1", 1, clock.now())
    core.worker_lost("w1", clock.now())  # "s" is now a suspect
    core.enqueue_many([new(task_id=f"low{i}", priority=10) for i in range(20)], clock.now())
    clock.set(core.get("s").due_at)
    core.tick(clock.now())
    assert [x.task_id for x in core.claim("w2", 2, clock.now(), idle=False)] == [
        "low0", "low1"]  # within the wait, busy workers go on with the backlog
    clock.advance(SUSPECT_WAIT_S)
    assert core.claim("w2", 2, clock.now(), idle=False) == []  # w2 is emptied for it
    assert core.claim("w2", 0, clock.now(), idle=False, prefetch=5) == []  # still emptying
    assert [x.task_id for x in core.claim("w3", 1, clock.now(), idle=False)] == ["low2"]
    got = core.claim("w2", 2, clock.now(), idle=True)  # w2 ran down to nothing
    assert [x.task_id for x in got] == ["s"] and got[0].suspect
    assert clock.now() - core.get("s").due_at < core.config.lease_ttl
    core.release("low2", core.get("low2").lease_token, clock.now())
    assert [x.task_id for x in core.claim("w3", 1, clock.now(), idle=False)] == ["low2"]


def test_the_worker_emptied_for_a_suspect_dying_passes_the_turn_on(
        core: QueueCore, clock: FakeClock) -> None:
    from rayqueue.core.queue import SUSPECT_WAIT_S

    core.enqueue_many([new(task_id="s", priority=90)], clock.now())
    core.claim("w1", 1, clock.now())
    core.worker_lost("w1", clock.now())
    core.enqueue_many([new(task_id=f"low{i}", priority=10) for i in range(5)], clock.now())
    clock.set(core.get("s").due_at + SUSPECT_WAIT_S)
    core.tick(clock.now())
    assert core.claim("w2", 1, clock.now(), idle=False) == []  # w2 is emptied for "s"
    assert [x.task_id for x in core.claim("w3", 1, clock.now(), idle=False)] == ["low0"]
    core.worker_lost("w2", clock.now())
    assert core.claim("w3", 1, clock.now(), idle=False) == []  # now w3 empties for it
    assert [x.task_id for x in core.claim("w3", 1, clock.now(), idle=True)] == ["s"]


def test_reconcile_returns_leases_whose_claim_reply_was_lost(core: QueueCore,
                                                              clock: FakeClock) -> None:
    core.enqueue_many([new(task_id="a"), new(task_id="b"), new(task_id="c")], clock.now())
    core.claim("w", 2, clock.now())  # the worker got only "a": the reply for "b" was lost
    assert core.reconcile("w", ["a"], clock.now()) == ["b"]
    b = core.get("b")
    assert b.state is TaskState.READY and b.attempts == 0 and b.lost_attempts == 0
    assert core.get("a").state is TaskState.LEASED


def test_a_paused_core_hands_out_nothing_until_resumed() -> None:
    core = QueueCore()
    core.enqueue_many([NewTask("t", "{}", 50), NewTask("t", "{}", 90)], 0.0)
    core.pause()
    assert core.claim("w", 5, 0.0) == []
    assert core.stats().paused and core.ready_count() == 2
    core.enqueue(NewTask("t", "{}", 10), 0.0)  # enqueues go on
    core.resume()
    assert [lease.priority for lease in core.claim("w", 5, 0.0)] == [90, 50, 10]


def test_prefetch_takes_only_more_of_the_first_tasks_priority() -> None:
    core = QueueCore()
    core.enqueue_many([NewTask("t", "{}", 90) for _ in range(9)], 0.0)
    # 1 + half of the 8 left of priority 90; 1 + half of the 3 left; then one at a time
    sizes = [len(core.claim("w", 1, 0.0, prefetch=10)) for _ in range(4)]
    assert sizes == [5, 2, 1, 1]
    core.enqueue_many([NewTask("t", "{}", 10) for _ in range(20)], 0.0)
    # free slots are filled from the next level; prefetch never crosses levels
    assert [lease.priority for lease in core.claim("w", 2, 0.0, prefetch=4)] == [10] * 6


def test_no_prefetch_while_lower_priority_work_is_ready() -> None:
    """A prefetched high that has not started must never wait while another worker
    starts a low: to a claimer that does not confirm its starts, while lows are ready,
    highs go out only into free slots."""
    core = QueueCore()
    core.enqueue_many([NewTask("t", "{}", 90) for _ in range(20)]
                      + [NewTask("t", "{}", 10) for _ in range(20)], 0.0)
    assert [len(core.claim("w", 1, 0.0, prefetch=10)) for _ in range(3)] == [1, 1, 1]
    assert [lease.priority for lease in core.claim("w", 2, 0.0, prefetch=10)] == [90, 90]
    # another pool's lows do not count: they never compete for these workers' slots
    other = QueueCore()
    other.enqueue_many([NewTask("t", "{}", 90) for _ in range(20)]
                       + [NewTask("t", "{}", 10, pool="p2") for _ in range(20)], 0.0)
    assert len(other.claim("w", 1, 0.0, prefetch=10)) == 10  # 1 + half of the 19 left
    # once the highs are gone the lows prefetch again (nothing below them)
    assert [lease.priority for lease in core.claim("w", 15, 0.0)] == [90] * 15
    assert len(core.claim("w", 1, 0.0, prefetch=10)) == 10
    with pytest.raises(ValueError, match="prefetch"):
        core.claim("w", 1, 0.0, prefetch=-1)


def test_evolve_copies_with_changes_and_leaves_the_original_alone() -> None:
    core = QueueCore()
    rec = core.enqueue(NewTask("t", '{"a":1}', 50), 0.0)
    new = rec.evolve(state=TaskState.LEASED, attempts=2, worker="w")
    assert new == dataclasses.replace(rec, state=TaskState.LEASED, attempts=2, worker="w")
    assert rec.state is TaskState.READY and rec.attempts == 0 and rec.worker is None
    with pytest.raises(AttributeError):
        rec.evolve(no_such_field=1)


def test_prefetch_to_a_worker_that_confirms_starts_is_marked_and_holds_lows_back() -> None:
    """While lows are ready, a worker that confirms its starts still gets prefetch (not
    one task per call): every high it holds is marked, and no low goes out to anyone
    until each of them has started."""
    core = QueueCore()
    core.enqueue_many([NewTask("t", "{}", 90) for _ in range(20)]
                      + [NewTask("t", "{}", 10) for _ in range(20)], 0.0)
    a = core.claim("a", 1, 0.0, prefetch=10, confirm_starts=True)
    assert len(a) == 10 and all(x.priority == 90 and x.confirm for x in a)  # 1 + 19 // 2
    b = core.claim("b", 1, 0.0, prefetch=10, confirm_starts=True)
    assert len(b) == 5 and all(x.priority == 90 and x.confirm for x in b)  # 1 + 9 // 2
    rest = core.claim("b", 5, 0.0, confirm_starts=True)
    assert [x.priority for x in rest] == [90] * 5  # the last highs
    assert core.claim("c", 1, 0.0, prefetch=10, confirm_starts=True) == []  # held back
    core.started((x.task_id, x.token) for x in [*a, *b])
    assert core.claim("c", 1, 0.0, confirm_starts=True) == []  # 5 highs not started yet
    core.started((x.task_id, x.token) for x in rest)
    lows = core.claim("c", 1, 0.0, prefetch=10, confirm_starts=True)
    assert [x.priority for x in lows] == [10] * 10  # nothing below them: not marked
    assert not any(x.confirm for x in lows)


def test_a_late_confirmation_of_an_expired_lease_does_not_confirm_its_new_lease(
        core: QueueCore, clock: FakeClock) -> None:
    """A worker's confirmation that arrives after its lease expired and the task was
    leased again names the old lease: lows keep waiting for the new one to start."""
    core.enqueue_many([NewTask("t", "{}", 90, task_id="high")]
                      + [NewTask("t", "{}", 10) for _ in range(2)], clock.now())
    [old] = core.claim("a", 1, clock.now(), confirm_starts=True)
    clock.advance(core.config.lease_ttl + 1)
    assert core.tick(clock.now()).expired == ("high",)
    [fresh] = core.claim("b", 1, clock.now(), idle=True, confirm_starts=True)
    assert (fresh.task_id, fresh.confirm) == ("high", True) and fresh.token != old.token
    core.started([("high", old.token)])  # the expired attempt reached execute() late
    assert core.claim("c", 1, clock.now(), confirm_starts=True) == []  # still held back
    core.started([("high", fresh.token)])
    [low] = core.claim("c", 1, clock.now(), confirm_starts=True)
    assert low.priority == 10


def test_lower_work_waits_for_the_confirmed_start_of_higher_work() -> None:
    """The last high starts before the first low, whatever the delays between the queue
    and each worker: lows wait until every high handed out ahead of them has started."""
    core = QueueCore()
    core.enqueue_many([NewTask("t", "{}", 90) for _ in range(2)]
                      + [NewTask("t", "{}", 10) for _ in range(3)], 0.0)
    [h1] = core.claim("a", 1, 0.0, confirm_starts=True)
    [h2] = core.claim("b", 1, 0.0, confirm_starts=True)
    assert (h1.priority, h1.confirm, h2.priority, h2.confirm) == (90, True, 90, True)
    assert core.claim("c", 1, 0.0, confirm_starts=True) == []  # h1, h2 not started yet
    assert core.take_held_back() == {"default"}
    assert core.take_held_back() == set()
    core.started([(h1.task_id, h1.token)])
    assert core.claim("c", 1, 0.0, confirm_starts=True) == []  # h2 still not started
    core.complete_many([Outcome(h2.task_id, h2.token, result="null")], 0.0)  # an end
    [low] = core.claim("c", 1, 0.0, confirm_starts=True)
    assert (low.priority, low.confirm) == (10, False)  # nothing lower waits behind it
    # a claimer that will not confirm (a client's dequeue) is never held back for
    # itself and marks nothing
    core.enqueue(NewTask("t", "{}", 90), 0.0)
    [h3] = core.claim("d", 1, 0.0)
    assert not h3.confirm and len(core.claim("d", 1, 0.0)) == 1
