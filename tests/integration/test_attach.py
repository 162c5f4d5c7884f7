"""Attach, never guess (issue 16, item 1): ``connect``, ``queues`` and the CLI attach to a
running Ray cluster, refuse to pick one of several, never start one, and list queues.

Two more clusters run beside the session's, each a process of its own
(``tests.integration.cluster_main``), both with a queue named ``imgs``; the checks that
attach run in fresh processes too (one Ray per process), and the clusters are stopped by
closing their stdin (or killing them by PID), never with ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue.clusters import local_clusters

REPO = Path(__file__).resolve().parents[2]
#: Ray's default temp dir, where a cluster that ray.init starts unasked keeps its session
#: (this suite's own clusters all have private temp dirs).
RAY_DEFAULT = "/tmp/ray/"

#: A process that attaches and prints what it found (or the error it got) as JSON.
PROBE = """
import json, sys, rayqueue
try:
    kwargs = {"address": sys.argv[2]} if len(sys.argv) > 2 else {}
    q = rayqueue.connect(sys.argv[1], **kwargs)
    out = {"ok": True, "queues": [e.name for e in rayqueue.queues()],
           "size": q.size()}
except rayqueue.RayQueueError as err:
    out = {"ok": False, "error": type(err).__name__, "message": str(err),
           "addresses": getattr(err, "addresses", None), "queues": getattr(err, "queues", None)}
print("RESULT", json.dumps(out))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("RAY_AUTH_MODE", "disabled")
    return {**env, **extra}


def _probe(*args: str, **env: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=_env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=90, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):]), done.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rayqueue.cli", *args], env=_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=90, check=False)


class _Cluster:
    """A Ray cluster in a process of its own, with the queues named."""

    def __init__(self, queues: list[str]) -> None:
        self.temp = tempfile.mkdtemp(prefix="rq-attach-", dir="/tmp")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.cluster_main", self.temp, *queues],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=_env(), cwd=REPO)
        self.output: list[str] = []
        self.address: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("READY "):
                self.address = line.split()[1]
                self._ready.set()
        self._ready.set()  # it exited: wait() reports it

    def wait(self, timeout: float = 90.0) -> str:
        if not self._ready.wait(timeout) or self.address is None:
            raise AssertionError("the cluster did not start: " + "".join(self.output)[-3000:])
        return self.address

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # it shuts its Ray down and exits
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by its PID; Ray's processes share its fate
            self.proc.wait(timeout=30)


@pytest.fixture
def two_clusters() -> Iterator[tuple[str, str]]:
    """Two more Ray clusters on this machine: A runs queue ``imgs``; B ``imgs`` and
    ``other``."""
    a, b = _Cluster(["imgs"]), _Cluster(["imgs", "other"])
    try:
        yield a.wait(), b.wait()
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(300)
def test_connect_and_the_cli_refuse_to_guess_and_attach_by_address(
        two_clusters: tuple[str, str]) -> None:
    a, b = two_clusters
    before = {c.address for c in local_clusters()}
    assert {a, b} <= before  # (the session's own Ray may run too)

    # Several clusters here and no address: a typed refusal that lists them all.
    found, err = _probe("imgs")
    assert found["error"] == "AmbiguousClusterError", found
    assert {a, b} <= set(found["addresses"]) and a in found["message"] and b in found["message"]
    assert "Started a local Ray instance" not in err
    cli = _cli("-q", "imgs", "status")
    assert cli.returncode == 3, cli.stderr
    assert a in cli.stderr and b in cli.stderr and "--address" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1

    # An address (or RAY_ADDRESS) picks one: each sees its own cluster's queues.
    found, _ = _probe("imgs", a)
    assert found == {"ok": True, "queues": ["imgs"], "size": 0}
    found, _ = _probe("imgs", RAY_ADDRESS=b)
    assert found == {"ok": True, "queues": ["imgs", "other"], "size": 0}
    cli = _cli("--address", b, "-q", "imgs", "status")
    assert cli.returncode == 0 and "queue imgs" in cli.stdout, cli.stderr
    cli = _cli("--address", b, "ls")
    assert cli.returncode == 0 and "imgs" in cli.stdout and "other" in cli.stdout, cli.stderr

    # A cluster without that queue says so, and lists the queues it has.
    found, _ = _probe("other", a)
    assert found["error"] == "QueueNotFoundError" and found["queues"] == ["imgs"], found
    cli = _cli("--address", a, "-q", "other", "status")
    assert cli.returncode == 3 and "the queues there: imgs" in cli.stderr, cli.stderr

    # Nothing answering at an address: no cluster is started in its place.
    with socket_closed_port() as port:
        found, err = _probe("imgs", f"127.0.0.1:{port}")
    assert found["error"] == "ClusterNotFoundError", found
    assert "Started a local Ray instance" not in err
    # None was started: a probe's ray.init would start one in Ray's default temp dir.
    # (Tests in the other pytest-xdist process may start private clusters meanwhile, in
    # temp dirs of their own: those are not the probe's.)
    started = [c for c in local_clusters() if c.address not in before]
    assert [c for c in started if (c.session_dir or RAY_DEFAULT).startswith(RAY_DEFAULT)] == []


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A local port that nothing listens on, for the duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield int(sock.getsockname()[1])


def test_queues_lists_registered_queues_until_shutdown(
        make_queue: Callable[..., rayqueue.TaskQueue[Any]]) -> None:
    q = make_queue(shards=2)
    entry = {e.name: e for e in rayqueue.queues()}[q.name]
    assert (entry.shards, entry.journal, entry.running) == (2, q.journal, True)
    assert entry.created is not None
    rayqueue.init(q.name, shards=2, journal=q.journal)  # joining keeps its created time
    assert {e.name: e for e in rayqueue.queues()}[q.name].created == entry.created
    with pytest.raises(rayqueue.QueueNotFoundError, match=q.name):
        rayqueue.connect(f"{q.name}-no")  # the message lists the queues there
    q.shutdown(timeout=5)
    assert q.name not in {e.name for e in rayqueue.queues()}
