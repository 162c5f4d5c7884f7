"""RELIABILITY.md scenario 10 on a real multi-node Ray: a worker node dies mid-run.

Head (queue actor, journal, pool manager) + two worker nodes with two single-slot
workers each; 400 tasks that write every attempt to the execution ledger. Node 1 is
removed without grace mid-run, a new node is added: nothing is lost, duplicates stay
within what node 1 had in flight, and the pool is whole again.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import ray.cloudpickle as cloudpickle
from ray.cluster_utils import Cluster

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster
from tests.procs import alive as process_alive
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.multinode

@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    with local_cluster(0, [{"num_cpus": 1}] * 2, fast_health=True, prefix="rq-loss-") as (c, _):
        yield c


@pytest.mark.timeout(300)
def test_10_worker_node_lost_mid_run(cluster: Cluster, tmp_path: Path) -> None:
    path = ledger.create(str(tmp_path / "ledger.sqlite"))
    q = rayqueue.init("nodeloss", journal=str(tmp_path / "journal.sqlite"),
                      config=QueueConfig(lease_ttl=5), heartbeat_s=1.0,
                      pools=[PoolConfig(min_workers=4, max_workers=4, concurrency=1,
                                        num_cpus=0.5, spread=True)])
    try:
        workers = wait_for(lambda: [w for w in q.workers() if w.node_id] if len(
            [w for w in q.workers() if w.node_id]) == 4 else None, timeout=60,
            what="four workers placed")
        victim_node = next(n for n in cluster.worker_nodes
                           if any(w.node_id == n.node_id for w in workers))
        on_victim = [w.id for w in workers if w.node_id == victim_node.node_id]
        handles = q.enqueue_many([Work(ledger=path, value=i, seconds=0.05)
                                  for i in range(400)])
        ids = [h.id for h in handles]
        wait_for(lambda: sum(1 for i in q.get_many(ids) if i and i.state == "succeeded")
                 >= 60, timeout=120, what="60 completions")
        victim_pids = [w.pid for w in workers if w.id in on_victim and w.pid]
        raylet = victim_node.all_processes["raylet"][0].process.pid
        cluster.remove_node(victim_node, allow_graceful=False)
        # The fault happened: node 1's raylet and its workers' processes are gone.
        wait_for(lambda: not any(process_alive(p) for p in [raylet, *victim_pids]),
                 timeout=60,
                 what="node 1's processes gone")
        assert victim_pids
        wait_for(lambda: not any(w.id in on_victim for w in q.workers()), timeout=60,
                 what="the lost node's workers replaced")
        cluster.add_node(num_cpus=1)
        infos = q.wait(ids, 180)
        history = ledger.check(path, [i for i in infos if i is not None],
                               expected={h.id: i for i, h in enumerate(handles)})
        assert all(i is not None for i in infos)
        assert history.problems() == {}
        # Duplicates: tasks node 1 had run but not yet reported (at most one running and
        # one finished-unreported per single-slot worker there).
        assert history.duplicates <= 2 * len(on_victim), history.duplicates
        assert history.states == {"succeeded": 400}
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        placed = wait_for(lambda: [w for w in q.workers() if w.node_id in alive] if len(
            [w for w in q.workers() if w.node_id in alive and w.state == "running"]) == 4
            else None, timeout=60, what="the pool whole again")
        assert victim_node.node_id not in {w.node_id for w in placed}
    finally:
        q.shutdown(timeout=5)
