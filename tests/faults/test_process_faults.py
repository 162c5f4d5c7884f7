"""RELIABILITY.md scenarios 1-5 and 9: workers, tasks and the pool manager die or stall."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger
from tests.faults.conftest import pid_of_worker, settle
from tests.faults.ledger_tasks import Hangs, Work
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
TWO = PoolConfig(min_workers=2, max_workers=2, concurrency=1)
FAST = QueueConfig(lease_ttl=2.0)


def _leased(q: rayqueue.TaskQueue[Any], ids: list[str]) -> rayqueue.TaskInfo:
    return wait_for(lambda: next((i for i in q.get_many(ids) if i and i.state == "leased"),
                                 None), what="a leased task")


@pytest.mark.parametrize("how", ["sigkill", "ray_kill"])
def test_1_worker_killed_mid_task(make_queue: MakeQueue, ledger_path: str, how: str) -> None:
    q = make_queue(pools=[TWO], config=FAST, heartbeat_s=0.5)
    handles = q.enqueue_many([Work(ledger=ledger_path, value=i, seconds=0.2)
                              for i in range(40)])
    ids = [h.id for h in handles]
    wait_for(lambda: sum(1 for i in q.get_many(ids) if i and i.state == "succeeded") >= 10,
             what="10 completions")
    victim = _leased(q, ids)
    if how == "sigkill":
        os.kill(pid_of_worker(q, victim.worker or ""), signal.SIGKILL)
    else:
        handle = next(w for w in ray.get(q._pool.debug_handles.remote())
                      if w[0] == victim.worker)[1]
        ray.kill(handle, no_restart=True)
    history = settle(q, handles, ledger_path)
    assert history.lost == [] and history.undercounted == []
    assert all(history.executions[i] >= 1 for i in ids)
    assert history.duplicates <= 1
    killed = q.get(victim.id)
    assert killed.state == "succeeded" and killed.lost_attempts == 1
    wait_for(lambda: len([w for w in q.workers() if w.state != "draining"]) == 2,
             what="the pool back at 2 workers")


@pytest.mark.parametrize("how", ["os_exit", "sigkill", "sys_exit", "keyboard", "system_exit"])
def test_2_task_terminates_itself(make_queue: MakeQueue, ledger_path: str, how: str) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)],
                   config=FAST, heartbeat_s=0.5)
    worker = wait_for(q.workers, what="a worker")[0].id
    handle = q.enqueue(Work(ledger=ledger_path, value=1, how=how, how_times=1))
    assert handle.result(timeout=60) == 1  # the second attempt succeeds
    info = q.get(handle.id)
    assert info.attempts == 2
    if how in ("os_exit", "sigkill"):
        assert info.lost_attempts == 1  # the process died: a lost attempt
    else:
        # Caught: the same worker survived and the attempt counted as a failure.
        assert info.lost_attempts == 0
        assert info.error_type in ("SystemExit", "KeyboardInterrupt")
        assert [w.id for w in q.workers()] == [worker]
    history = ledger.check(ledger_path, [info])
    assert history.duplicates == 0 and history.lost == []


def test_3_poison_pill_dies_after_three_lost_attempts(make_queue: MakeQueue,
                                                     ledger_path: str) -> None:
    q = make_queue(pools=[TWO], config=FAST, heartbeat_s=0.5)
    poison = q.enqueue(Work(ledger=ledger_path, how="os_exit"))
    healthy = q.enqueue_many([Work(ledger=ledger_path, value=i) for i in range(100)])
    with pytest.raises(rayqueue.TaskFailedError):
        poison.result(timeout=90)
    dead = q.get(poison.id)
    assert dead.state == "dead" and dead.reason == "worker_lost" and dead.lost_attempts == 3
    assert ledger.starts(ledger_path, poison.id) == 3  # no 4th attempt ever started
    history = settle(q, healthy, ledger_path)
    assert history.lost == [] and history.states["succeeded"] == 100
    pools = wait_for(lambda: (m := q.metrics()).pools and m.pools[0].deaths >= 3 and m.pools,
                     what="three deaths counted")
    assert pools[0].deaths == 3


def test_4_hung_task_is_killed_then_dead_by_timeout(make_queue: MakeQueue,
                                                   ledger_path: str) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=2, concurrency=1)])
    hung = q.enqueue(Hangs(ledger=ledger_path, how="hang"))
    other = q.enqueue(Work(ledger=ledger_path, value=3))
    assert other.result(timeout=60) == 3  # not blocked behind the hung one
    with pytest.raises(rayqueue.TaskFailedError):
        hung.result(timeout=60)
    info = q.get(hung.id)
    assert info.reason == "timeout" and info.attempts == 2
    assert info.error_type == "TaskTimeoutError"
    results = [r for r in ledger.rows(ledger_path) if r["task_id"] == hung.id]
    assert len(results) == 2 and all(r["outcome"] == "started" for r in results)


def test_5_zombie_worker_is_fenced(make_queue: MakeQueue, ledger_path: str) -> None:
    q = make_queue(pools=[TWO], config=FAST, heartbeat_s=0.5)
    handle = q.enqueue(Work(ledger=ledger_path, value=5, first_seconds=3.0))
    first = _leased(q, [handle.id])
    pid = pid_of_worker(q, first.worker or "")
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: q.get(handle.id).attempts >= 2,
                 what="the task re-leased to the other worker")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert handle.result(timeout=60) == 5
    info = q.get(handle.id)
    assert info.attempts == 2 and info.lost_attempts == 1
    history = ledger.check(ledger_path, [info])
    assert history.lost == [] and history.duplicates <= 1


def test_9_pool_manager_dies_and_reconciles(make_queue: MakeQueue, ledger_path: str) -> None:
    pool = PoolConfig(min_workers=4, max_workers=4, concurrency=1)
    q = make_queue(pools=[pool], config=FAST, heartbeat_s=0.5)
    handles = q.enqueue_many([Work(ledger=ledger_path, value=i, seconds=0.05)
                              for i in range(200)])
    ids = [h.id for h in handles]
    wait_for(lambda: sum(1 for i in q.get_many(ids) if i and i.state == "succeeded") >= 20,
             what="20 completions")
    old_pids = [w.pid for w in q.workers() if w.pid]
    manager_pid = ray.get(q._pool.pid.remote())
    os.kill(manager_pid, signal.SIGKILL)
    history = settle(q, handles, ledger_path)
    assert history.lost == [] and history.undercounted == []
    assert history.duplicates <= 4  # at most the tasks in flight at the kill
    # Workers are owned by the manager and die with it; the restarted one makes new ones.
    wait_for(lambda: not any(_alive(p) for p in old_pids), what="old workers gone")
    new = wait_for(lambda: len(w := q.workers()) == 4 and w, what="four new workers")
    assert not {w.pid for w in new} & set(old_pids)
    assert ray.get(q._pool.pid.remote()) != manager_pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
