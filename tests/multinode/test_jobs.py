"""`ray job submit` of the demo against a `ray start --head` with token auth on, then a
second driver attaching to the same named queue.

The head is started with its own temp dir, ports and token, bound to 127.0.0.1, and
stopped by PID (its processes and their children), never with `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

pytestmark = pytest.mark.multinode

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tree(roots: set[int]) -> set[int]:
    """``roots`` and every process descended from them."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                parents[int(proc.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    found = set(roots)
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def _ours(temp: str) -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if temp.encode() in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
            except OSError:
                continue
    return _tree(pids)


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    temp = tempfile.mkdtemp(prefix="rq-head-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    port, dash = free_port(), free_port()
    # The head's agents get ports of their own too: the job agent's default (52365) is
    # taken while another test's cluster runs (make test runs two multi-node tests at
    # once), and a job agent that cannot bind leaves "No available agent" for good.
    agents = [f"--{flag}={free_port()}" for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port")]
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
         "--num-cpus=4", "--disable-usage-stats", *agents],
        env=env, check=True, capture_output=True, text=True, timeout=120)
    try:
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}",
               "temp": temp, **{k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    finally:
        for pid in _ours(temp):  # what this fixture started, by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(400)
def test_demo_as_a_ray_job_with_token_auth_and_a_second_driver_attaches(
        head: dict[str, str]) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": head["RAY_AUTH_MODE"],
           "RAY_AUTH_TOKEN": head["RAY_AUTH_TOKEN"]}
    env.pop("RAY_ADDRESS", None)
    submit = [str(BIN / "ray"), "job", "submit", "--address", head["dashboard"],
              "--working-dir", str(REPO), "--", sys.executable, "-m",
              "rayqueue.examples.demo"]
    # A head node's job agent registers a moment after `ray start` returns (longer on a
    # busy machine); until then Ray refuses the submission, before making any job, with
    # "No available agent to submit job, please try again later". Ask again, as it says.
    deadline = time.monotonic() + 120
    while True:
        job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300,
                             check=False, cwd=REPO)
        if ("No available agent to submit job" not in job.stdout + job.stderr
                or time.monotonic() > deadline):
            break
        threading.Event().wait(1.0)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "queue 'shop' stays up on the cluster" in job.stdout
    assert "succeeded" in job.stdout

    attach = subprocess.run(
        [sys.executable, "-c",
         "import json, rayqueue; q = rayqueue.connect('shop', address="
         f"'{head['gcs']}'); s = q.stats(); print(json.dumps([s.by_state, "
         "[w.pool for w in q.workers()]])); q.shutdown(timeout=5)"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert attach.returncode == 0, attach.stderr[-3000:]
    by_state, _ = json.loads(attach.stdout.strip().splitlines()[-1])
    assert by_state["succeeded"] >= 3000 and by_state["dead"] == 2

    # Without the token, the cluster refuses a client.
    env_no = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong"}
    env_no.pop("RAY_ADDRESS", None)
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", head["dashboard"]],
        env=env_no, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0
