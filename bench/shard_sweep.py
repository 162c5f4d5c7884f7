"""The shard sweep (issue 18, item 6): drain rate by shard count, sized to the machine.

Runs one queue at each shard count (1, 2, 4, 8 by default) on a private local Ray with
workers and producers scaled to the machine's cores, drains ``--tasks`` no-op tasks
enqueued by the producers (``enqueue_many`` batches of 500, from threads), and prints
the drain rate and the CPU each kind of process spent per task (all of that kind
together, how many there were, and the busiest one alone: one shard's process is what
caps it). Each shard count runs ``--repeat`` times; the figures are medians. Writes
them as JSON (``--out``). Meant to run in under 8 minutes on any machine, so it can be run on a
16- or 64-core machine when one is available::

    python -m bench.shard_sweep                      # SQLite FULL journals (the default)
    python -m bench.shard_sweep --memory --shards 1,2,4,8,16

Asserts nothing; no-op bodies make these upper bounds, not what a real body gets.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray

import rayqueue
from bench import suite
from bench.suite import OUT, wait_workers
from bench.tasks import NoopTask
from rayqueue import PoolConfig

BATCH = 500
#: What to call each process in the figures (by its role in bench.suite.cpu_by_process).
ROLES = {"driver": "driver", "queue": "queue", "worker": "worker", "metrics": "metrics",
         "poolmanager": "pool"}


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by this driver and each rayqueue actor process, by pid."""
    return {pid: (ROLES[role], seconds) for pid, (role, seconds) in suite.cpu_by_process().items()
            if role in ROLES}


def cpu_per_task(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                 tasks: int) -> dict[str, dict[str, float]]:
    """By role: µs of CPU per task of all its processes together, how many processes
    spent any, and the busiest one's µs per task."""
    spent: dict[str, list[float]] = {}
    for pid, (role, secs) in after.items():
        used = secs - before.get(pid, (role, 0.0))[1]
        if used > 0:
            spent.setdefault(role, []).append(1e6 * used / tasks)
    return {role: {"us": sum(v), "procs": len(v), "busiest_us": max(v)}
            for role, v in sorted(spent.items())}


def sweep_one(shards: int, tasks: int, workers: int, producers: int,
              journal_dir: Path | None) -> dict[str, Any]:
    """One queue of ``shards`` shards: drain ``tasks`` no-op tasks; its figures."""
    name = f"sweep-{uuid.uuid4().hex[:6]}"
    journal = None if journal_dir is None else str(journal_dir / f"{name}.sqlite")
    q = rayqueue.init(name, journal=journal, shards=shards, pools=[PoolConfig(
        min_workers=workers, max_workers=workers, concurrency=4)])
    try:
        wait_workers(q, workers, timeout=120)
        per = tasks // producers

        def produce(p: int) -> None:
            for start in range(p * per, (p + 1) * per, BATCH):
                q.enqueue_many([NoopTask(i=i) for i in range(start, min(start + BATCH,
                                                                       (p + 1) * per))])

        cpu0 = cpu_by_process()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(producers) as pool:
            list(pool.map(produce, range(producers)))
        enqueued = time.perf_counter() - t0
        q.join(timeout=600)
        wall = time.perf_counter() - t0
        cpu1 = cpu_by_process()
    finally:
        q.shutdown(timeout=10)
    done = per * producers
    return {
        "shards": shards, "tasks": done, "workers": workers, "producers": producers,
        "drain_per_s": done / wall, "enqueue_per_s": done / enqueued, "wall_s": wall,
        "cpu_per_task": cpu_per_task(cpu0, cpu1, done),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over runs of one shard count (CPU role by role)."""
    out = dict(runs[0])
    for key in ("drain_per_s", "enqueue_per_s", "wall_s"):
        out[key] = statistics.median(r[key] for r in runs)
    roles = {role for r in runs for role in r["cpu_per_task"]}
    out["cpu_per_task"] = {role: {k: statistics.median(
        r["cpu_per_task"].get(role, {}).get(k, 0.0) for r in runs)
        for k in ("us", "procs", "busiest_us")} for role in sorted(roles)}
    out["runs"] = runs
    return out


def main() -> None:
    cores = os.cpu_count() or 2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="1,2,4,8", help="shard counts to run")
    parser.add_argument("--tasks", type=int, default=10_000 * max(1, cores // 2),
                        help="tasks per shard count (default: 10,000 per 2 cores)")
    parser.add_argument("--workers", type=int, default=max(2, cores // 2),
                        help="worker actors (x4 slots; default: half the cores)")
    parser.add_argument("--producers", type=int, default=max(1, cores // 4),
                        help="producer threads (default: a quarter of the cores)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per shard count; the figures are medians")
    parser.add_argument("--memory", action="store_true", help="no journal (in memory)")
    parser.add_argument("--out", default=str(OUT / "shard-sweep.json"))
    args = parser.parse_args()
    counts = [int(s) for s in args.shards.split(",")]
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rq-sweep-", dir="/tmp"))
    ray.init(address="local", num_cpus=max(4, cores), include_dashboard=False,
             log_to_driver=False, _temp_dir=str(tmp / "ray"))
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(), "cpus": cores,
        "journal": "memory" if args.memory else "sqlite-full", "body": "no-op",
        "workers": args.workers, "slots": 4, "producers": args.producers,
        "tasks": args.tasks, "repeat": args.repeat, "loadavg_start": os.getloadavg(),
        "runs": []}
    print(f"shard sweep on {cores} cores, {args.workers} workers x 4 slots, "
          f"{args.producers} producer thread(s), {args.tasks:,} no-op tasks each, "
          f"{results['journal']} journal, medians of {args.repeat}")
    print("CPU: us per task of all processes of a kind [how many, the busiest one]")
    began = time.perf_counter()
    try:
        for shards in counts:
            figures = median_of([
                sweep_one(shards, args.tasks, args.workers, args.producers,
                          None if args.memory else tmp) for _ in range(max(1, args.repeat))])
            results["runs"].append(figures)
            cpu = "  ".join(f"{role} {c['us']:,.0f} [{c['procs']:.0f}, {c['busiest_us']:,.0f}]"
                            for role, c in figures["cpu_per_task"].items())
            print(f"{shards:>3} shard(s): drain {figures['drain_per_s']:>8,.0f}/s  "
                  f"enqueue {figures['enqueue_per_s']:>8,.0f}/s  CPU: {cpu}", flush=True)
    finally:
        ray.shutdown()
    results["elapsed_s"] = time.perf_counter() - began
    results["loadavg_end"] = os.getloadavg()
    print(f"{results['elapsed_s']:.0f} s in all")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
