"""The Ray runtime end to end on a shared local Ray: order, time, retries, faults, scaling."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import OffsetClock, PoolConfig, Priority, QueueConfig, testing
from tests.integration.probe_tasks import (
    AsyncProbe,
    Hung,
    Manual,
    NeedsGpu,
    Probe,
    Special,
)
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
ONE_SLOT = PoolConfig(min_workers=0, max_workers=2, concurrency=1)
#: the queue of the tests that only enqueue and read their own tasks (module_queue)
MODULE_QUEUE = {"pools": [PoolConfig(min_workers=0, max_workers=1, concurrency=1)]}
Queue = rayqueue.TaskQueue[Any]


def test_results_are_typed_and_async_tasks_run(module_queue: Queue) -> None:
    q = module_queue
    handles = q.enqueue_many([Probe(value=i) for i in range(20)])
    assert q.results(handles, timeout=60) == list(range(20))
    assert q.enqueue(AsyncProbe(text="abc")).result(timeout=30) == "ABC"


def test_priority_order_holds_across_workers(make_queue: MakeQueue) -> None:
    # Its own queue: no worker is there yet when the tasks fall due (the lows fall due
    # a moment before the highs, and a waiting worker would rightly take them).
    q = make_queue(pools=[ONE_SLOT])
    low = q.enqueue_many([Probe(value=i) for i in range(15)], priority=Priority.LOW, delay=1.0)
    high = q.enqueue_many([Probe(value=i) for i in range(15)], priority=Priority.HIGH,
                          delay=1.0)
    q.results(low + high, timeout=60)
    started_high = [q.get(h.id).started_at or 0 for h in high]
    started_low = [q.get(h.id).started_at or 0 for h in low]
    assert max(started_high) <= min(started_low)


def test_retries_with_backoff_end_in_success_or_dead_letters(module_queue: Queue) -> None:
    q = module_queue
    ok = q.enqueue(Probe(value=7, fail_times=2))
    bad = q.enqueue(Probe(value=8, fail_times=5))
    assert ok.result(timeout=60) == 7
    info = q.get(ok.id)
    assert info.attempts == 3 and info.state == "succeeded"
    with pytest.raises(rayqueue.TaskFailedError) as err:
        bad.result(timeout=60)
    assert err.value.state == "dead" and err.value.error_type == "RuntimeError"
    dead = [d for d in q.dead_letters() if d.id in (ok.id, bad.id)]  # a shared queue
    assert [d.id for d in dead] == [bad.id]
    assert dead[0].reason == "max_attempts" and "planned failure" in (dead[0].error_message or "")
    assert "Traceback" in (dead[0].traceback or "")


def test_scheduled_tasks_and_interval_and_cron_fire_once(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[ONE_SLOT], clock=OffsetClock())
    later = q.enqueue(Probe(value=1), delay=60)
    assert q.get(later.id).state == "scheduled"
    cron = q.schedule(Probe(value=2), cron="*/5 * * * *", tz="Europe/Berlin", schedule_id="c")
    testing.advance_clock(q, 301)
    assert later.result(timeout=30) == 1
    fired = wait_for(lambda: _fired(q, "c"), what="the cron run")
    assert len(fired) == 1
    q.join(timeout=30)
    assert len(_fired(q, "c")) == 1  # once, not again while nothing advanced
    q.cancel(cron)
    every = q.schedule(Probe(value=3), every=600, schedule_id="i")

    testing.advance_clock(q, 601)
    wait_for(lambda: len(_fired(q, "i")) == 1, what="the interval run")
    q.cancel(every)


def _fired(q: rayqueue.TaskQueue[Any], schedule_id: str) -> list[str]:

    stats = testing.task_ids(q)
    return [i for i in stats if i.startswith(f"{schedule_id}@")]


def test_dequeue_and_peek_from_the_client(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[ONE_SLOT])
    assert q.dequeue(pool="manual") is None
    q.enqueue(Manual(name="low"), priority=Priority.LOW)
    urgent = q.enqueue(Manual(name="urgent"), priority=Priority.CRITICAL)
    peeked = q.peek(pool="manual")
    assert peeked is not None and peeked.id == urgent.id and peeked.state == "ready"
    claimed = q.dequeue(pool="manual", timeout=1)
    assert claimed is not None and claimed.id == urgent.id and claimed.attempt == 1
    assert isinstance(claimed.task, Manual) and claimed.task.name == "urgent"
    assert q.get(urgent.id).state == "leased"
    assert claimed.ack(claimed.task.execute())
    assert urgent.result(timeout=5) == "hello urgent"
    assert not claimed.ack("again")  # a second ack is fenced
    other = q.dequeue(pool="manual", timeout=1)
    assert other is not None
    other.release()
    assert q.get(other.id).state == "ready" and q.get(other.id).attempts == 0


def test_worker_killed_mid_task_runs_it_again(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=2, concurrency=1)],
                   config=QueueConfig(lease_ttl=30))
    handle = q.enqueue(Probe(value=5, block_first_s=60))
    info = wait_for(lambda: (i := q.get(handle.id)).state == "leased" and i, what="lease")
    import ray

    pid = ray.get(testing.actors(q).pool.worker_pid.remote(info.worker))
    os.kill(pid, signal.SIGKILL)
    assert handle.result(timeout=60) == 5  # long before the 30 s lease would expire
    done = q.get(handle.id)
    assert done.attempts == 2 and done.lost_attempts == 1
    assert done.worker is None and q.size() == 0


def test_hung_task_is_killed_by_its_timeout(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    handle = q.enqueue(Hung())
    pid = handle.result(timeout=60)
    info = q.get(handle.id)
    assert info.attempts == 2 and info.state == "succeeded"
    assert info.error_type == "TaskTimeoutError"  # the first attempt's error is kept
    assert pid > 0
    wait_for(lambda: q.metrics().pools and q.metrics().pools[0].deaths >= 1,
             what="the killed worker counted")


def test_scales_up_under_backlog_and_down_by_draining(make_queue: MakeQueue) -> None:
    pool = PoolConfig(min_workers=0, max_workers=3, concurrency=1, target_tasks_per_worker=2,
                      downscale_delay_s=0.5)
    q = make_queue(pools=[pool])
    # Paused, the backlog asks for no worker: a scaling cycle sees the 40 ready tasks
    # (the pool's ready count is set in the cycle that decides) and wants none.
    q.pause()
    q.enqueue_many([Probe(value=i, sleep_s=0.1) for i in range(40)])
    seen = wait_for(lambda: next((p for p in q.pools() if p.ready == 40), None),
                    what="a scaling cycle that saw the paused backlog")
    assert (seen.desired, seen.workers, q.workers()) == (0, 0, [])
    q.resume()
    wait_for(lambda: len(q.workers()) == 3, what="three workers")
    q.join(timeout=60)
    wait_for(lambda: not q.workers(), what="pool drained to zero")
    history = wait_for(lambda: (m := q.metrics()).worker_history and m.worker_history[-1][2] == 0
                       and m.worker_history, what="history down to zero")
    counts = [n for _, _, n in history]
    assert max(counts) == 3 and counts[-1] == 0
    assert q.stats().by_state["succeeded"] == 40


def test_pools_are_routed_by_resources(make_queue: MakeQueue) -> None:
    pools = [
        PoolConfig(name="default", max_workers=1, concurrency=1),
        PoolConfig(name="special", max_workers=1, concurrency=1, resources={"special": 1}),
        PoolConfig(name="gpu", max_workers=1, num_gpus=1),
    ]
    q = make_queue(pools=pools)
    special = q.enqueue(Special())
    gpu = q.enqueue(NeedsGpu())
    assert "/special-" in special.result(timeout=60)
    assert q.enqueue(Probe(value=1)).result(timeout=60) == 1
    assert q.get(gpu.id).state == "ready"  # no node has a GPU: its worker never starts
    assert {w.pool: w.state for w in q.workers()}.get("gpu") == "starting"
    # Shutting down does not wait out its drain timeout for the worker that never
    # started (it did, plus 5 s: this one would outlast the test's 120-s limit).
    q.shutdown(timeout=300)


def test_metrics_snapshot_agrees_with_what_ran(make_queue: MakeQueue,
                                              module_queue: Queue) -> None:
    q = make_queue(pools=[ONE_SLOT])
    # The module's queue beside it: the cluster's one metrics actor keeps each apart.
    other = module_queue
    name = Probe.task_name
    before = other.metrics().counts.get(name, {}).get("succeeded", 0)
    other.results(other.enqueue_many([Probe(value=i) for i in range(3)]), timeout=60)
    good = q.enqueue_many([Probe(value=i) for i in range(10)])
    flaky = q.enqueue(Probe(value=1, fail_times=1))
    dead = q.enqueue(Probe(value=2, fail_times=9))
    q.results([*good, flaky], timeout=60)
    with pytest.raises(rayqueue.TaskFailedError):
        dead.result(timeout=60)
    expected = {"succeeded": 11, "retried": 3, "dead": 1}
    snap = wait_for(lambda: (s := q.metrics()).counts.get(name) == expected and s,
                    what=f"counts {expected}")
    assert snap.enqueued[name] == 12
    assert sum(snap.wait_counts) == 11 + 3 + 1  # one start per attempt
    assert sum(snap.run_counts) == 15
    assert snap.depth["succeeded"] == 11 and snap.depth["dead"] == 1
    wait_for(lambda: other.metrics().counts.get(name, {}).get("succeeded", 0) >= before + 3,
             what="the other queue's counts")
    shared = testing.actors(q).metrics
    assert {q.name, other.name} <= set(ray.get(shared.queues.remote()))
    q.shutdown()  # the shared actor forgets it (a call not waited for), and only it
    wait_for(lambda: q.name not in ray.get(shared.queues.remote()),
             what="the metrics actor to forget the queue shut down")
    assert other.name in ray.get(shared.queues.remote())


def test_prometheus_endpoint_carries_rayqueue_series(make_queue: MakeQueue,
                                                     ray_cluster: dict[str, Any]) -> None:
    import urllib.request

    q = make_queue(pools=[ONE_SLOT])
    q.results(q.enqueue_many([Probe(value=i) for i in range(3)]), timeout=60)
    url = f"http://127.0.0.1:{ray_cluster['metrics_port']}/metrics"

    def succeeded_series() -> tuple[str, list[str]] | None:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
        lines = [ln for ln in text.splitlines()
                 if ln.startswith("ray_rayqueue_tasks_finished_total{")
                 and f'queue="{q.name}"' in ln and 'outcome="succeeded"' in ln]
        return (text, lines) if lines and float(lines[0].split()[-1]) == 3.0 else None

    text, lines = wait_for(succeeded_series, timeout=60, what="3 successes on the endpoint")
    assert f'task="{Probe.task_name}"' in lines[0]
    assert "ray_rayqueue_queue_depth" in text and "ray_rayqueue_task_run_seconds" in text


def test_bad_input_gets_typed_errors_through_ray(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[ONE_SLOT], config=QueueConfig(max_size=2))
    import datetime as dt

    with pytest.raises(rayqueue.InvalidPriorityError):
        q.enqueue(Probe(), priority=1000)
    with pytest.raises(rayqueue.InvalidScheduleError):
        q.enqueue(Probe(), run_at=dt.datetime(2030, 1, 1))  # naive
    with pytest.raises(rayqueue.InvalidScheduleError):
        q.schedule(Probe(), cron="every monday")
    q.enqueue(Probe(value=1), task_id="same", delay=60)
    with pytest.raises(rayqueue.DuplicateTaskError):  # the queue's refusal: at sent()
        q.enqueue(Probe(value=2), task_id="same").sent(timeout=30)
    with pytest.raises(rayqueue.QueueFullError):
        q.enqueue_many([Probe(), Probe()], delay=60)
    assert q.size() == 1
    q.close()
    with pytest.raises(rayqueue.QueueClosedError):
        q.enqueue(Probe())
    with pytest.raises(rayqueue.TaskNotFoundError):
        q.get("missing")
    with pytest.raises(rayqueue.QueueUnavailableError):
        rayqueue.connect("no-such-queue")


def test_a_lone_task_costs_an_idle_worker_one_claim(make_queue: MakeQueue,
                                                   tmp_path: Path) -> None:
    """One task at a time on a one-slot worker: the claim that brings the task is the
    only call it costs the worker. Its outcome rides on the next claim (no report call
    beside it), and no prefetch claim goes out while it runs when the reply said
    nothing was left (it would come back empty: a wasted round trip per task). In the
    journal it costs two commits: its enqueue with the lease of the claim that was
    waiting for it, then its outcome."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    q = make_queue(name=name, pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    for _ in range(3):
        q.enqueue(Probe(value=0)).result(timeout=60)

    def counted(reports: int) -> dict[str, tuple[int, int]] | None:
        calls = q.metrics().calls  # (calls, items) by kind; a claim's outcomes count
        return calls if calls.get("report", (0, 0))[1] >= reports else None  # as a report

    def commits() -> int:  # the journal's commit count, read beside the queue actor
        with contextlib.closing(sqlite3.connect(tmp_path / f"{name}.sqlite")) as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    before = wait_for(lambda: counted(3), what="the warm-up's outcomes in the metrics")
    n = 40
    commits0 = commits()
    began = time.monotonic()
    for i in range(n):
        assert q.enqueue(Probe(value=i)).result(timeout=60) == i
    wall = time.monotonic() - began
    written = commits() - commits0
    after = wait_for(lambda: counted(before["report"][1] + n), what="the outcomes counted")
    claims = after["claim"][0] - before["claim"][0]
    # Each task: the claim that brought it (it carried the last one's outcome); beyond
    # that only long-polls that ended empty, one per CLAIM_WAIT_S (1 s) of waiting at
    # most. Before, each task also cost a prefetch claim that came back empty.
    assert claims <= n + int(wall) + 3, (claims, wall)
    # Beyond two a task, a tick's or a heartbeat's commit now and then (at most one a
    # second here). Before, the enqueue and the lease were two commits in a row: 3 a task.
    assert written <= 2 * n + int(wall) + 3, (written, wall)
