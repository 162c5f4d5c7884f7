"""Pools on a real multi-node Ray (three raylets on this machine, as Ray's own tests do):
workers spread over nodes, task types routed by node label and custom resource, and a
pool that no node can host reported rather than left pending.

Runs as its own group (``pytest -m multinode``): it needs its own Ray cluster, not the
shared single-node one of the other suites.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray.cloudpickle as cloudpickle

import rayqueue
from rayqueue import PoolConfig
from tests.multinode import node_tasks
from tests.multinode.cluster import local_cluster
from tests.multinode.node_tasks import WhereDefault, WhereGpu, WhereReports
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """A head and two worker nodes: one labelled pool=reports, one with gpu_slot=2."""
    cloudpickle.register_pickle_by_value(node_tasks)
    with local_cluster(1, [{"num_cpus": 2, "labels": {"pool": "reports"}},
                           {"num_cpus": 2, "resources": {"gpu_slot": 2}}]) as (c, nodes):
        reports, gpu = nodes
        yield {"cluster": c, "head": c.head_node.node_id, "reports": reports.node_id,
               "gpu": gpu.node_id}


def test_pools_spread_route_and_report_what_cannot_be_placed(cluster: dict[str, Any],
                                                           tmp_path: Path) -> None:
    q = rayqueue.init("placement", journal=str(tmp_path / "placement.sqlite"), pools=[
        PoolConfig(name="default", min_workers=3, max_workers=3, num_cpus=0.5, spread=True),
        PoolConfig(name="reports", min_workers=1, max_workers=1,
                   label_selector={"pool": "reports"}),
        PoolConfig(name="gpu", min_workers=1, max_workers=1, resources={"gpu_slot": 1}),
        PoolConfig(name="nowhere", min_workers=1, max_workers=1, resources={"tpu": 1}),
    ])
    try:
        # Spread: the default pool's workers land on different nodes (checked by id).
        workers = wait_for(lambda: [w for w in q.workers()
                                    if w.pool == "default" and w.node_id] if len(
            [w for w in q.workers() if w.pool == "default" and w.node_id]) == 3 else None,
            timeout=60, what="three default workers placed")
        assert len({w.node_id for w in workers}) >= 2, [w.node_id for w in workers]

        # Routing: by node label, and by custom resource.
        reports = q.results(q.enqueue_many([WhereReports(i=i) for i in range(20)]), timeout=60)
        gpu = q.results(q.enqueue_many([WhereGpu(i=i) for i in range(20)]), timeout=60)
        anywhere = q.results(q.enqueue_many([WhereDefault(i=i) for i in range(60)]),
                             timeout=60)
        assert set(reports) == {cluster["reports"]}
        assert set(gpu) == {cluster["gpu"]}
        assert len(set(anywhere)) >= 2

        # A pool no node can host is reported in the pool stats (and logged).
        nowhere = wait_for(lambda: next(p for p in q.pools() if p.name == "nowhere").infeasible,
                           timeout=30, what="the infeasible pool reported")
        assert "tpu=1" in nowhere
        assert next(p for p in q.pools() if p.name == "gpu").infeasible is None
    finally:
        q.shutdown(timeout=5)
