"""A queue journaled in PostgreSQL survives losing the node of its queue actor (issue 18).

Head + node B (the workers) + node A, added per test, where the queue is created (a Ray
task on A calls ``init``, so A holds the queue actor and the pool manager, as the node
of a driver that created the queue would; and the cluster's metrics actor, for the
first test's queue). The journal is a real PostgreSQL server (``tests/pg.py``).

- Node lost: A is removed without grace mid-run. Ray restarts the queue actor on
  another node, where it recovers from the database (a newer epoch); every task ends
  succeeded, none lost, duplicates within what the workers held.
- Zombie: A is cut off (its raylet and the queue actor frozen with SIGSTOP: to Ray the
  node is dead, the process is not). A new incarnation takes over on another node and
  finishes the work; then the old one is let go (SIGCONT): its first commit is refused
  (``JournalFencedError``, logged by its own pid) and the journal is as the new one
  left it.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import json
import signal
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
import ray.cloudpickle as cloudpickle
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import rayqueue
from rayqueue import PoolConfig, QueueConfig, testing
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster
from tests.procs import alive, state
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.multinode

#: Workers only on node B: node A holds the queue's control actors and nothing else.
ON_B = PoolConfig(min_workers=2, max_workers=2, concurrency=2, num_cpus=0,
                  resources={"node_b": 0.1})
SLOTS = ON_B.max_workers * ON_B.concurrency
TASKS = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    # A frozen raylet answers no health check: each one waits out its timeout (10 s by
    # default) before it counts as missed.
    with local_cluster(0, [{"num_cpus": 1, "resources": {"node_b": 1}}], fast_health=True,
                       prefix="rq-pgnode-",
                       system_config={"health_check_timeout_ms": 1000}) as (c, _):
        yield c


def _init_here(name: str, url: str, log: str) -> str:
    """Create the queue from a task on this node; the queue actor's node id."""
    q = rayqueue.init(name, journal=url, config=QueueConfig(lease_ttl=3), heartbeat_s=1.0,
                      pools=[ON_B], actor_env={"RAYQUEUE_LOG_FILE": log,
                                               "RAYQUEUE_LOG_JSON": "1"})
    return str(ray.get(testing.actors(q).queue.node_id.remote()))


def _queue_on_new_node(cluster: Cluster, pg_url: str, tmp_path: Path) -> dict[str, Any]:
    """Node A, with a queue created there; the queue runs 240 ledger tasks on node B and
    has finished some of them."""
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    pinned = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    log = str(tmp_path / "actors.log")
    ray.get(ray.remote(num_cpus=0)(_init_here).options(
        scheduling_strategy=pinned).remote(name, pg_url, log))
    q = rayqueue.connect(name)
    # init asks for the creating driver's node softly, and Ray's scheduler does not
    # always follow (a raylet's view of a node just added lags): until the queue actor
    # is on A, kill it and let Ray place its restart.
    landed: list[str] = []

    def on_a() -> bool:
        try:
            landed.append(ray.get(testing.actors(q).queue.node_id.remote()))
        except ray.exceptions.ActorUnavailableError:
            return False  # restarting
        if landed[-1] == node.node_id:
            return True
        os.kill(testing.queue_pid(q), signal.SIGKILL)
        return False

    wait_for(on_a, timeout=60, what="the queue actor on node A")
    print(f"queue actor placements before it was on A: {len(landed) - 1}")
    path = ledger.create(str(tmp_path / "ledger.sqlite"))
    handles = q.enqueue_many([Work(ledger=path, value=i, seconds=0.05)
                              for i in range(TASKS)])
    ids = [h.id for h in handles]
    wait_for(lambda: q.stats().by_state["succeeded"] >= 40, timeout=90, what="40 done")
    return {"node": node, "name": name, "q": q, "ids": ids, "handles": handles,
            "ledger": path, "log": log, "pid": testing.queue_pid(q),
            "epoch": _epoch(pg_url, name),
            "raylet": node.all_processes["raylet"][0].process.pid}


def _epoch(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f'SELECT epoch FROM "rayqueue_{name}".queue_owner').fetchone()
    assert row is not None
    return int(row[0])


