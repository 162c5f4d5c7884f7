"""Quiet by default (issue 16, item 3): a driver that forwards its actors' output (Ray's
default, ``log_to_driver=True``) sees no per-task retry lines, no scale steps, no Ray
deprecation warnings and no Ray warnings about rayqueue's calls (a blocking get in an
async actor), while retries still happen and count.

The driver is a process of its own attached to the session's Ray (this process runs
with ``log_to_driver=False``); its output is counted line by line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import ray

REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys, ray, rayqueue
import ray.cloudpickle as cloudpickle
from rayqueue import PoolConfig
from tests.integration import probe_tasks
from tests.integration.probe_tasks import Probe

cloudpickle.register_pickle_by_value(probe_tasks)
ray.init(address=sys.argv[1])  # log_to_driver: Ray's default, on
q = rayqueue.init(sys.argv[2], journal=sys.argv[3],
                  pools=[PoolConfig(min_workers=0, max_workers=2, concurrency=2)])
handles = q.enqueue_many([Probe(value=i, fail_times=1) for i in range(10)])
assert q.results(handles, timeout=90) == list(range(10))
attempts = [i.attempts for i in q.get_many([h.id for h in handles])]
q.shutdown(timeout=10)
print("ATTEMPTS", json.dumps(attempts), flush=True)
"""


def test_a_forwarding_driver_sees_no_retry_scale_or_deprecation_lines(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    name = f"quiet-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, ray.get_runtime_context().gcs_address, name,
         str(tmp_path / f"{name}.sqlite")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=150, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-40:])
    attempts = json.loads(next(line for line in lines if line.startswith("ATTEMPTS "))[9:])
    assert attempts == [2] * 10  # every task failed once and was retried...
    # ...and the actors' output did reach this driver (a worker's INFO start line)...
    assert any("worker started" in line for line in lines), "\n".join(lines[-40:])
    # ...but without a line per retry, per scale step, or a deprecation warning.
    noisy = [line for line in lines if "retry in" in line or " scaled " in line
             or "DeprecationWarning" in line or "blocking ray.get" in line]
    assert noisy == [], "\n".join(noisy)
