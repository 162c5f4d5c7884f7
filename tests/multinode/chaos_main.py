"""RELIABILITY.md scenario 28, a chaos soak on a real 3-node Ray, in its own process.

A sharded, journaled queue runs tasks of 10-200 ms that write every attempt to the
execution ledger, while a killer picks a fault every few seconds: SIGKILL a worker,
SIGKILL a queue shard, SIGKILL the pool manager, remove a worker node and add a new
one, or SIGSTOP a worker for two lease TTLs. Before each fault it notes how many tasks
the faulted component had in flight, which bounds the duplicates it may cause. After
the faults stop and the queue drains, it prints one JSON line: lost, duplicates and
their bound, stuck leases, CPU resources, actor memory samples.

    python -m tests.multinode.chaos_main --seconds 600     # the full soak (make soak)
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import argparse
import contextlib
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray.cluster_utils import Cluster

import rayqueue
from rayqueue import PoolConfig, QueueConfig
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster

LEASE_TTL = 3.0
WORKERS, CONCURRENCY = 4, 2
FAULTS = ("worker", "queue", "pool", "node", "stop")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _resume(pid: int) -> None:
    # (its pool manager or node may have died meanwhile, and the worker with it)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


class Chaos:
    def __init__(self, cluster: Cluster, q: rayqueue.TaskQueue[Any], rng: random.Random) -> None:
        self.cluster = cluster
        self.q = q
        self.rng = rng
        self.events: list[dict[str, Any]] = []
        self.rss: dict[str, list[float]] = {"queue": [], "pool": []}

    def in_flight(self) -> tuple[list[rayqueue.WorkerInfo], int]:
        workers = [w for w in self.q.workers() if w.pid and w.state == "running"]
        return workers, self.q.stats().by_state["leased"]

    def strike(self) -> None:
        try:
            self._strike()
        except ray.exceptions.RayError as err:  # e.g. the shard picked is restarting
            self.events.append({"at": time.time(), "kind": f"skipped ({type(err).__name__})",
                                "bound": 0})

    def _strike(self) -> None:
        kind = self.rng.choice(FAULTS)
        workers, leased = self.in_flight()
        event: dict[str, Any] = {"at": time.time(), "kind": kind, "bound": 0}
        if kind in ("worker", "stop") and workers:
            victim = self.rng.choice(workers)
            event["bound"] = victim.tasks
            assert victim.pid  # never 0: that would signal our own process group
            if kind == "worker":
                os.kill(victim.pid, signal.SIGKILL)
            else:  # a zombie: comes back after its leases expired and were re-leased
                os.kill(victim.pid, signal.SIGSTOP)
                threading.Timer(2 * LEASE_TTL, _resume, (victim.pid,)).start()
        elif kind == "queue":
            shard = self.rng.randrange(self.q.shards)
            os.kill(ray.get(self.q._shards[shard].pid.remote()), signal.SIGKILL)
            event["bound"] = leased  # everything leased from it, at most
        elif kind == "pool":
            os.kill(ray.get(self.q._pool.pid.remote()), signal.SIGKILL)
            event["bound"] = leased  # its workers die with it
        elif kind == "node":
            nodes = list(self.cluster.worker_nodes)
            node = self.rng.choice(nodes)
            event["bound"] = sum(w.tasks for w in workers if w.node_id == node.node_id)
            self.cluster.remove_node(node, allow_graceful=False)
            self.cluster.add_node(num_cpus=2)
        else:
            event["kind"] = "none (no worker yet)"
        self.events.append(event)
        for role, handle in (("queue", self.q._actor), ("pool", self.q._pool)):
            with contextlib.suppress(ray.exceptions.RayError):  # restarting right now
                self.rss[role].append(_rss_mb(ray.get(handle.pid.remote(), timeout=10)))


def run(seconds: float, tmp: str, seed: int) -> dict[str, Any]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    with local_cluster(0, [{"num_cpus": 2}] * 2, fast_health=True,
                       prefix="rq-chaos-") as (cluster, _):
        return _soak(cluster, seconds, tmp, random.Random(seed))


def _soak(cluster: Cluster, seconds: float, tmp: str, rng: random.Random) -> dict[str, Any]:
    path = str(Path(tmp) / "ledger.sqlite")
    q = rayqueue.init("chaos", journal=str(Path(tmp) / "chaos.sqlite"), shards=2,
                      config=QueueConfig(lease_ttl=LEASE_TTL), heartbeat_s=0.5,
                      pools=[PoolConfig(min_workers=WORKERS, max_workers=WORKERS,
                                        concurrency=CONCURRENCY, num_cpus=0.5, spread=True)])
    total_cpus = ray.cluster_resources().get("CPU", 0.0)
    # Enough work for the whole soak: ~105 ms a task on 8 slots.
    n = int(seconds * WORKERS * CONCURRENCY / 0.105)
    handles = q.enqueue_many([Work(ledger=path, value=i, seconds=rng.uniform(0.01, 0.2))
                              for i in range(n)])
    chaos = Chaos(cluster, q, rng)
    end = time.monotonic() + seconds
    pause = threading.Event()  # the killer's schedule: one fault every few seconds
    while time.monotonic() < end:
        pause.wait(rng.uniform(3.0, 8.0) if seconds < 300 else rng.uniform(5.0, 15.0))
        chaos.strike()
    infos = q._wait([h.id for h in handles], 600)
    history = ledger.check(path, [i for i in infos if i is not None])
    stats = q.stats()
    q.shutdown(timeout=10)
    # Every CPU the workers held is back once they are gone.
    cpus_back = False
    for _ in range(600):
        if ray.available_resources().get("CPU", 0.0) == total_cpus:
            cpus_back = True
            break
        pause.wait(0.1)
    summary = {
        "seconds": seconds, "tasks": n,
        "faults": [e["kind"] for e in chaos.events],
        "unfinished": sum(1 for i in infos if i is None or not i.terminal),
        "states": dict(history.states),
        "lost": len(history.lost), "undercounted": len(history.undercounted),
        "duplicates": history.duplicates,
        "duplicate_bound": sum(e["bound"] for e in chaos.events),
        "leased_after": stats.by_state["leased"],
        "cpus_back": cpus_back,
        "rss_mb": chaos.rss,
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()
    tmp = args.tmp or tempfile.mkdtemp(prefix="rq-chaos-data-", dir="/tmp")
    print(json.dumps(run(args.seconds, tmp, args.seed)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
