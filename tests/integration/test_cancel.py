"""Cancelling running tasks and reading their progress, on a real Ray (issue 17, 3-4)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig, TaskCancelledError
from tests.integration.probe_tasks import AsyncWaits, CoopWaits, HungWaits, Probe
from tests.procs import alive
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
ONE_WORKER = PoolConfig(min_workers=1, max_workers=1, concurrency=1)
#: the queue of the tests that only enqueue and read their own tasks (module_queue)
MODULE_QUEUE = {"pools": [ONE_WORKER]}


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _starts(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines() if line.startswith("start ")]


@pytest.mark.parametrize(("task_cls", "seen"), [(AsyncWaits, "cancelled"),
                                                 (CoopWaits, "saw-cancel")])
def test_running_task_is_cancelled_and_never_runs_again(
        module_queue: rayqueue.TaskQueue[Any], tmp_path: Path, task_cls: Any, seen: str,
) -> None:
    q = module_queue
    # Twice: a worker runs the first task of a class apart from the rest (its class is
    # resolved then), so both paths are cancelled.
    for n in range(2):
        path = tmp_path / f"notes-{n}"
        handle = q.enqueue(task_cls(path=str(path)))
        # progress: reported by the running task, read through the handle
        info = wait_for(lambda h=handle: (i := h.info()).progress == 0.5 and i,
                        what="progress 0.5")
        assert info.state == "leased" and info.progress_message == "halfway"
        assert handle.cancel() == "cancelled"
        with pytest.raises(TaskCancelledError) as err:
            handle.result(timeout=30)
        assert err.value.state == "cancelled"
        wait_for(lambda p=path: seen in _lines(p), what="the attempt saw its cancel")
        # the one slot is free again, and the cancelled task is not retried meanwhile
        assert q.enqueue(Probe(value=n)).result(timeout=30) == n
        done = q.get(handle.id)
        assert done.state == "cancelled" and done.attempts == 1 and done.lost_attempts == 0
        assert len(_starts(path)) == 1


def test_hung_sync_task_force_cancel_kills_its_worker(
        make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue(pools=[ONE_WORKER])
    path = tmp_path / "notes"
    handle = q.enqueue(HungWaits(path=str(path)))
    (line,) = wait_for(lambda: _starts(path), what="the task started")
    pid = int(line.split()[1])
    assert alive(pid) and pid != os.getpid()
    assert handle.cancel(force=True) == "cancelled"
    with pytest.raises(TaskCancelledError):
        handle.result(timeout=30)
    wait_for(lambda: not alive(pid), what="the hung worker's process is gone")
    assert q.enqueue(Probe(value=7)).result(timeout=60) == 7  # a replacement runs work
    done = q.get(handle.id)
    assert done.state == "cancelled" and done.attempts == 1
    assert len(_starts(path)) == 1  # never run again
