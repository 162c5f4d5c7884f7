"""Sharded queues on the shared local Ray: routing, aggregation, priority, journals."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import PoolConfig, Priority, QueueConfig, testing
from rayqueue.cli import main as cli
from rayqueue.core.shards import shard_of
from tests.integration.probe_tasks import AsyncProbe, Manual, Probe
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


def _dead(actor: Any) -> bool:
    try:
        ray.get(actor.pid.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        return True
    return False


def _ids_per_shard(q: rayqueue.TaskQueue[Any]) -> list[list[str]]:
    return testing.task_ids_by_shard(q)


def test_tasks_route_by_id_and_every_read_sees_the_whole_queue(make_queue: MakeQueue) -> None:
    q = make_queue(shards=3, pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=4)])
    assert q.shards == 3 and "shards=3" in repr(q)
    handles = q.enqueue_many([Probe(value=i) for i in range(300)])
    single = [q.enqueue(Probe(value=i), wait=False) for i in range(300, 350)]
    q.flush(timeout=30)
    assert q.results(handles + single, timeout=60) == list(range(350))

    # Each task lives in the shard its id hashes to, and every shard got some.
    per_shard = _ids_per_shard(q)
    assert sum(len(ids) for ids in per_shard) == 350
    for shard, ids in enumerate(per_shard):
        assert ids and all(shard_of(i, 3) == shard for i in ids)
    # Reads are routed or merged: one queue to the caller.
    stats = q.stats()
    assert stats.by_state["succeeded"] == 350 and stats.size == 0
    # Metrics arrive from every shard every 0.5 s; depth is summed over shards.
    wait_for(lambda: q.metrics().counts.get(Probe.task_name, {}).get("succeeded") == 350,
             what="events of every shard")
    wait_for(lambda: q.metrics().depth.get("succeeded") == 350, what="summed depth")
    assert q.get(handles[7].id).state == "succeeded"
    assert [i.state for i in q.get_many([h.id for h in handles[:5]])] == ["succeeded"] * 5

    later = q.enqueue_many([Probe(value=i) for i in range(6)], delay=3600)
    assert {q.cancel(h.id) for h in later} == {"cancelled"}
    dead = q.enqueue(Probe(value=1, fail_times=9))
    with pytest.raises(rayqueue.TaskFailedError):
        dead.result(timeout=60)
    assert [d.id for d in q.dead_letters()] == [dead.id]
    assert q.retry_dead(dead.id).state == "ready"

    sid = q.schedule(Probe(value=5), every=0.2, schedule_id=f"s-{uuid.uuid4().hex[:6]}")
    home = shard_of(sid, 3)

    def committed_run() -> rayqueue.TaskInfo | None:
        # The shard's memory holds a run a moment before its group commit ends; reads
        # answer what is committed, so a run just fired is not found yet: look again.
        for task_id in _ids_per_shard(q)[home]:
            if task_id.startswith(f"{sid}@"):
                with contextlib.suppress(rayqueue.TaskNotFoundError):
                    return q.get(task_id)  # a run id routes to its schedule's shard
        return None

    run = wait_for(committed_run, what="a committed scheduled run in its schedule's shard")
    assert run.schedule_id == sid
    assert q.stats().schedules == 1
    q.cancel(sid)
    assert q.stats().schedules == 0

    # Another driver's view: connect finds every shard; a wrong count is refused.
    other = rayqueue.connect(q.name)
    assert other.shards == 3 and other.get(handles[0].id).state == "succeeded"
    with pytest.raises(rayqueue.InvalidArgumentError, match="already runs with 3 shard"):
        rayqueue.init(q.name, shards=2)
    # The refused init changed nothing, the running queue's metrics included: the
    # cluster's metrics actor still counts its tasks. (A type no task of this queue had,
    # so the count is exact: the schedule's last runs may still end as Probes.)
    assert AsyncProbe.task_name not in q.metrics().counts
    q.results(q.enqueue_many([AsyncProbe(text=str(i)) for i in range(3)]), timeout=60)
    wait_for(lambda: q.metrics().counts.get(AsyncProbe.task_name, {}).get("succeeded") == 3,
             what="the metrics to count after a refused init")
    q.pause()
    assert q.stats().paused and all(ray.get(s.stats.remote()).paused
                                    for s in testing.actors(q).shards)
    q.resume()


def test_peek_and_dequeue_over_shards_rank_with_aging_as_one_queue_would(
        make_queue: MakeQueue) -> None:
    # "old" (LOW) in shard 0, then "new" (HIGH) in shard 1 at least one round trip later.
    # At 10^6 levels a second the old task has overtaken by then; with no aging it has not.
    old = next(f"old-{i}" for i in range(100) if shard_of(f"old-{i}", 2) == 0)
    new = next(f"new-{i}" for i in range(100) if shard_of(f"new-{i}", 2) == 1)
    for aging_rate, first in ((0.0, new), (1e6, old)):
        q = make_queue(shards=2, config=QueueConfig(aging_rate=aging_rate))
        assert q.peek(pool="manual") is None
        # wait=True: "old" is in its shard before "new" is sent (pipelined, the two could
        # share one batch and reach their shards in either order).
        q.enqueue(Manual(name="old"), priority=Priority.LOW, task_id=old, wait=True)
        q.enqueue(Manual(name="new"), priority=Priority.HIGH, task_id=new, wait=True)
        head = q.peek(pool="manual")
        assert head is not None and head.id == first
        # dequeue() takes the same task: it claims from the shard with the best rank.
        claimed = q.dequeue(pool="manual", timeout=5)
        assert claimed is not None and claimed.id == first and claimed.ack("done")
        claimed = q.dequeue(pool="manual")
        assert claimed is not None and claimed.id != first and claimed.ack("done")
        assert q.dequeue(pool="manual") is None and q.peek(pool="manual") is None


def test_priority_across_shards_stays_within_the_stated_bound(make_queue: MakeQueue) -> None:
    """Every urgent task sits in one shard (the worst case for hashing): workers must
    find it there rather than serve the other shards' low work in turn."""
    workers, concurrency, shards = 2, 2, 3
    q = make_queue(shards=shards, pools=[PoolConfig(min_workers=workers, max_workers=workers,
                                                    concurrency=concurrency)])
    wait_for(lambda: sum(p.workers for p in q.pools()) == workers, what="the workers")
    q.pause()
    low = q.enqueue_many([Probe(value=i) for i in range(600)], priority=Priority.LOW)
    urgent_ids = [i for i in (f"u-{n}" for n in range(5_000)) if shard_of(i, shards) == 0][:60]
    high = q.enqueue_many([Probe(value=i) for i in range(60)], priority=Priority.HIGH,
                          task_ids=urgent_ids)
    q.resume()
    q.results(low + high, timeout=120)
    last_high = max(q.get(h.id).started_at or 0.0 for h in high)
    inversions = sum(1 for info in q.get_many([h.id for h in low])
                     if info is not None and (info.started_at or 0.0) < last_high)
    # README, "Sharded queues": at most one batch from every other shard per worker
    # before it has looked at all shards, plus what long-polls parked on every shard
    # hand out at once. A batch is ≤ concurrency here (fresh workers measure no rate
    # yet, so they prefetch nothing). Serving shards in turn would start ~150 here.
    assert inversions <= workers * concurrency * (2 * shards - 1), inversions


