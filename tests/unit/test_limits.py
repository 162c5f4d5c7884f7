"""Rate and concurrency limits by key, enforced by the pure core when it leases."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest

from rayqueue import FakeClock, NewTask, QueueCore
from rayqueue.core.lease import Failure, Lease
from rayqueue.core.record import ErrorInfo, Limit, TaskRecord, TaskState
from rayqueue.errors import InvalidLimitError, InvalidTaskError
from rayqueue.protocol import pack_news, unpack_news
from rayqueue.storage.sqlite import SQLiteStorage
from rayqueue.task import Task, parse_rate, to_new_task
from tests.unit.conftest import NO_JITTER


def limited(name: str = "lim", *, rate: float | None = None, conc: int | None = None,
            key: str | None = None, priority: int = 50, task_id: str | None = None) -> NewTask:
    return NewTask(name, "{}", priority, task_id=task_id, retry=NO_JITTER,
                   limit=Limit(rate, conc, key))


def plain(name: str = "free", task_id: str | None = None) -> NewTask:
    return NewTask(name, "{}", 50, task_id=task_id, retry=NO_JITTER)


def _ack_all(core: QueueCore, leases: list[Lease], now: float) -> None:
    core.ack_many([(x.task_id, x.token, "null") for x in leases], now)


def test_a_concurrency_limit_of_2_is_never_exceeded_over_500_tasks(
        core: QueueCore, clock: FakeClock) -> None:
    rng = random.Random(3)
    core.enqueue_many([limited(conc=2) for _ in range(500)], clock.now())
    core.enqueue_many([plain() for _ in range(200)], clock.now())
    running: list[Lease] = []
    peak = 0
    done = 0
    for _ in range(10_000):
        if done == 700:
            break
        running += core.claim("w", 8 - len(running), clock.now())
        in_flight = sum(1 for x in running if x.task_name == "lim")
        peak = max(peak, in_flight)
        assert in_flight <= 2
        assert core.leased_by_worker().get("w", 0) == len(running)
        rng.shuffle(running)
        finished = running[: rng.randint(0, len(running))]
        running = running[len(finished):]
        _ack_all(core, finished, clock.advance(0.01))
        done += len(finished)
    assert done == 700 and peak == 2  # all ran, and the limit was reached, never passed
    assert core.stats().by_state["succeeded"] == 700


def test_unlimited_tasks_pass_a_key_at_its_limit(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited(conc=1) for _ in range(5)], clock.now())
    core.enqueue_many([plain() for _ in range(5)], clock.now())
    got = core.claim("w", 10, clock.now())
    assert Counter(x.task_name for x in got) == {"lim": 1, "free": 5}


def test_per_customer_limit_1_gives_small_customers_a_turn_before_the_big_one(
        core: QueueCore, clock: FakeClock) -> None:
    sizes = [300, 1, 2, 3, 5, 8, 13, 21, 2, 1]
    for customer, size in enumerate(sizes):  # the big customer's tasks come first
        core.enqueue_many([limited(conc=1, key=f"c{customer}") for _ in range(size)],
                          clock.now())
    starts: list[str] = []
    running: list[Lease] = []
    by_id = {}
    for _ in range(10_000):
        got = core.claim("w", 8 - len(running), clock.now())
        for x in got:
            key = core.get(x.task_id).limit.key  # type: ignore[union-attr]
            by_id[x.task_id] = key
            starts.append(key)
        running += got
        keys = Counter(by_id[x.task_id] for x in running)
        assert max(keys.values(), default=0) <= 1
        if not running:
            break
        _ack_all(core, running[:1], clock.advance(0.01))  # oldest first
        running = running[1:]
    assert len(starts) == sum(sizes)
    assert {f"c{i}" for i in range(10)} <= set(starts[:10])


def test_keys_take_turns_within_a_priority(core: QueueCore, clock: FakeClock) -> None:
    # A limit that does not bind still gives fair turns: the big key's next task goes to
    # the back of the line, behind the other keys' first ones.
    core.enqueue_many([limited(conc=100, key="big") for _ in range(50)], clock.now())
    core.enqueue_many([limited(conc=100, key=f"small{i}") for i in range(4)], clock.now())
    got = core.claim("w", 5, clock.advance(1))
    keys = [core.get(x.task_id).limit.key for x in got]  # type: ignore[union-attr]
    assert sorted(keys) == ["big", "small0", "small1", "small2", "small3"]


def test_a_higher_priority_task_of_a_key_goes_first(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited(conc=1, key="k", task_id="low")], clock.now())
    core.enqueue_many([limited(conc=1, key="k", task_id="high", priority=90)], clock.now())
    assert [x.task_id for x in core.claim("w", 2, clock.now())] == ["high"]


def test_a_rate_of_50_a_second_holds_over_1000_tasks(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited(rate=50.0) for _ in range(1000)], clock.now())
    times: list[float] = []
    for _ in range(100_000):
        if len(times) == 1000:
            break
        core.tick(clock.now())
        got = core.claim("w", 8, clock.now())
        times += [clock.now()] * len(got)
        _ack_all(core, got, clock.now())
        if not got:  # nothing may start now: the core says when something can
            wake = core.next_wakeup()
            assert wake is not None and wake > clock.now()
            clock.set(wake)
    assert len(times) == 1000
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 45 <= rate <= 55, rate
    # and no second holds more than the rate plus the bucket's small burst
    per_second = Counter(int(t - times[0]) for t in times)
    assert max(per_second.values()) <= 50 + 5


def test_a_refilled_bucket_and_an_ended_lease_wake_parked_claims(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited("r", rate=1.0) for _ in range(2)], clock.now())
    core.enqueue_many([limited("c", conc=1) for _ in range(2)], clock.now())
    first = core.claim("w", 8, clock.now())
    assert Counter(x.task_name for x in first) == {"r": 1, "c": 1}
    core.take_held_back()
    assert core.claim("w", 8, clock.now()) == []
    wake = core.next_wakeup()
    assert wake is not None and wake <= clock.now() + 1.0
    clock.set(wake)
    core.tick(clock.now())
    assert core.take_held_back() == {"default"}  # the actor wakes the pool's claims
    assert [x.task_name for x in core.claim("w", 8, clock.now())] == ["r"]
    _ack_all(core, [x for x in first if x.task_name == "c"], clock.now())
    assert core.take_held_back() == {"default"}
    assert [x.task_name for x in core.claim("w", 8, clock.now())] == ["c"]


def test_throttled_tasks_stay_ready_count_no_attempt_and_show_in_stats(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited(conc=1, task_id=f"t{i}") for i in range(3)], clock.now())
    got = core.claim("w", 3, clock.now())
    assert [x.task_id for x in got] == ["t0"]
    for i in (1, 2):
        rec = core.get(f"t{i}")
        assert rec.state is TaskState.READY and rec.attempts == 0
    stats = core.stats()
    assert stats.throttled == 2 and stats.throttled_by_task == {"lim": 2}
    assert stats.by_state["ready"] == 2
    _ack_all(core, got, clock.now())
    again = core.claim("w", 3, clock.now())
    assert [x.task_id for x in again] == ["t1"] and again[0].attempt == 1
    assert core.stats().throttled == 1


def test_a_cancelled_or_released_limited_task_frees_its_place(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([limited(conc=1, task_id=f"t{i}") for i in range(3)], clock.now())
    core.cancel("t0", clock.now())  # the task in line: the next one takes its place
    got = core.claim("w", 3, clock.now())
    assert [x.task_id for x in got] == ["t1"]
    core.release("t1", got[0].token, clock.now())  # back in its place, before t2
    again = core.claim("w", 3, clock.now())
    assert [x.task_id for x in again] == ["t1"] and again[0].attempt == 1


def test_a_restart_from_the_sqlite_journal_keeps_the_limits(
        tmp_path: Path, clock: FakeClock) -> None:
    storage = SQLiteStorage(tmp_path / "j.sqlite")
    core = QueueCore(storage=storage)
    core.enqueue_many([limited(conc=1, key="k", task_id=f"t{i}") for i in range(3)],
                      clock.now())
    (lease,) = core.claim("w", 3, clock.now())
    storage.close()
    again = QueueCore.recover(SQLiteStorage(tmp_path / "j.sqlite"))
    assert again.get("t1").limit == Limit(None, 1, "k")
    assert again.claim("w2", 3, clock.now()) == []  # the leased one still counts
    again.ack(lease.task_id, lease.token, "null", clock.now())
    assert [x.task_id for x in again.claim("w2", 3, clock.now())] == ["t1"]


def test_records_from_before_limits_load_unlimited() -> None:
    rec = TaskRecord("a", "t", "{}", 50, "default", TaskState.READY, 1, 0.0, 0.0, 0.0)
    data = rec.to_json()
    assert "limit" not in data  # an unlimited record's journal row is as before
    assert TaskRecord.from_json(data).limit is None
    limited_rec = rec.evolve(limit=Limit(2.0, 3, "x"))
    assert TaskRecord.from_json(limited_rec.to_json()).limit == Limit(2.0, 3, "x")


@pytest.mark.parametrize("bad", [Limit(), Limit(-1.0), Limit(float("nan")), Limit(None, 0),
                                 Limit(None, True), Limit(1.0, None, "")])  # type: ignore[arg-type]
def test_the_core_refuses_a_bad_limit_and_keeps_nothing_of_the_batch(
        core: QueueCore, clock: FakeClock, bad: Limit) -> None:
    with pytest.raises(InvalidLimitError) as err:
        core.enqueue_many([plain(task_id="ok"), NewTask("t", "{}", 50, limit=bad)],
                          clock.now())
    assert isinstance(err.value, InvalidTaskError)
    assert core.size() == 0


class Charge(Task[None]):
    customer_id: int
    cents: int
    rate_limit: ClassVar[str | None] = "300/m"
    concurrency_limit: ClassVar[int | None] = 1
    concurrency_key: ClassVar[str | None] = "customer_id"

    def execute(self) -> None:
        return None


def test_a_task_class_carries_its_limits_and_key_to_the_queue() -> None:
    news = [to_new_task(Charge(customer_id=7, cents=100)),
            to_new_task(Charge(customer_id=8, cents=100))]
    assert news[0].limit == Limit(5.0, 1, "7") and news[1].limit == Limit(5.0, 1, "8")
    assert unpack_news(pack_news(news)) == news


@pytest.mark.parametrize(("options", "match"), [
    ({"rate_limit": "fast"}, "rate_limit"),
    ({"rate_limit": "0/s"}, "rate_limit"),
    ({"rate_limit": 50}, "rate_limit"),
    ({"concurrency_limit": 0}, "concurrency_limit"),
    ({"concurrency_limit": 2.5}, "concurrency_limit"),
    ({"concurrency_limit": 1, "concurrency_key": "tenant"}, "payload field"),
    ({"concurrency_key": "customer_id"}, "needs a concurrency_limit"),
])
def test_bad_limits_fail_at_class_definition(options: dict[str, object], match: str) -> None:
    namespace = {"__annotations__": {"customer_id": int}, "execute": lambda self: None,
                 **options}
    with pytest.raises(InvalidLimitError, match=match):
        type(Task)("BadLimits", (Task,), {**namespace, "__module__": __name__})


def test_rates_parse_per_second_minute_and_hour() -> None:
    assert parse_rate("50/s") == 50.0
    assert parse_rate("300/m") == 5.0
    assert parse_rate(" 3600 / h ") == 1.0
    assert parse_rate("0.5/s") == 0.5


def test_a_restart_that_loads_a_ready_task_before_its_keys_lease_still_holds_the_limit(
        tmp_path: Path, clock: FakeClock) -> None:
    # Recovery applies records in enqueue order: here the ready t0 comes back before
    # the leased t1 of the same key, so t0 first stands in line; the claim still checks.
    storage = SQLiteStorage(tmp_path / "j.sqlite")
    core = QueueCore(storage=storage)
    core.enqueue_many([limited(conc=1, task_id=f"t{i}") for i in range(2)], clock.now())
    (first,) = core.claim("w", 2, clock.now())
    core.fail(first.task_id, first.token, Failure(ErrorInfo("E", "again")), clock.now())
    (second,) = core.claim("w", 2, clock.now())
    assert (first.task_id, second.task_id) == ("t0", "t1")
    clock.advance(15)  # past t0's retry delay (10 s), within t1's lease (30 s)
    core.tick(clock.now())  # t0's retry is due: ready again, while t1 runs
    assert core.get("t0").state is TaskState.READY
    storage.close()
    again = QueueCore.recover(SQLiteStorage(tmp_path / "j.sqlite"))
    assert again.claim("w2", 2, clock.now()) == []
    assert again.stats().throttled == 1
    again.ack("t1", second.token, "null", clock.now())
    assert [x.task_id for x in again.claim("w2", 2, clock.now())] == ["t0"]


def _check_groups(core: QueueCore) -> None:
    """Every ready limited task is in exactly one place (in line as its group's head,
    or waiting in its group), and each group's running count is its leased tasks."""
    running: Counter[tuple[str, str, str | None]] = Counter()
    for task_id in core.task_ids():
        rec = core.get(task_id)
        if rec.limit is None:
            continue
        group_key = (rec.pool, rec.task_name, rec.limit.key)
        group = core._groups[group_key]
        if rec.state is TaskState.LEASED:
            running[group_key] += 1
        elif rec.state is TaskState.READY:
            here = (group.head == task_id) + (task_id in group.waiting)
            assert here == 1, (task_id, group)
            assert (task_id in core._ready[rec.pool]) == (group.head == task_id)
    for group_key, group in core._groups.items():
        assert group.running == running[group_key], group_key
        if group.head is not None:
            assert core.get(group.head).state is TaskState.READY


