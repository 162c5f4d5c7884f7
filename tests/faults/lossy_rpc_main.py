"""Scenario 8 in its own Ray: run tasks while Ray drops 25% of actor-call requests and
replies (up to 100), then print what the history checker found as one JSON line.

Usage: RAY_testing_rpc_failure=... python lossy_rpc_main.py TMP_DIR
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import ray
import ray.cloudpickle as cloudpickle

import rayqueue
from rayqueue import PoolConfig, QueueConfig, testing
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work

TOTAL = 300
T = TypeVar("T")


def main(tmp: str) -> None:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    temp = tempfile.mkdtemp(prefix="rqlossy-", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp)
    session = ray._private.worker._global_node.get_session_dir_path()
    path = ledger.create(str(Path(tmp) / "ledger.sqlite"))
    q = rayqueue.init("lossy", journal=str(Path(tmp) / "q.sqlite"),
                      config=QueueConfig(lease_ttl=3), heartbeat_s=0.5,
                      pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=2)])
    handles = []
    # Half with the caller's ids, half with ids the client makes: a retried enqueue must
    # not add a second task either way.
    for start in range(0, TOTAL, 20):
        tasks = [Work(ledger=path, value=i) for i in range(start, start + 20)]
        ids = [f"l{i}" for i in range(start, start + 20)] if start < TOTAL // 2 else None
        handles += q.enqueue_many(tasks, task_ids=ids)
    infos = [i for i in q.wait([h.id for h in handles], 240) if i]
    expected = {h.id: i for i, h in enumerate(handles)}
    history = ledger.check(path, infos, expected=expected)
    runs = Counter(r["result"] for r in ledger.rows(path) if r["outcome"] == "ok")
    print(json.dumps({
        "total": TOTAL,
        "handles": len(handles),
        "states": dict(history.states),
        # Tasks in the queue: TOTAL, or a retried enqueue made a second one.
        "queue_tasks": len(_through_the_loss(lambda: testing.task_ids(q))),
        # Values run more than once (each task has its own value).
        "values_run_twice": sorted(int(v) for v, n in runs.items() if n > 1),
        "problems": history.problems(),
        "duplicates": history.duplicates,
        "injected": _injected(session),
        "dead": [(i.reason, i.error_type, i.lost_attempts) for i in infos if i.state == "dead"],
    }), flush=True)
    # The loss goes on through the shutdown: its calls fail (ActorUnavailableError) and
    # are retried, and a 2-s budget of unreachability ran out once in make test.
    q.shutdown(timeout=15)
    ray.shutdown()
    with sqlite3.connect(str(Path(tmp) / "q.sqlite")) as conn:  # the journal itself
        (rows,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
    print(json.dumps({"journal_rows": rows}), flush=True)


def _through_the_loss(read: Callable[[], T]) -> T:
    """A read of the test's own (``testing`` helpers are plain actor calls, not the
    client's retried ones): Ray drops it too, up to 20 times a process, so retry it."""
    for _ in range(30):
        try:
            return read()
        except ray.exceptions.ActorUnavailableError:
            continue
    return read()


def _injected(session: str) -> dict[str, int]:
    """RPC failures Ray reports it injected, by kind, from every process's log."""
    kinds = {"request": "Inject RPC request failure",
             "response": "Inject RPC response failure for",
             "in_flight": "Inject RPC response failure while request in flight"}
    counts = dict.fromkeys(kinds, 0)
    for log in Path(session, "logs").rglob("*"):  # logs/old too (dead processes)
        if log.is_file():
            with open(log, errors="replace") as f:
                for line in f:
                    for kind, text in kinds.items():
                        counts[kind] += text in line
    return counts


if __name__ == "__main__":
    main(sys.argv[1])
