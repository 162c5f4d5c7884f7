"""Listing tasks a page at a time (filters, cursors, bounded scans, shard merges), the
attempt history a task keeps, and purging finished tasks: the pure core, no Ray."""

from __future__ import annotations

import pytest

from rayqueue import (
    ErrorInfo,
    Failure,
    FakeClock,
    InMemoryStorage,
    PurgeRefusedError,
    QueueConfig,
    QueueCore,
    TaskRecord,
    TaskState,
)
from rayqueue.core.browse import (
    TaskFilter,
    decode_cursor,
    encode_cursor,
    merge_pages,
)
from rayqueue.core.record import MAX_HISTORY, MAX_HISTORY_MESSAGE
from rayqueue.info import TaskInfo
from tests.unit.conftest import new

BOOM = Failure(ErrorInfo("RuntimeError", "boom"))


ANY = TaskFilter()


def ids(core: QueueCore, where: TaskFilter = ANY, limit: int = 100,
        before: int | None = None, max_scan: int = 20_000) -> list[str]:
    return [r.id for r in core.browse(where, limit, before, max_scan).records]


def test_pages_newest_first_follow_the_cursor_to_the_end(core: QueueCore,
                                                         clock: FakeClock) -> None:
    for i in range(10):
        core.enqueue(new(task_id=f"t{i}"), clock.now())
    first = core.browse(TaskFilter(), 4)
    assert [r.id for r in first.records] == ["t9", "t8", "t7", "t6"]
    second = core.browse(TaskFilter(), 4, first.next)
    assert [r.id for r in second.records] == ["t5", "t4", "t3", "t2"]
    third = core.browse(TaskFilter(), 4, second.next)
    assert [r.id for r in third.records] == ["t1", "t0"] and third.next is None


def test_filters_by_state_type_priority_and_id_prefix(core: QueueCore,
                                                      clock: FakeClock) -> None:
    now = clock.now()
    core.enqueue(new("mail", priority=80, task_id="mail-1"), now)
    core.enqueue(new("mail", priority=20, task_id="mail-2"), now)
    core.enqueue(new("resize", priority=80, task_id="img-1"), now)
    core.enqueue(new("resize", task_id="img-2", run_at=now + 60), now)
    (lease,) = core.claim("w", 1, now)  # the highest priority, oldest: mail-1
    core.ack(lease.task_id, lease.token, "{}", now)
    assert ids(core, TaskFilter(states=frozenset({TaskState.SUCCEEDED}))) == ["mail-1"]
    assert ids(core, TaskFilter(states=frozenset({TaskState.READY, TaskState.SCHEDULED}))
               ) == ["img-2", "img-1", "mail-2"]
    assert ids(core, TaskFilter(task_name="resize")) == ["img-2", "img-1"]
    assert ids(core, TaskFilter(priority=80)) == ["img-1", "mail-1"]
    assert ids(core, TaskFilter(id_prefix="mail")) == ["mail-2", "mail-1"]
    assert ids(core, TaskFilter(task_name="mail", priority=20)) == ["mail-2"]
    # A whole id is looked up, not scanned for, and still has to pass the other filters.
    page = core.browse(TaskFilter(id_prefix="img-1"), 10, None, max_scan=1)
    assert [r.id for r in page.records] == ["img-1"] and page.next is None
    assert ids(core, TaskFilter(id_prefix="img-1", task_name="mail")) == []


def test_each_page_examines_at_most_max_scan_tasks(core: QueueCore, clock: FakeClock) -> None:
    """A filter that matches little does not scan the queue: the page comes back short
    with a cursor, and following it finds the rest."""
    for i in range(100):
        core.enqueue(new("rare" if i in (3, 60) else "common", task_id=f"t{i:03}"), clock.now())
    where = TaskFilter(task_name="rare")
    page = core.browse(where, 10, None, max_scan=25)
    assert page.records == [] and page.scanned == 25 and page.next is not None
    found, cursor, pages = [], page.next, 1
    while cursor is not None:
        page = core.browse(where, 10, cursor, max_scan=25)
        assert page.scanned <= 25
        found += [r.id for r in page.records]
        cursor, pages = page.next, pages + 1
    assert found == ["t060", "t003"] and pages == 4


def test_pages_skip_purged_tasks_and_the_order_compacts(clock: FakeClock) -> None:
    core = QueueCore(QueueConfig(result_ttl=10.0), InMemoryStorage())
    now = clock.now()
    for i in range(3000):
        core.enqueue(new(task_id=f"t{i}"), now)
    for lease in core.claim("w", 3000, now):
        core.ack(lease.task_id, lease.token, "{}", now)
    core.tick(now + 11)  # their results expire: all purged
    assert ids(core) == []
    core.enqueue(new(task_id="t5"), now + 12)  # an id used before, new record
    assert ids(core) == ["t5"]
    core.enqueue(new(task_id="fresh"), now + 12)
    assert len(core._order) < 3000  # the stale entries went in a compaction
    assert ids(core) == ["fresh", "t5"]


def test_a_recovered_core_lists_in_enqueue_order(core: QueueCore, clock: FakeClock,
                                                 storage: InMemoryStorage) -> None:
    for i in range(5):
        core.enqueue(new(task_id=f"t{i}"), clock.now())
    again = QueueCore.recover(storage)
    assert ids(again, limit=3) == ["t4", "t3", "t2"]


