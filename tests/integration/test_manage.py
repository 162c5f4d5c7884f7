"""Managing tasks and queues on Ray (issue 16, items 2 and 9): listing tasks over
shards with filters and cursors, a task's attempts, purging for good, deleting a queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig, testing
from tests.integration.probe_tasks import AsyncProbe, Probe
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


def test_tasks_pages_over_shards_filters_and_purge_is_for_good(make_queue: MakeQueue) -> None:
    q = make_queue(shards=2, pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=4)])
    flaky = q.enqueue(Probe(value=7, fail_times=1))
    dead = q.enqueue(Probe(fail_times=9))
    done = q.enqueue_many([Probe(value=i) for i in range(6)])
    q.results(done, timeout=60)
    assert flaky.result(timeout=60) == 7
    wait_for(lambda: q.get(dead.id).state == "dead", what="the dead task")
    q.pause()
    waiting = q.enqueue_many([AsyncProbe(text=str(i)) for i in range(5)], priority=80)

    # Every task, newest first, a page of 4 at a time over both shards.
    seen: list[str] = []
    after = None
    while True:
        page = q.tasks(limit=4, after=after)
        assert len(page.tasks) <= 4
        seen += [t.id for t in page.tasks]
        if (after := page.next) is None:
            break
    everything = [flaky.id, dead.id, *(h.id for h in done), *(h.id for h in waiting)]
    assert sorted(seen) == sorted(everything) and len(seen) == len(everything)
    # Filters: state, type, priority, and an id prefix.
    assert {t.id for t in q.tasks(state="ready").tasks} == {h.id for h in waiting}
    assert {t.id for t in q.tasks(state=["dead", "ready"], type=Probe.task_name).tasks
            } == {dead.id}
    assert {t.id for t in q.tasks(priority=80).tasks} == {h.id for h in waiting}
    assert [t.id for t in q.tasks(id_prefix=flaky.id[:10]).tasks] == [flaky.id]
    assert all(t.brief and t.payload_json == "" for t in q.tasks().tasks)
    with pytest.raises(rayqueue.InvalidArgumentError, match="no state"):
        q.tasks(state="done")
    # The task that failed once keeps that attempt, with its error.
    (first,) = q.get(flaky.id).history
    assert (first.number, first.outcome, first.error_type) == (1, "failed", "RuntimeError")

    # Purge: finished tasks only, and a restart does not bring them back.
    with pytest.raises(rayqueue.PurgeRefusedError, match="cannot purge ready"):
        q.purge("ready")
    assert q.purge("dead") == 1
    assert q.purge(["succeeded", "cancelled"]) == 7
    testing.recover_now(q)  # reload from the journal, as a restart would
    assert q.stats().by_state["succeeded"] == 0 and q.stats().by_state["dead"] == 0
    assert q.stats().by_state["ready"] == 5
    with pytest.raises(rayqueue.TaskNotFoundError):
        q.get(dead.id)


def test_delete_refuses_an_open_queue_then_removes_a_closed_one(
        make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue()
    q.enqueue(Probe(value=1))
    assert q.journal is not None and Path(q.journal).exists()
    with pytest.raises(rayqueue.QueueRunningError, match="close it first"):
        rayqueue.delete(q.name)
    assert q.stats().size >= 0  # still runs
    q.close()
    removed = rayqueue.delete(q.name)
    assert q.journal in removed and not Path(q.journal).exists()
    assert q.name not in [e.name for e in rayqueue.queues()]
    with pytest.raises(rayqueue.QueueNotFoundError):
        rayqueue.connect(q.name)