def test_random_operations_keep_every_limited_task_in_one_place(
        core: QueueCore, clock: FakeClock) -> None:
    rng = random.Random(11)
    held: list[Lease] = []
    n = 0
    for _ in range(3_000):
        op = rng.random()
        if op < 0.3:
            n += 1
            key = rng.choice([None, "a", "b", "c"])
            conc = None if key is None and rng.random() < 0.5 else rng.choice([1, 2, 3])
            rate = rng.choice([None, None, 20.0])
            core.enqueue(NewTask(rng.choice(["x", "y"]), "{}", rng.choice([10, 50, 90]),
                                 task_id=f"t{n}", retry=NO_JITTER,
                                 limit=None if rng.random() < 0.2 else Limit(rate, conc or (
                                     None if rate else 1), key)), clock.now())
        elif op < 0.55:
            held += core.claim("w", rng.randint(0, 4), clock.now())
        elif op < 0.75 and held:
            x = held.pop(rng.randrange(len(held)))
            rec = core.find(x.task_id)
            if rec is not None and rec.state is TaskState.LEASED and rec.lease_token == x.token:
                choice = rng.random()
                if choice < 0.5:
                    core.ack(x.task_id, x.token, "null", clock.now())
                elif choice < 0.8:
                    core.fail(x.task_id, x.token, Failure(ErrorInfo("E", "")), clock.now())
                else:
                    core.release(x.task_id, x.token, clock.now())
        elif op < 0.85:
            ready = [i for i in core.task_ids() if core.get(i).state is TaskState.READY]
            if ready:
                core.cancel(rng.choice(ready), clock.now())
        else:
            core.tick(clock.advance(rng.choice([0.01, 0.1, 1.0, 20.0])))
        _check_groups(core)
        # The concurrency limits the tasks of each (type, key) carry: one pass over the
        # tasks, not one per group.
        limits: dict[tuple[str, str | None], set[int | None]] = {}
        for task_id in core.task_ids():
            rec = core.get(task_id)
            if rec.limit is not None:
                limits.setdefault((rec.task_name, rec.limit.key), set()).add(
                    rec.limit.concurrency)
        for (_, name, key), group in core._groups.items():
            found = limits.get((name, key), set())
            if found and None not in found:
                assert group.running <= max(found)  # type: ignore[type-var]
