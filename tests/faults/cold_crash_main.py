"""Scenario 14's first half, in its own process and its own Ray: fill a journal, then die.

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

import ray
import ray.cloudpickle as cloudpickle

import rayqueue
from rayqueue import PoolConfig
from tests.faults import ledger_tasks
from tests.faults.ledger_tasks import SlowRetry, Work


def main(journal: str, ledger: str, temp: str) -> None:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp,
             log_to_driver=False)
    q = rayqueue.init("cold", journal=journal,
                      pools=[PoolConfig(min_workers=1, max_workers=2, concurrency=4)])
    done = q.enqueue_many([Work(ledger=ledger, value=i) for i in range(200)])
    later = q.enqueue_many([Work(ledger=ledger, value=i) for i in range(20)], delay=3_600)
    retry = q.enqueue_many([SlowRetry(ledger=ledger, value=i, how="fail", how_times=1)
                            for i in range(10)])
    handles = done + later + retry
    end = time.monotonic() + 120
    pause = threading.Event()
    while time.monotonic() < end:
        infos = [i for i in q.get_many([h.id for h in handles]) if i]
        states: dict[str, int] = {}
        for info in infos:
            states[info.state] = states.get(info.state, 0) + 1
        if states == {"succeeded": 200, "scheduled": 20, "failed": 10}:
            break
        pause.wait(0.1)
    tasks = {i.id: [i.state, i.due_at] for i in infos}
    print(json.dumps({"states": states, "tasks": tasks}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the whole cluster dies with its driver


if __name__ == "__main__":
    main(*sys.argv[1:4])
