"""RELIABILITY.md scenario 12 on a real multi-node Ray: the GCS goes down and comes back.

With GCS fault tolerance (a real ``redis-server`` holding the GCS tables, as KubeRay's
GCS FT does): the queue and its workers talk to each other directly, so they keep
processing while the GCS is down; nothing is lost and nothing runs twice. The outage
lasts until the run has visibly progressed without a GCS (not a fixed sleep).

Without fault tolerance the cluster dies with its GCS; that case is the head-loss case
of the README (restart, ``init`` with the same journal), which scenario 11's recovery
and the cold-restart test of the fault suite cover.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
from ray.cluster_utils import Cluster

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster
from tests.ports import free_port
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    """A private redis-server on 127.0.0.1, stopped by its PID."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="rq-redis-", dir="/tmp")
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), timeout=30, what="redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def ft_cluster(redis: str) -> Iterator[Cluster]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    old = os.environ.get("RAY_REDIS_ADDRESS")
    os.environ["RAY_REDIS_ADDRESS"] = redis  # the head's GCS keeps its tables there
    try:
        with local_cluster(0, [{"num_cpus": 2}], prefix="rq-gcs-") as (c, _):
            yield c
    finally:
        if old is None:
            os.environ.pop("RAY_REDIS_ADDRESS", None)
        else:
            os.environ["RAY_REDIS_ADDRESS"] = old


@pytest.mark.timeout(300)
def test_12_gcs_outage_with_fault_tolerance(ft_cluster: Cluster, tmp_path: Path) -> None:
    path = ledger.create(str(tmp_path / "ledger.sqlite"))
    q = rayqueue.init("gcs-ft", journal=str(tmp_path / "journal.sqlite"),
                      config=QueueConfig(lease_ttl=10), heartbeat_s=1.0,
                      pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=2)])
    try:
        wait_for(lambda: len([w for w in q.workers() if w.state == "running"]) == 2,
                 timeout=60, what="two workers")
        handles = q.enqueue_many([Work(ledger=path, value=i, seconds=0.05)
                                  for i in range(500)])
        ids = [h.id for h in handles]
        wait_for(lambda: q.stats().by_state["succeeded"] >= 50, timeout=60, what="50 done")

        gcs = ft_cluster.head_node.all_processes["gcs_server"][0].process
        ft_cluster.head_node.kill_gcs_server()
        assert gcs.wait(timeout=30) is not None  # the fault happened: the GCS is gone
        before = q.stats().by_state["succeeded"]  # the queue answers without a GCS
        wait_for(lambda: q.stats().by_state["succeeded"] >= before + 100, timeout=60,
                 what="progress while the GCS is down")
        ft_cluster.head_node.start_gcs_server()

        infos = q.wait(ids, 180)
        assert all(i is not None for i in infos)
        history = ledger.check(path, [i for i in infos if i is not None],
                               expected={h.id: i for i, h in enumerate(handles)})
        assert history.problems() == {}
        assert history.duplicates == 0  # no worker died: nothing ran twice
        assert history.states == {"succeeded": 500}
        # The pool manager survived the outage (no crash loop) and still answers.
        assert [p.workers for p in q.pools()] == [2]
    finally:
        q.shutdown(timeout=5)