def test_each_shard_journals_and_restarts_on_its_own(make_queue: MakeQueue,
                                                     tmp_path: Path) -> None:
    journal = tmp_path / "sharded.sqlite"
    q = make_queue(shards=2, journal=str(journal),
                   pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=4)])
    files = sorted(p.name for p in tmp_path.glob("*.sqlite"))
    assert files == ["sharded.shard-0-of-2.sqlite", "sharded.shard-1-of-2.sqlite"]
    handles = q.enqueue_many([Probe(value=i, sleep_s=0.01) for i in range(200)])
    shard = testing.actors(q).shards[1]
    os.kill(ray.get(shard.pid.remote()), signal.SIGKILL)  # a shard dies mid-run
    assert q.results(handles, timeout=120) == list(range(200))  # none lost
    assert q.stats().by_state["succeeded"] == 200
    q.shutdown(timeout=5)
    # Starting the same journal with another shard count would hide tasks: refused.
    with pytest.raises(ValueError, match="another shard count"):
        rayqueue.init(f"t-{uuid.uuid4().hex[:8]}", shards=3, journal=str(journal))
    with pytest.raises(ValueError, match="shards: must be an int"):
        rayqueue.init("never", shards=0)


def test_a_batch_split_over_shards_fails_only_where_it_failed(make_queue: MakeQueue) -> None:
    """A full shard refuses its part; the other shard's part is in: the caller is told
    exactly which ids are in, so a retry never enqueues a task twice."""
    q = make_queue(shards=2, config=rayqueue.QueueConfig(max_size=2),  # 1 task a shard
                   pools=[PoolConfig(name="elsewhere", min_workers=0, max_workers=1)])
    on = {s: [i for i in (f"p-{n}" for n in range(200)) if shard_of(i, 2) == s]
          for s in (0, 1)}
    ids = on[0][:2] + on[1][:1]  # two for shard 0, which holds one: its part is refused
    with pytest.raises(rayqueue.PartialEnqueueError) as err:
        q.enqueue_many([Probe(value=i) for i in range(3)], task_ids=ids)
    assert err.value.enqueued == on[1][:1] and sorted(err.value.failed) == sorted(on[0][:2])
    assert isinstance(err.value.cause, rayqueue.QueueFullError)
    assert q.stats().size == 1

    # Coalesced single enqueues settle one by one: each caller learns its own fate.
    handles = [q.enqueue(Probe(value=i), task_id=i_d, wait=False)
               for i, i_d in enumerate([on[0][2], on[0][3], on[1][1]])]
    outcomes = []
    for handle in handles:
        try:
            handle.sent(timeout=30)
            outcomes.append("in")
        except rayqueue.QueueFullError:
            outcomes.append("full")
    assert outcomes[0] == "in" and outcomes[1] == "full"  # shard 0 had room for one
    assert outcomes[2] == "full"  # shard 1 is full since the batch above
    assert q.stats().size == 2