def test_failed_attempts_are_kept_in_the_history_and_journaled(
        core: QueueCore, clock: FakeClock, storage: InMemoryStorage) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    (lease,) = core.claim("w", 1, clock.now())
    started = clock.now()
    clock.advance(2)
    core.fail("a", lease.token, BOOM, clock.now())
    clock.advance(100)
    core.tick(clock.now())
    (lease,) = core.claim("w2", 1, clock.now())
    clock.advance(3)
    core.worker_lost("w2", clock.now())
    clock.advance(100)
    core.tick(clock.now())
    (lease,) = core.claim("w3", 1, clock.now())
    rec = core.ack("a", lease.token, '{"ok": 1}', clock.now())
    assert [(a.number, a.outcome, a.error_type) for a in rec.history or ()] == [
        (1, "failed", "RuntimeError"), (2, "lost", "WorkerLostError")]
    first = (rec.history or ())[0]
    assert (first.started_at, first.ended_at, first.message) == (started, started + 2, "boom")
    again = QueueCore.recover(storage).get("a")
    assert again.history == rec.history
    info = TaskInfo.of(again)
    assert [h.outcome for h in info.history] == ["failed", "lost"] and info.attempts == 3


def test_the_history_is_bounded(core: QueueCore, clock: FakeClock) -> None:
    from rayqueue import RetryPolicy

    many = RetryPolicy(max_attempts=MAX_HISTORY + 5, base_delay=1.0, jitter=False)
    core.enqueue(new(task_id="a", retry=many), clock.now())
    for _ in range(MAX_HISTORY + 5):
        clock.advance(1000)
        core.tick(clock.now())
        (lease,) = core.claim("w", 1, clock.now())
        core.fail("a", lease.token, Failure(ErrorInfo("E", "x" * 5000)), clock.now())
    history = core.get("a").history or ()
    assert len(history) == MAX_HISTORY
    assert history[-1].number == MAX_HISTORY + 5
    assert all(len(a.message) <= MAX_HISTORY_MESSAGE for a in history)


def test_a_record_journaled_without_history_loads() -> None:
    rec = TaskRecord.from_json({**_plain("a").to_json()})
    assert rec.history is None and "history" not in rec.to_json()


def _plain(task_id: str) -> TaskRecord:
    return TaskRecord(id=task_id, task_name="t", payload="{}", priority=50, pool="default",
                      state=TaskState.READY, seq=1, created_at=0.0, due_at=0.0, updated_at=0.0)


def test_purge_removes_finished_tasks_for_good(core: QueueCore, clock: FakeClock,
                                               storage: InMemoryStorage) -> None:
    now = clock.now()
    for name in ("ok", "bad", "gone", "waiting"):
        core.enqueue(new(task_id=name, retry=new().retry.__class__(max_attempts=1)), now)
    core.cancel("gone", now)
    for lease in core.claim("w", 2, now):
        if lease.task_id == "ok":
            core.ack("ok", lease.token, "{}", now)
        else:
            core.fail(lease.task_id, lease.token, BOOM, now)
    states = {i: core.get(i).state for i in ("ok", "bad", "gone", "waiting")}
    assert states == {"ok": TaskState.SUCCEEDED, "bad": TaskState.DEAD,
                      "gone": TaskState.CANCELLED, "waiting": TaskState.READY}
    assert core.purge([TaskState.DEAD]) == ["bad"]
    assert sorted(core.purge([TaskState.SUCCEEDED, TaskState.CANCELLED])) == ["gone", "ok"]
    assert core.find("ok") is None and core.stats().by_state["succeeded"] == 0
    again = QueueCore.recover(storage)  # the journal forgot them too
    assert again.task_ids() == ["waiting"]


@pytest.mark.parametrize("state", [TaskState.READY, TaskState.LEASED, TaskState.FAILED,
                                   TaskState.SCHEDULED])
def test_purge_refuses_unfinished_states_and_changes_nothing(
        core: QueueCore, clock: FakeClock, state: TaskState) -> None:
    core.enqueue(new(task_id="a"), clock.now())
    with pytest.raises(PurgeRefusedError, match=f"cannot purge {state.value} tasks"):
        core.purge([TaskState.SUCCEEDED, state])
    assert core.get("a").state is TaskState.READY


# ------------------------------------------------------------------ shard merges
def test_cursor_text_round_trips_and_bad_ones_are_refused() -> None:
    assert decode_cursor(None, 3) == [None, None, None]
    assert decode_cursor(encode_cursor([None, 5, 0]), 3) == [None, 5, 0]
    assert encode_cursor([0, 0]) is None
    for bad in ("1,2", "x", "1,-2,3", "1,2,3,4", "٣,1,1"):
        with pytest.raises(ValueError, match="not a listing cursor"):
            decode_cursor(bad, 3)


def test_merging_shard_pages_takes_the_newest_and_keeps_each_shards_place() -> None:
    # rows are (seq, created_at); each shard lists its own newest first
    a = ([(9, 9.0), (8, 6.0), (7, 2.0)], 7)  # more below seq 7
    b = ([(4, 8.0), (3, 7.0)], None)  # b has nothing more
    c: tuple[list[tuple[int, float]], int | None] = ([], 12)  # scanned, found nothing
    rows, places = merge_pages([a, b, c], [None, None, None], 4, key=lambda t: t)
    assert rows == [9.0, 8.0, 7.0, 6.0]
    # a gave 9 and 8 (goes on below 8); b gave all and is done; c goes on below 12
    assert places == [8, 0, 12]
    rows, places = merge_pages([a, b, c], [None, 20, 30], 10, key=lambda t: t)
    assert rows == [9.0, 8.0, 7.0, 6.0, 2.0] and places == [7, 0, 12]
    # a shard none of whose rows were taken keeps the place it was asked from
    rows, places = merge_pages([a, ([(1, 0.5)], 1)], [None, 33], 3, key=lambda t: t)
    assert places == [7, 33]
