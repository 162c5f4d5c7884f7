"""Scenario 8 in its own Ray: run tasks while Ray drops 25% of actor-call requests and
replies (up to 100), then print what the history checker found as one JSON line.

Usage: RAY_testing_rpc_failure=... python lossy_rpc_main.py TMP_DIR
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import ray
import ray.cloudpickle as cloudpickle

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work

TOTAL = 300


def main(tmp: str) -> None:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="rqlossy-", dir="/tmp"))
    path = str(Path(tmp) / "ledger.sqlite")
    q = rayqueue.init("lossy", journal=str(Path(tmp) / "q.sqlite"),
                      config=QueueConfig(lease_ttl=3), heartbeat_s=0.5,
                      pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=2)])
    handles = []
    for start in range(0, TOTAL, 20):
        ids = [f"l{i}" for i in range(start, start + 20)]
        handles += q.enqueue_many([Work(ledger=path, value=i) for i in range(20)], task_ids=ids)
    infos = [i for i in q._wait([h.id for h in handles], 240) if i]
    history = ledger.check(path, infos)
    print(json.dumps({
        "total": TOTAL,
        "states": dict(history.states),
        "unique_ids": len(set(q._read("debug_task_ids"))),
        "lost": len(history.lost),
        "undercounted": len(history.undercounted),
        "duplicates": history.duplicates,
        "dead": [(i.reason, i.error_type, i.lost_attempts) for i in infos if i.state == "dead"],
    }), flush=True)
    q.shutdown(timeout=2)
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
