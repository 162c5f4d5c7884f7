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
# RELIABILITY 28: 5 % of actor-call requests and of replies dropped (read by every Ray
# process at start, so set before the cluster starts), up to 25 drops per process, so
# the duplicate bound below stays exact (with no cap, lost reports add re-runs that no
# strike explains; the queue no longer stalls: see tests/faults/README.md).
# RAY_testing_rpc_failure set by the caller wins (num_failures 1000000: no cap).
os.environ.setdefault(
    "RAY_testing_rpc_failure",
    '{"CoreWorkerService.grpc_client.PushTask": '
    '{"num_failures": 25, "req_failure_prob": 5, "resp_failure_prob": 5}}')

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
from rayqueue import PoolConfig, QueueConfig, testing
from tests.faults import ledger, ledger_tasks
from tests.faults.ledger_tasks import Work
from tests.multinode.cluster import local_cluster
from tests.procs import alive, state

LEASE_TTL = 3.0
WORKERS, CONCURRENCY = 4, 2
FAULTS = ("worker", "queue", "pool", "node", "stop")
#: A killed queue shard explains a re-run by any worker whose run ended from this long
#: before the strike to this long after the shard answered again (its leases may lapse).
STRIKE_WINDOW_S = 10.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _leases_held(actor: Any, workers: list[str]) -> int:
    """Run inside a queue shard: the leases it has handed to ``workers`` and not had
    back (pickled by value: this module runs as __main__)."""
    with actor._lock:
        held = actor._core.leased_by_worker()
    return sum(held.get(w, 0) for w in workers)


