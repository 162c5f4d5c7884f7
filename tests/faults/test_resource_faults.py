"""RELIABILITY.md scenarios 8 and 25: lossy RPC and leaking task code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig
from tests.faults import ledger
from tests.faults.conftest import settle
from tests.faults.ledger_tasks import Work

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


def test_25_leaking_worker_is_recycled(make_queue: MakeQueue, ledger_path: str) -> None:
    pool = PoolConfig(min_workers=1, max_workers=1, concurrency=1, max_rss_mb=400)
    q = make_queue(pools=[pool])
    handles = q.enqueue_many([Work(ledger=ledger_path, value=i, how="leak") for i in range(12)])
    history = settle(q, handles, ledger_path)
    assert history.lost == [] and history.duplicates == 0
    workers = {r["worker"] for r in ledger.rows(ledger_path)}
    assert len(workers) >= 2  # 50 MB a task: recycled before reaching 600 MB


@pytest.mark.skip(reason="OOM kills by Ray's memory monitor need a small node to be safe; "
                         "on this shared 24 GiB machine we do not provoke one. An OOM kill "
                         "is a worker death: scenarios 1-3 cover that path (lost attempts, "
                         "then dead with reason worker_lost).")
def test_25_oom_killed_attempts_count_as_lost() -> None:
    raise AssertionError("skipped")


@pytest.mark.timeout(400)
def test_8_lossy_rpc_loses_nothing(tmp_path: Path) -> None:
    """Its own Ray (in a subprocess): Ray's RPC failure injection is cluster-wide."""
    script = Path(__file__).with_name("lossy_rpc_main.py")
    # Each lost reply is waited for RAYQUEUE_ANSWER_TIMEOUT_S (30 s by default) before
    # its call is made again: 5 s here, so the losses cost seconds, not minutes.
    # A request Ray fails is held until the GCS says whether the actor died, up to
    # timeout_ms_task_wait_for_death_info (2 s by default) a failure: 0.2 s here, as
    # the actors never die. What is tested is what rayqueue does with the loss, not how
    # long Ray takes to report it.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAYQUEUE_ANSWER_TIMEOUT_S": "5",
           "RAY_timeout_ms_task_wait_for_death_info": "200",
           "RAY_testing_rpc_failure": json.dumps({"CoreWorkerService.grpc_client.PushTask": {
               "num_failures": 20, "req_failure_prob": 25, "resp_failure_prob": 25}})}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    *_, line, last = proc.stdout.strip().splitlines()
    summary, journal = json.loads(line), json.loads(last)
    # Ray did drop calls: its own log lines for each injected failure, of both kinds.
    injected = summary["injected"]
    assert injected["request"] > 0 and injected["response"] + injected["in_flight"] > 0, (
        summary)
    assert summary["handles"] == summary["total"]
    assert summary["states"] == {"succeeded": summary["total"]}, summary
    assert summary["problems"] == {}, summary  # lost, dead, results, overwrites...
    # Idempotent enqueue under loss: no second task, no second journal row, for ids given
    # by the caller or made by the client.
    assert summary["queue_tasks"] == summary["total"] == journal["journal_rows"], (summary, journal)
    # Replayed reports are idempotent; re-runs come only from a lost claim reply or a
    # lease that expired, bounded by the injected failures (20 a process).
    assert len(summary["values_run_twice"]) <= summary["duplicates"] <= 20, summary