def _back_elsewhere(run: dict[str, Any], pg_url: str) -> None:
    """A new incarnation of the queue actor answers, on another node, with a newer epoch."""
    q = run["q"]
    pid = wait_for(lambda: (p := testing.queue_pid(q)) != run["pid"] and p, timeout=60,
                   what="a new incarnation of the queue actor")
    assert ray.get(testing.actors(q).queue.node_id.remote()) != run["node"].node_id
    assert pid != run["pid"] and _epoch(pg_url, run["name"]) > run["epoch"]  # a newer owner


def _all_done_once(run: dict[str, Any]) -> None:
    """Every task succeeded; none lost, duplicates within what the workers held (one
    running and one finished but unreported per slot)."""
    infos = run["q"].wait(run["ids"], 180)
    assert all(i is not None for i in infos)
    history = ledger.check(run["ledger"], [i for i in infos if i is not None],
                           expected={h.id: i for i, h in enumerate(run["handles"])})
    assert history.problems() == {}  # lost = 0, none undercounted
    assert history.states == {"succeeded": TASKS}
    assert history.duplicates <= 2 * SLOTS, history.duplicates


@pytest.mark.timeout(240)
def test_queue_node_lost_moves_the_queue(cluster: Cluster, pg_url: str,
                                         tmp_path: Path) -> None:
    run = _queue_on_new_node(cluster, pg_url, tmp_path)
    try:
        cluster.remove_node(run["node"], allow_graceful=False)
        # The fault happened: A's raylet and the queue actor's process are gone.
        wait_for(lambda: not alive(run["raylet"]) and not alive(run["pid"]), timeout=30,
                 what="node A's raylet and queue actor gone")
        _back_elsewhere(run, pg_url)
        _all_done_once(run)
    finally:
        run["q"].shutdown(timeout=5)


def _in_transaction(url: str, name: str) -> bool:
    """Whether a session of queue ``name``'s journal is inside a transaction."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                           "'rayqueue' AND query LIKE %s AND state <> 'idle'",
                           (f"%rayqueue_{name}%",)).fetchone()
    return bool(row and row[0])


def _fenced_by(log: str, pid: int) -> bool:
    """Whether process ``pid`` logged that the journal refused it (one JSON object a
    line, written by every actor of the queue)."""
    with open(log, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line).get("record", {})
            except ValueError:
                continue
            if (record.get("extra", {}).get("action") == "journal_fenced"
                    and record.get("process", {}).get("id") == pid):
                return True
    return False


@pytest.mark.timeout(240)
def test_zombie_queue_actor_is_fenced(cluster: Cluster, pg_url: str,
                                      tmp_path: Path) -> None:
    from rayqueue.storage.postgres import inspect

    run = _queue_on_new_node(cluster, pg_url, tmp_path)
    pid, raylet = run["pid"], run["raylet"]
    try:
        assert run["q"].stats().by_state["leased"] > 0  # the zombie holds leases

        def frozen_between_commits() -> bool:
            # Frozen inside a commit, it would hold the owner row until the server drops
            # its session (idle_in_transaction_session_timeout, 30 s): the takeover
            # would wait that long. Then let it finish and freeze it again.
            os.kill(pid, signal.SIGSTOP)
            if not _in_transaction(pg_url, run["name"]):
                return True
            os.kill(pid, signal.SIGCONT)
            return False

        wait_for(frozen_between_commits, timeout=30, what="frozen between two commits")
        os.kill(raylet, signal.SIGSTOP)  # A cut off: Ray finds its raylet silent
        # The fault happened: A is dead to Ray, the old queue actor frozen, not gone.
        wait_for(lambda: run["node"].node_id not in {
            n["NodeID"] for n in ray.nodes() if n["Alive"]}, timeout=30, what="A dead to Ray")
        assert state(pid) == "T"
        _back_elsewhere(run, pg_url)
        _all_done_once(run)
        before = inspect(pg_url, run["name"])[0]
        os.kill(pid, signal.SIGCONT)  # its leases long expired, it commits their loss
        assert state(pid) != "T"
        wait_for(lambda: _fenced_by(run["log"], pid)
                 or inspect(pg_url, run["name"])[0].by_state != before.by_state,
                 timeout=30, what="the old incarnation's first commit")
        assert _fenced_by(run["log"], pid)  # refused...
        after = inspect(pg_url, run["name"])[0]
        assert after.by_state == before.by_state  # ...whole: the journal is the new one's
        assert after.epoch == before.epoch > run["epoch"]
        _all_done_once(run)  # nothing lost or doubled by the zombie's attempt
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        cluster.remove_node(run["node"], allow_graceful=False)
        run["q"].shutdown(timeout=5)
