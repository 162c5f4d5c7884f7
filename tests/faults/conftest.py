"""Fault-suite fixtures: a ledger file per test, queues on the product default (a SQLite
journal, ``synchronous=FULL``), and helpers that settle a run and prove a fault happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import testing
from tests.faults import ledger
from tests.procs import alive
from tests.ray_fixtures import wait_for


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    return ledger.create(str(tmp_path / "ledger.sqlite"))


def settle(q: rayqueue.TaskQueue[Any], handles: Sequence[rayqueue.TaskHandle[Any]],
           path: str, timeout: float = 90.0, **check: Any) -> ledger.History:
    """Wait until every handle's task is finished, then run the history checker
    (``check`` goes to :func:`ledger.check`: ``expected``, ``may_die``)."""
    infos = q.wait([h.id for h in handles], timeout)
    assert all(i is not None for i in infos), "a task vanished from the queue"
    return ledger.check(path, [i for i in infos if i is not None], **check)


def values(handles: Sequence[rayqueue.TaskHandle[Any]], tasks: Sequence[Any]) -> dict[str, Any]:
    """What each enqueued Work task should return, by task id."""
    return {h.id: t.value for h, t in zip(handles, tasks, strict=True)}


def pid_of_worker(q: rayqueue.TaskQueue[Any], worker_id: str) -> int:
    import ray

    pid = ray.get(testing.actors(q).pool.worker_pid.remote(worker_id))
    assert pid, f"no worker {worker_id}"
    return int(pid)




def wait_gone(pids: Iterable[int], timeout: float = 30.0, what: str = "") -> None:
    """The fault happened: every process in ``pids`` is gone (polled, bounded)."""
    pids = set(pids)
    assert pids, "no process to watch"
    wait_for(lambda: not any(alive(p) for p in pids), timeout=timeout,
             what=what or f"processes {sorted(pids)} gone")


def in_queue_actor(q: rayqueue.TaskQueue[Any], fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(actor instance)`` inside the queue actor (Ray's ``__ray_call__``), to
    read a test hook's state, such as FaultyStorage's count of injected faults."""
    import ray

    return ray.get(testing.actors(q).queue.__ray_call__.remote(fn))


def injected_faults(q: rayqueue.TaskQueue[Any]) -> dict[str, int]:
    """Faults the queue actor's FaultyStorage has injected so far, by kind."""
    counts: dict[str, int] = in_queue_actor(q, lambda actor: dict(actor._storage.injected))
    return counts


def ray_logs_with(*needles: str) -> list[str]:
    """Lines of this Ray session's process logs (actors' stderr) that hold every needle.
    A dead process's log may have been moved to ``logs/old`` already (Ray's log monitor
    does that, at its own time), so both places are read."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    found: list[str] = []
    for log in [*logs.glob("*.err"), *logs.glob("old/*.err")]:
        with open(log, errors="replace") as f:
            found += [line for line in f if all(n in line for n in needles)]
    return found