def test_a_shard_lost_for_good_comes_back_from_its_journal(make_queue: MakeQueue,
                                                           tmp_path: Path) -> None:
    """Shard 1 is gone for good (as when Ray cannot place it again) while shard 0 lives:
    init over the same journals re-creates it, and replaces the pool manager whose
    workers held handles on the dead actor."""
    journal = str(tmp_path / "lost.sqlite")
    name = f"t-{uuid.uuid4().hex[:8]}"
    pools = [PoolConfig(min_workers=1, max_workers=1, concurrency=2)]
    q = make_queue(name=name, shards=2, journal=journal, pools=pools)
    q.pause()
    handles = q.enqueue_many([Probe(value=i) for i in range(40)])  # in both shards
    old_pool = ray.get(testing.actors(q).pool.pid.remote())
    ray.kill(testing.actors(q).shards[1], no_restart=True)
    # ray.kill only asks: a call sent now may still be served before the actor dies.
    wait_for(lambda: _dead(testing.actors(q).shards[1]), what="shard 1 to be gone")
    q.retry_timeout = 1.0  # (a dead actor looks like a restarting one: retried meanwhile)
    with pytest.raises(rayqueue.QueueUnavailableError):
        q.get(next(h.id for h in handles if shard_of(h.id, 2) == 1))
    again = rayqueue.init(name, shards=2, journal=journal, pools=pools)
    assert ray.get(testing.actors(again).pool.pid.remote()) != old_pool  # the orphan was replaced
    again.resume()
    assert again.results(handles, timeout=60) == list(range(40))  # none lost


def test_a_shut_down_queue_is_resharded_and_keeps_every_task(make_queue: MakeQueue,
                                                             tmp_path: Path) -> None:
    journal = str(tmp_path / "grow.sqlite")
    name = f"t-{uuid.uuid4().hex[:8]}"
    pools = [PoolConfig(min_workers=1, max_workers=1, concurrency=4)]
    q = make_queue(name=name, shards=2, journal=journal, pools=pools)
    done = q.enqueue_many([Probe(value=i) for i in range(50)])
    assert q.results(done, timeout=60) == list(range(50))
    dead = q.enqueue(Probe(value=1, fail_times=9))
    with pytest.raises(rayqueue.TaskFailedError):
        dead.result(timeout=60)
    waiting = q.enqueue_many([Manual(name=f"m{i}") for i in range(30)])  # no worker's pool
    q.shutdown(timeout=5)

    assert cli(["-q", name, "reshard", "--journal", journal, "--shards", "3"]) == 0
    with pytest.raises(ValueError, match="another shard count"):
        rayqueue.init(name, shards=2, journal=journal)
    # It runs nothing (it reads what is stored and dequeues by hand): no worker.
    again = make_queue(name=name, shards=3, journal=journal,
                       pools=[PoolConfig(min_workers=0, max_workers=1, concurrency=4)])
    assert again.results(done, timeout=30) == list(range(50))  # results kept
    assert [d.id for d in again.dead_letters()] == [dead.id]  # and the dead letters
    taken = []
    while (claimed := again.dequeue(pool="manual", timeout=1)) is not None:
        assert claimed.ack("ok")
        taken.append(claimed.id)
    assert sorted(taken) == sorted(h.id for h in waiting)  # nothing waiting was lost
    per_shard = _ids_per_shard(again)
    assert all(shard_of(i, 3) == s for s, ids in enumerate(per_shard) for i in ids)