def _worker_processes(raylets: list[int]) -> set[int]:
    """This cluster's worker-actor processes, read from /proc: Ray starts them as
    children of their node's raylet, titled ``ray::WorkerActor`` (a worker the pool
    manager has not recorded yet, or has already let go of, is one of them too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent in raylets and title.startswith(b"ray::WorkerActor"):
            found.add(int(entry.name))
    return found


def _raylet(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


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
        self.held_reads = 0  # reads of a struck worker's leases that the queue answered
        self.held_calls = 0  # reads of them tried: every one must answer

    def in_flight(self) -> tuple[list[rayqueue.WorkerInfo], int]:
        workers = [w for w in self.q.workers() if w.pid and w.state == "running"]
        return workers, self.q.stats().by_state["leased"]

    def worker_pids(self, nodes: list[Any] | None = None) -> list[int]:
        """Every worker process on ``nodes`` (all of the cluster's by default), those in
        the pool's table and those /proc shows beside them."""
        nodes = [self.cluster.head_node, *self.cluster.worker_nodes] if nodes is None else nodes
        ids = {n.node_id for n in nodes}
        table = {w.pid for w in self.q.workers() if w.pid and w.node_id in ids}
        return sorted(table | _worker_processes([_raylet(n) for n in nodes]))

    def held_by(self, workers: list[rayqueue.WorkerInfo]) -> int:
        """Leases the queue's shards hold for ``workers`` now. The pool manager's count
        (``WorkerInfo.tasks``) is as of its last cycle, and a worker prefetches: at the
        strike it may hold more than that, and each lease it holds may run twice."""
        ids = [w.id for w in workers]
        self.held_calls += 1
        counts: list[int] = []
        for shard in testing.actors(self.q).shards:

            def read(shard: Any = shard) -> bool:
                # A call can fail and answer again soon: Ray drops actor calls at the
                # injected rate (this one too), and a struck shard is restarting.
                with contextlib.suppress(ray.exceptions.RayError):
                    counts.append(testing.call_in(shard, _leases_held, ids))
                    return True
                return False

            if not _until(read, timeout=30.0):
                return 0  # the summary's held_reads shows a read that never answered
        self.held_reads += 1
        return sum(counts)

    def strike(self) -> None:
        try:
            self._strike()
        except ray.exceptions.RayError as err:  # e.g. the shard picked is restarting
            self.events.append({"at": time.time(), "kind": "skipped", "done": False,
                                "why": type(err).__name__, "bound": 0})
        self.sample()

    def sample(self) -> None:
        """One RSS reading per role, waiting (up to 30 s) for an actor a strike has just
        killed to answer again, so every strike leaves a sample for each role."""
        handles = testing.actors(self.q)
        for role, handle in (("queue", handles.queue), ("pool", handles.pool)):

            def read(role: str = role, handle: Any = handle) -> bool:
                with contextlib.suppress(ray.exceptions.RayError):  # restarting right now
                    rss = _rss_mb(ray.get(handle.pid.remote(), timeout=10))
                    if rss:  # 0: it died between the two reads
                        self.rss[role].append(rss)
                        return True
                return False

            _until(read, timeout=30.0)

    def _strike(self) -> None:
        kind = self.rng.choice(FAULTS)
        workers, leased = self.in_flight()
        event: dict[str, Any] = {"at": time.time(), "kind": kind, "bound": 0, "done": False}
        if kind in ("worker", "stop") and workers:
            victim = self.rng.choice(workers)
            event["pids"] = [victim.pid]
            before = self.held_by([victim])
            assert victim.pid  # never 0: that would signal our own process group
            if kind == "worker":
                os.kill(victim.pid, signal.SIGKILL)
                event["done"] = _until(lambda: not alive(victim.pid))
            else:  # a zombie: comes back after its leases expired and were re-leased
                os.kill(victim.pid, signal.SIGSTOP)
                event["done"] = _until(lambda: state(victim.pid) == "T")
                threading.Timer(2 * LEASE_TTL, _resume, (victim.pid,)).start()
            # What it held when struck: read before and after (a claim answered in
            # between adds leases; once it is gone or stopped it claims no more).
            event["bound"] = max(victim.tasks, before, self.held_by([victim]))
        elif kind == "queue":
            shard = self.rng.randrange(self.q.shards)
            shard_handle = testing.actors(self.q).shards[shard]
            pid = ray.get(shard_handle.pid.remote())
            event["pids"] = self.worker_pids()  # any of their leases may lapse
            os.kill(pid, signal.SIGKILL)
            event["bound"] = leased  # everything leased from it, at most
            event["done"] = _until(lambda: not alive(pid))
            # Until it answers again, reports to it fail and leases on it lapse.
            event["back"] = time.time() if _until(lambda: _answers(shard_handle),
                                                  60.0) else None
        elif kind == "pool":
            pid = ray.get(testing.actors(self.q).pool.pid.remote())
            workers = [w for w in self.q.workers() if w.pid]  # starting ones die too
            # Its workers die with it, those its table had not recorded yet too.
            event["pids"] = self.worker_pids()
            os.kill(pid, signal.SIGKILL)
            event["done"] = _until(lambda: not alive(pid))
            # They die a moment later, and claim until then: what they hold once gone
            # (unless the new pool manager has reclaimed it already).
            _until(lambda: not any(alive(p) for p in event["pids"]))
            event["bound"] = max(leased, self.held_by(workers))
        elif kind == "node":
            nodes = list(self.cluster.worker_nodes)
            node = self.rng.choice(nodes)
            # Every worker with a process there dies with the node, whatever its state
            # (a draining one still runs what it holds; a starting one may already run).
            on_node = [w for w in self.q.workers() if w.pid and w.node_id == node.node_id]
            event["pids"] = self.worker_pids([node])
            before = self.held_by(on_node)
            raylet = _raylet(node)
            self.cluster.remove_node(node, allow_graceful=False)
            event["done"] = _until(lambda: not alive(raylet))
            event["bound"] = max(sum(w.tasks for w in on_node), before,
                                 self.held_by(on_node))
            if set(event["pids"]) - {w.pid for w in on_node}:
                # A worker there that the table did not show: its leases are not
                # countable by worker, so everything leased at the strike, at most.
                event["bound"] = max(event["bound"], leased)
            self.cluster.add_node(num_cpus=2)
        else:
            event["kind"] = "none"  # no running worker to strike yet
        self.events.append(event)


def _answers(actor: Any) -> bool:
    try:
        ray.get(actor.pid.remote(), timeout=2)
    except ray.exceptions.RayError:
        return False
    return True


def _until(condition: Any, timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true (True) or ``timeout`` s (False)."""
    end = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > end:
            return False
        pause.wait(0.02)
    return True


def _injected_rpc_failures(session_dir: str) -> int:
    """RPC failures Ray says it injected (``Inject RPC ... failure`` in its logs)."""
    count = 0
    for log in Path(session_dir, "logs").rglob("*"):  # logs/old too (dead processes)
        if log.is_file():
            with open(log, errors="replace") as f:
                count += sum(1 for line in f if "Inject RPC" in line)
    return count


def run(seconds: float, tmp: str, seed: int) -> dict[str, Any]:
    cloudpickle.register_pickle_by_value(ledger_tasks)
    with local_cluster(0, [{"num_cpus": 2}] * 2, fast_health=True,
                       prefix="rq-chaos-") as (cluster, _):
        return _soak(cluster, seconds, tmp, random.Random(seed))


#: Strikes that take effect in a run, at least (the test asserts as many).
MIN_FAULTS = 4


def _soak(cluster: Cluster, seconds: float, tmp: str, rng: random.Random) -> dict[str, Any]:
    path = ledger.create(str(Path(tmp) / "ledger.sqlite"))
    session = ray._private.worker._global_node.get_session_dir_path()
    q = rayqueue.init("chaos", journal=str(Path(tmp) / "chaos.sqlite"), shards=2,
                      config=QueueConfig(lease_ttl=LEASE_TTL), heartbeat_s=0.5,
                      pools=[PoolConfig(min_workers=WORKERS, max_workers=WORKERS,
                                        concurrency=CONCURRENCY, num_cpus=0.5, spread=True)])
    total_cpus = ray.cluster_resources().get("CPU", 0.0)
    # Enough work for the whole soak, and not much more: tasks of ~105 ms on 8 slots
    # would run 76 a second, but under the chaos on 2 cores about 30 do; half the ideal
    # lasts the whole soak there (the summary's "left_at_end" says so) and drains soon
    # after, where the full count took another 70 s to drain.
    n = int(seconds * WORKERS * CONCURRENCY / 0.105 / 2)
    handles = q.enqueue_many([Work(ledger=path, value=i, seconds=rng.uniform(0.01, 0.2))
                              for i in range(n)])
    chaos = Chaos(cluster, q, rng)
    began = time.monotonic()
    pause = threading.Event()  # the killer's schedule: one fault every few seconds
    # For `seconds`, and on (up to as long again) until MIN_FAULTS strikes took effect:
    # a strike may find nothing to hit, and on a busy machine each one takes longer
    # (the RSS sample after it waits for the struck actor), so time alone can leave 3.
    while ((elapsed := time.monotonic() - began) < seconds
           or (elapsed < 2 * seconds
               and sum(e["done"] for e in chaos.events) < MIN_FAULTS)):
        pause.wait(rng.uniform(3.0, 8.0) if seconds < 300 else rng.uniform(5.0, 15.0))
        chaos.strike()
    left = q.stats()  # the work outlasted the chaos: every strike met running tasks
    left_at_end = left.by_state.get("ready", 0) + left.by_state.get("leased", 0)
    # Drained within a bound (10 min for the soak), or the summary says what is stuck.
    infos = q.wait([h.id for h in handles], min(600.0, 120.0 + 2 * seconds))
    chaos.sample()
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
        "faults": [e["kind"] for e in chaos.events if e["done"]],
        "not_struck": [e for e in chaos.events if not e["done"]],
        "unfinished": sum(1 for i in infos if i is None or not i.terminal),
        "stuck": [[i.id, i.state, i.attempts, i.lost_attempts, i.worker] for i in infos
                  if i is not None and not i.terminal][:20],
        "states": dict(history.states),
        "lost": len(history.lost), "undercounted": len(history.undercounted),
        "duplicates": history.duplicates,
        "duplicate_bound": sum(e["bound"] for e in chaos.events if e["done"]),
        "bounds": [[e["kind"], e["bound"]] for e in chaos.events if e["done"]],
        "held_reads": chaos.held_reads, "held_calls": chaos.held_calls,
        "unexplained": _unexplained(path, chaos.events),
        "leased_after": stats.by_state["leased"],
        "left_at_end": left_at_end,
        "cpus_back": cpus_back,
        "rss_mb": chaos.rss,
        "rpc_failure": os.environ.get("RAY_testing_rpc_failure"),  # noqa: SIM112
        "rpc_failures_injected": _injected_rpc_failures(session),
    }
    return summary


def _unexplained(path: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-runs no strike explains: tasks that finished more than once where no run
    was on a process a strike hit (killed, stopped, on a removed node, a worker of a
    killed pool manager) or, for a killed queue shard, on any worker running then,
    ending from STRIKE_WINDOW_S before it to STRIKE_WINDOW_S after it answered again.
    With the strikes, all in seconds from the first run's start (to read a failure)."""
    struck = [e for e in events if e["done"]]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in ledger.rows(path):
        if r["outcome"] == "ok":
            runs.setdefault(r["task_id"], []).append(r)
    t0 = min((r["start_ts"] for done in runs.values() for r in done), default=0.0)

    def explained(r: dict[str, Any]) -> bool:
        return any(r["pid"] in (e.get("pids") or ()) and (
            e["kind"] != "queue" or e["at"] - STRIKE_WINDOW_S <= r["end_ts"]
            <= (e.get("back") or float("inf")) + STRIKE_WINDOW_S) for e in struck)

    unexplained = [[[r["pid"], round(r["start_ts"] - t0, 2), round(r["end_ts"] - t0, 2)]
                    for r in done] for done in runs.values()
                   if len(done) > 1 and not any(explained(r) for r in done)]
    strikes = [[e["kind"], round(e["at"] - t0, 2),
                e.get("back") and round(e["back"] - t0, 2), e.get("pids")] for e in struck]
    return {"runs": unexplained[:20], "count": len(unexplained), "strikes": strikes}


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
