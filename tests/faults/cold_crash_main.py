"""Scenario 14's first half, in its own process and its own Ray: fill a journal, then die
with work in every state: succeeded, scheduled, waiting to retry, leased (two tasks whose
first attempt would run for ten minutes hold the only worker's two slots) and ready
(a backlog behind them).

Usage: python cold_crash_main.py JOURNAL LEDGER TEMP_DIR. Prints one JSON line with the
states and due times of every acknowledged task, then SIGKILLs itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import ray
import ray.cloudpickle as cloudpickle

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger_tasks
from tests.faults.ledger import rows as ledger_rows
from tests.faults.ledger_tasks import SlowRetry, Work


def main(journal: str, ledger: str, temp: str) -> None:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp,
             log_to_driver=False)
    q = rayqueue.init("cold", journal=journal, config=QueueConfig(lease_ttl=5),
                      pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=2)])
    done = q.enqueue_many([Work(ledger=ledger, value=i) for i in range(200)])
    later = q.enqueue_many([Work(ledger=ledger, value=i) for i in range(20)], delay=3_600)
    retry = q.enqueue_many([SlowRetry(ledger=ledger, value=i, how="fail", how_times=1)
                            for i in range(10)])
    handles = done + later + retry
    pause = threading.Event()
    states = _wait(q, handles, lambda s: s == {"succeeded": 200, "scheduled": 20,
                                               "failed": 10}, pause)
    hold = q.enqueue_many([Work(ledger=ledger, value=1000 + i, first_seconds=600)
                           for i in range(2)])
    states = _wait(q, hold, lambda s: s == {"leased": 2}, pause)
    backlog = q.enqueue_many([Work(ledger=ledger, value=2000 + i) for i in range(20)])
    handles += hold + backlog
    # Both held tasks started (in the ledger): the crash kills running attempts.
    end = time.monotonic() + 60
    while not {h.id for h in hold} <= {r["task_id"] for r in ledger_rows(ledger)} and (
            time.monotonic() < end):
        pause.wait(0.1)
    states = _wait(q, handles, lambda s: s.get("leased", 0) >= 2 and s.get("ready", 0) >= 1,
                   pause)
    infos = [i for i in q.get_many([h.id for h in handles]) if i]
    tasks = {i.id: [i.state, i.due_at] for i in infos}
    # What the unfinished ones must return once run again after the cold restart.
    expected = {h.id: 1000 + i for i, h in enumerate(hold)}
    expected.update({h.id: 2000 + i for i, h in enumerate(backlog)})
    print(json.dumps({"states": states, "tasks": tasks, "expected": expected}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the whole cluster dies with its driver


def _wait(q: Any, handles: list[Any], done: Any, pause: threading.Event) -> dict[str, int]:
    end = time.monotonic() + 120
    states: dict[str, int] = {}
    while time.monotonic() < end:
        states = {}
        for info in q.get_many([h.id for h in handles]):
            if info:
                states[info.state] = states.get(info.state, 0) + 1
        if done(states):
            break
        pause.wait(0.1)
    return states


if __name__ == "__main__":
    main(*sys.argv[1:4])
