"""RELIABILITY.md scenario 11 on a real multi-node Ray: the node holding the journal dies.

Head + node X (whose "disk" holds the journal: a directory this test deletes when it
removes X in the misconfigured case) + node Y for workers.

- Pinned (rayqueue's placement, ``journal_node=X``): when X dies the queue is down and
  says so at once (``QueueLostError``), never answers as an empty queue; X's disk
  back, ``init`` again with the same journal recovers every acknowledged task.
- Misconfigured (a queue actor allowed to restart anywhere): restarted off X, it finds
  no journal and fails fast with ``JournalNotFoundError``, never an empty queue.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle as cloudpickle
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import rayqueue
from rayqueue import PoolConfig, QueueConfig, testing
from rayqueue.actors.queue import CONCURRENCY_GROUPS, QueueActor
from rayqueue.client import TaskQueue
from rayqueue.config import NAMESPACE
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster
from tests.procs import alive
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.multinode

#: Workers only on node Y: node X holds the journal and nothing else of ours.
ON_Y = PoolConfig(min_workers=2, max_workers=2, concurrency=2, num_cpus=0,
                  resources={"node_y": 0.1})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    with local_cluster(1, [{"num_cpus": 1, "resources": {"node_y": 1}}], fast_health=True,
                       prefix="rq-journal-") as (c, _):
        yield c


def _node_x(cluster: Cluster) -> tuple[object, str]:
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    # Known to the scheduler before anything is placed there (a soft affinity to a node
    # it does not know yet would quietly place the actor elsewhere).
    pinned = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)
    ray.get(ray.remote(num_cpus=0)(_here).options(scheduling_strategy=pinned).remote())
    return node, str(node.node_id)


def _here() -> str:
    return str(ray.get_runtime_context().get_node_id())


@pytest.mark.timeout(300)
def test_11_pinned_journal_node_lost_then_back(cluster: Cluster, tmp_path: Path) -> None:
    x, x_id = _node_x(cluster)
    journal = tmp_path / "node-x-disk" / "pinned.sqlite"
    path = ledger.create(str(tmp_path / "ledger.sqlite"))
    config = QueueConfig(lease_ttl=5)
    q = rayqueue.init("pinned", journal=str(journal), journal_node=x_id, config=config,
                      heartbeat_s=1.0, pools=[ON_Y])
    handles = q.enqueue_many([Work(ledger=path, value=i, seconds=0.02) for i in range(300)])
    ids = [h.id for h in handles]  # acknowledged: every one of them is in the journal
    wait_for(lambda: q.stats().by_state["succeeded"] >= 30, timeout=60, what="some done")
    # What the workers hold when X dies (pausing keeps it from growing meanwhile; pause
    # lives in the queue actor's memory, so the recovered queue runs again). They go on
    # running it while the queue is down, and none of it can be reported.
    q.pause()
    in_flight = q.stats().by_state["leased"]
    unfinished = q.stats().size
    assert unfinished > 0
    pid = ray.get(testing.actors(q).queue.pid.remote())

    cluster.remove_node(x, allow_graceful=False)
    # Down, and saying so: not an empty queue, not 30 s of silent retries.
    # Its process outlives the raylet by a moment (answering as it was, or less what
    # the workers finish meanwhile); then Ray cannot place it anywhere.
    answers: list[int] = []

    def reported_lost() -> bool:
        answers.append(q.stats().size)  # raises QueueLostError once it is down
        return False

    with pytest.raises(rayqueue.QueueLostError, match="bring that node"):
        wait_for(reported_lost, timeout=60, what="the queue reported lost")
    assert all(0 < size <= unfinished for size in answers), answers  # never empty
    # The fault happened: X is dead to Ray, and the queue actor's process with it.
    assert x_id not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    wait_for(lambda: not alive(pid), timeout=30, what="the queue actor's process gone")

    # X's disk is back (same path, a new raylet): init recovers from the journal.
    _, x2_id = _node_x(cluster)
    again = rayqueue.init("pinned", journal=str(journal), journal_node=x2_id, config=config,
                          heartbeat_s=1.0, pools=[ON_Y])
    try:
        infos = again.wait(ids, 180)
        assert all(i is not None for i in infos)
        history = ledger.check(path, [i for i in infos if i is not None],
                               expected={h.id: i for i, h in enumerate(handles)})
        assert history.problems() == {}
        assert history.states == {"succeeded": 300}
        # Re-runs: only what the workers held when X died (RELIABILITY: D is bounded by
        # the in-flight tasks of the faulted component).
        assert history.duplicates <= in_flight, (history.duplicates, in_flight)
    finally:
        again.shutdown(timeout=5)


@pytest.mark.timeout(300)
def test_11_misconfigured_queue_restarted_elsewhere_fails_fast(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    x, x_id = _node_x(cluster)
    disk = tmp_path / "node-x-disk"
    # Deliberately wrong: a journaled queue actor allowed to restart on any node.
    attempts = iter(range(100))

    def misplaced() -> tuple[str, Any] | None:
        # A soft affinity is a preference: until the head's scheduler has X in its view
        # it places the actor elsewhere. Try again until it lands on X.
        name = f"misplaced-{next(attempts)}"
        actor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(QueueActor).options(
            name=f"{name}.queue", namespace=NAMESPACE, lifetime="detached", num_cpus=0,
            max_restarts=-1, max_concurrency=100,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=x_id, soft=True),
        ).remote(name, QueueConfig(), None, str(disk / f"{name}.sqlite"))
        if ray.get(actor.node_id.remote()) == x_id:
            return name, actor
        ray.kill(actor, no_restart=True)
        return None

    name, actor = wait_for(misplaced, timeout=60, what="the queue actor placed on X")
    q: TaskQueue[object] = TaskQueue(name, actor, None, None, retry_timeout=60)
    path = ledger.create(str(tmp_path / "l.sqlite"))
    q.enqueue_many([Work(ledger=path, value=i) for i in range(50)])
    assert q.stats().size == 50

    pid = ray.get(actor.pid.remote())
    shutil.rmtree(disk)  # X's local disk goes with it (the open file lives on meanwhile)
    cluster.remove_node(x, allow_graceful=False)
    wait_for(lambda: not alive(pid), timeout=30, what="the queue actor on X gone")
    with pytest.raises(rayqueue.JournalNotFoundError) as err:
        # Restarted on the head, it refuses to serve an empty queue.
        wait_for(lambda: q.stats().size != 50, timeout=60, what="the restart")
    assert err.value.path == str(disk / f"{name}.sqlite")
    ray.kill(actor, no_restart=True)


