"""The pure sharding rules: routing, splitting and merging answers, choosing shards."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayqueue import (
    FakeClock,
    InMemoryStorage,
    InvalidArgumentError,
    Priority,
    QueueConfig,
    QueueCore,
)
from rayqueue.aggregate import MetricsAggregate
from rayqueue.core.shards import (
    PoolStatus,
    ShardChooser,
    by_head,
    check_shards,
    merge_pool_status,
    merge_stats,
    shard_of,
    split,
    unsplit,
)
from rayqueue.core.stats import QueueStats
from rayqueue.protocol import Depth
from tests.unit.conftest import new


def test_routing_is_stable_and_keeps_schedule_runs_with_their_schedule() -> None:
    # CRC-32, not Python's per-process salted hash: every process routes alike.
    assert shard_of("abc", 4) == zlib.crc32(b"abc") % 4
    assert shard_of("anything", 1) == 0
    assert shard_of("sched-1@1700000000000", 7) == shard_of("sched-1", 7)
    spread = {shard_of(f"task-{i}", 4) for i in range(100)}
    assert spread == {0, 1, 2, 3}


@pytest.mark.parametrize("bad", [0, -1, 257, 2.0, True, "3", None])
def test_shard_counts_are_checked(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="shards: must be an int from 1 to 256"):
        check_shards(bad)
    assert check_shards(4) == 4


@given(st.lists(st.text(min_size=1, max_size=12), max_size=40), st.integers(1, 9))
def test_split_then_unsplit_gives_back_the_callers_order(ids: list[str], n: int) -> None:
    parts = split(ids, ids, n)
    assert all(shard_of(i, n) == s for s, part in parts.items() for _, i in part)
    answers = [[f"<{i}>" for _, i in part] for part in parts.values()]
    assert unsplit(len(ids), parts.values(), answers) == [f"<{i}>" for i in ids]


def test_stats_and_pool_status_add_up_over_shards() -> None:
    a = QueueStats(by_state={"ready": 2, "dead": 1}, ready_by_priority={"p": {50: 2}}, size=2,
                   schedules=1, max_size=10)
    b = QueueStats(by_state={"ready": 3, "dead": 0}, ready_by_priority={"p": {50: 1, 80: 2},
                   "q": {0: 1}}, size=3, max_size=10, paused=True)
    merged = merge_stats([a, b])
    assert merged.by_state == {"ready": 5, "dead": 1}
    assert merged.ready_by_priority == {"p": {50: 3, 80: 2}, "q": {0: 1}}
    assert (merged.size, merged.schedules, merged.max_size, merged.paused) == (5, 1, 20, True)
    assert merge_stats([a]) is a
    assert merge_stats([a, b.model_copy(update={"max_size": None})]).max_size is None
    status = merge_pool_status([
        PoolStatus({"p": 1}, {}, [("t1", "w1")], {"w1": 2}),
        PoolStatus({"p": 2}, {"p": 1}, [], {"w1": 1})])
    assert status == PoolStatus({"p": 3}, {"p": 1}, [("t1", "w1")], {"w1": 3})
    # A paused shard's ready tasks are still counted, but ask for no worker.
    status = merge_pool_status([
        PoolStatus({"p": 1}, claimable={"p": 1}), PoolStatus({"p": 2}, claimable={})])
    assert (status.ready, status.claimable) == ({"p": 3}, {"p": 1})


def test_metrics_depth_is_summed_over_shards_not_overwritten() -> None:
    agg = MetricsAggregate("q")
    agg.add(Depth({"ready": 2}, {"p": {50: 2}}, 0), 0.0)
    agg.add(Depth({"ready": 5}, {"p": {50: 5}}, 1), 0.0)
    agg.add(Depth({"ready": 1}, {"p": {50: 1}}, 0), 0.0)  # shard 0 again: replaces
    assert agg.depth == {"ready": 6} and agg.ready == {"p": {50: 6}}
    agg.add(Depth({"ready": 4}, {}), 0.0)  # an unsharded queue's event is shard 0
    assert agg.depth == {"ready": 9}


def test_chooser_looks_at_stale_shards_first_then_at_the_best_rank() -> None:
    chooser = ShardChooser(3, start=1, refresh_s=0.05)
    assert chooser.order(0.0) == [1, 2, 0]  # nothing seen: round robin from its start
    assert chooser.bound(0) is None
    chooser.saw(1, -10.0, 0.0)
    chooser.saw(2, None, 0.0)  # empty
    chooser.saw(0, -80.0, 0.0)
    assert chooser.order(0.01) == [0, 1, 2]  # best rank (lowest) first, empty last
    assert chooser.bound(1) == -80.0 and chooser.bound(0) == -10.0
    assert chooser.order(0.06) == [1, 2, 0]  # all stale again: every shard is looked at
    assert chooser.failed(1, 0.06) == pytest.approx(0.1)  # doubles per failure in a row
    assert 1 not in chooser.order(0.1) and chooser.order(0.2)[0] == 1
    assert chooser.failed(1, 0.2) == pytest.approx(0.2)
    assert chooser.wait_s(0.3) == 0.0  # shards 0 and 2 may be tried now
    chooser.failed(0, 0.3)
    chooser.failed(2, 0.3)
    assert chooser.wait_s(0.3) == pytest.approx(0.1)  # all back off: the first is back at 0.4
    chooser.saw(1, None, 0.5)
    assert chooser.failed(1, 0.6) == pytest.approx(0.1)  # an answer resets the count


def test_a_claim_takes_nothing_worse_than_the_bound_and_reports_the_rank(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(new(task_id="hi", priority=90), clock.now())
    core.enqueue(new(task_id="lo", priority=10), clock.now())
    assert core.top_rank() == -90.0
    leases = core.claim("w", 5, clock.now(), no_worse_than=-50.0)
    assert [lease.task_id for lease in leases] == ["hi"]
    assert core.top_rank() == -10.0
    assert core.claim("w", 5, clock.now(), no_worse_than=-50.0) == []
    assert [lease.task_id for lease in core.claim("w", 5, clock.now(), no_worse_than=-10.0)
            ] == ["lo"]
    assert core.top_rank() is None and core.top_rank("no-such-pool") is None


@pytest.mark.parametrize("aging_rate", [0.0, 1.0])
def test_peek_over_shards_picks_what_one_queue_would_hand_out(
        make_core: Callable[..., QueueCore], clock: FakeClock, aging_rate: float) -> None:
    one = make_core(aging_rate=aging_rate)
    shards = [QueueCore(QueueConfig(aging_rate=aging_rate), InMemoryStorage()) for _ in "ab"]
    owner = {"old-low": 0, "high": 1, "newer-high": 0}
    # An old LOW task in shard a; 50 s later (LOW + 50 ties HIGH with aging) a HIGH one
    # in shard b; a second later another HIGH in shard a.
    for task_id, priority, wait in (("old-low", Priority.LOW, 50), ("high", Priority.HIGH, 1),
                                    ("newer-high", Priority.HIGH, 0)):
        task = new(priority=priority, task_id=task_id)
        one.enqueue(task, clock.now())
        shards[owner[task_id]].enqueue(task, clock.now())
        clock.advance(wait)

    def head(core: QueueCore) -> tuple[float, float] | None:
        rank, rec = core.top_rank(), core.peek()
        return None if rank is None or rec is None else (rank, rec.due_at)

    order = []
    while best := by_head([head(s) for s in shards]):
        rec, expected = shards[best[0]].peek(), one.peek()
        assert rec is not None and expected is not None and rec.id == expected.id
        order.append(rec.id)  # as one queue would hand it out (equal priorities: older)
        for core in (one, shards[owner[rec.id]]):
            assert [lease.task_id for lease in core.claim("w", 1, clock.now())] == [rec.id]
    assert order == (["old-low", "high", "newer-high"] if aging_rate
                     else ["high", "newer-high", "old-low"])


def test_exact_ties_between_shard_heads_go_in_turn() -> None:
    heads = [(-50.0, 10.0), None, (-50.0, 10.0), (-50.0, 10.0), (-70.0, 99.0)]
    assert by_head(heads) == [4, 0, 2, 3]
    assert by_head(heads, turn=3) == [4, 3, 0, 2]
    assert by_head([None, None]) == []
