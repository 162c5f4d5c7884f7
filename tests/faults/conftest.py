"""Fault-suite fixtures: a ledger file per test and a helper to settle and check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from tests.faults import ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


def settle(q: rayqueue.TaskQueue[Any], handles: Sequence[rayqueue.TaskHandle[Any]],
           path: str, timeout: float = 90.0) -> ledger.History:
    """Wait until every handle's task is finished, then run the history checker."""
    infos = q._wait([h.id for h in handles], timeout)
    assert all(i is not None for i in infos), "a task vanished from the queue"
    return ledger.check(path, [i for i in infos if i is not None])


def pid_of_worker(q: rayqueue.TaskQueue[Any], worker_id: str) -> int:
    import ray

    pid = ray.get(q._pool.worker_pid.remote(worker_id))
    assert pid, f"no worker {worker_id}"
    return int(pid)
