"""The benchmark suite W1-W8 (issues 5 and 7), on a private local Ray.

Run with ``make bench`` or ``python -m bench.suite [--only W1,W2] [--quick]``. Prints a
table, writes the figures as JSON to ``bench/out/results.json`` and CPU profiles of the
queue actor and a worker during W1 to ``bench/out/w1-*-profile.html`` (and ``.text``).
Asserts nothing: figures are read, not tested. W1-W7 are comparable to the peers'
numbers in issue 5 (no-op tasks, two worker actors, one producer); W8 is W1's drain
with the queue split over 1, 2 and 4 shards (issue 7). W1-postgres journals in
PostgreSQL (``$RAYQUEUE_BENCH_POSTGRES``, else a throwaway local server; issue 18).
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

import rayqueue
from bench.tasks import NoopTask, SleepTask, StampTask
from rayqueue import PoolConfig, TaskQueue, testing

OUT = Path(__file__).resolve().parent / "out"
#: Worker actors in every draining workload, as in the peers' measurements.
WORKERS = 2
#: Shard counts W8 compares.
SHARD_COUNTS = (1, 2, 4)
#: A pool no task is routed to: a queue whose tasks nobody claims (workers "stopped").
IDLE_POOL = PoolConfig(name="bench-idle", min_workers=1, max_workers=1)

Figures = dict[str, float]


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by this driver and each Ray actor process, by pid, with
    its role: ``driver``, or the actor class without ``Actor`` (``queue``, ``worker``,
    ``metrics``, ``poolmanager``...)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        pid = int(proc.name)
        role = ("driver" if pid == os.getpid() else
                cmd.removeprefix("ray::").split(".")[0].removesuffix("Actor").lower()
                if cmd.startswith("ray::") else None)
        if role is not None:
            fields = stat[stat.rfind(")") + 2:].split()
            out[pid] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this driver and by each kind of rayqueue actor."""
    out: dict[str, float] = {}
    for role, seconds in cpu_by_process().values():
        out[role] = out.get(role, 0.0) + seconds
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_workers(queue: TaskQueue[Any], n: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while sum(w.state == "running" for w in queue.workers()) < n:
        if time.monotonic() > end:
            raise TimeoutError(f"{n} workers did not start in {timeout} s")
        time.sleep(0.05)  # polling the pool while it starts workers


class LocalPostgres:
    """The PostgreSQL journal URL of a bench run: ``$RAYQUEUE_BENCH_POSTGRES``, else a
    throwaway server started on first use (as the tests start one: tests/pg.py) and
    stopped by :meth:`close`. Each queue is a schema of its own in it."""

    def __init__(self) -> None:
        self._pg: Any = None

    def url(self) -> str:
        url = os.environ.get("RAYQUEUE_BENCH_POSTGRES")
        if url:
            return url
        if self._pg is None:
            from tests.pg import PgServer, _bin_dir

            bindir = _bin_dir()
            if bindir is None:
                raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql) "
                                   "and RAYQUEUE_BENCH_POSTGRES is not set")
            self._pg = PgServer(bindir)
        return str(self._pg.url)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None


class Bench:
    """One Ray for the whole run; each workload opens its own queue."""

    def __init__(self, quick: bool, profile: bool) -> None:
        self.quick = quick
        self.profile = profile
        self.tmp = Path(tempfile.mkdtemp(prefix="rq-bench-", dir="/tmp"))
        self._pg = LocalPostgres()

    def postgres(self) -> str:
        """The PostgreSQL journal URL (see :class:`LocalPostgres`)."""
        return self._pg.url()

    def close(self) -> None:
        self._pg.close()

    @contextmanager
    def queue(self, *, journal: bool | str = False, workers: int = WORKERS,
              concurrency: int = 4, idle: bool = False,
              **kwargs: Any) -> Iterator[TaskQueue[Any]]:
        name = f"bench-{uuid.uuid4().hex[:6]}"
        pools = [IDLE_POOL] if idle else [PoolConfig(
            min_workers=workers, max_workers=workers, concurrency=concurrency)]
        path = (self.postgres() if journal == "postgres" else
                str(self.tmp / f"{name}.sqlite") if journal else None)
        queue = rayqueue.init(name, pools=pools, journal=path, **kwargs)
        try:
            wait_workers(queue, 1 if idle else workers)
            yield queue
        finally:
            queue.shutdown(timeout=10)

    # ------------------------------------------------------------ workloads
    def w1(self, journal: bool | str) -> Figures:
        """20,000 no-op tasks: enqueue rates and drain from first enqueue to last done."""
        n = 5_000 if self.quick else 20_000
        out: Figures = {}
        with self.queue(journal=journal, idle=True) as q:
            k = 1_000 if self.quick else 2_000
            t0 = time.perf_counter()
            for i in range(k):
                q.enqueue(NoopTask(i=i), wait=True)
            out["enqueue_per_task_wait_per_s"] = k / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: q.enqueue(NoopTask(i=i), wait=True), range(k)))
            out["enqueue_per_task_wait_8_threads_per_s"] = k / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(n):
                q.enqueue(NoopTask(i=i))  # pipelined (the default)
            q.flush()
            out["enqueue_per_task_nowait_per_s"] = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(0, n, 1_000):
                q.enqueue_many([NoopTask(i=j) for j in range(i, i + 1_000)])
            out["enqueue_batch_per_s"] = n / (time.perf_counter() - t0)
        with self.queue(journal=journal) as q:
            cpu0 = cpu_by_role()
            t0 = time.perf_counter()
            for i in range(0, n, 1_000):
                q.enqueue_many([NoopTask(i=j) for j in range(i, i + 1_000)])
            out["enqueue_batch_while_draining_per_s"] = n / (time.perf_counter() - t0)
            q.join(timeout=600)
            out["drain_per_s"] = n / (time.perf_counter() - t0)
            cpu1 = cpu_by_role()
            for role in ("queue", "worker", "metrics", "driver"):  # workers: both together
                out[f"cpu_us_per_task_{role}"] = 1e6 * (cpu1.get(role, 0.0)
                                                        - cpu0.get(role, 0.0)) / n
            if self.profile:  # a second, profiled drain: profiling slows what it sees
                label = journal if isinstance(journal, str) else (
                    "sqlite" if journal else "memory")
                profiler = _ActorProfiler(q, f"w1-{label}")
                q.enqueue_many([NoopTask(i=j) for j in range(n)])
                q.join(timeout=600)
                profiler.stop()
        return out

    def w2(self) -> Figures:
        """300 sequential single tasks on an idle system: enqueue to result seen."""
        n = 100 if self.quick else 300
        with self.queue() as q:
            for _ in range(20):  # warm up: classes resolved, threads started
                q.enqueue(NoopTask()).result(timeout=30)
            lat = []
            for i in range(n):
                t0 = time.perf_counter()
                q.enqueue(NoopTask(i=i)).result(timeout=30)
                lat.append((time.perf_counter() - t0) * 1e3)
        return {"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99)}

    def w3(self) -> Figures:
        """5,000 low then 500 high with workers paused; count inversions once resumed."""
        n_low, n_high = (1_000, 100) if self.quick else (5_000, 500)
        with self.queue() as q:
            q.pause()
            low = q.enqueue_many([NoopTask(i=i) for i in range(n_low)], priority=10)
            high = q.enqueue_many([NoopTask(i=i) for i in range(n_high)], priority=90)
            t0 = time.perf_counter()
            q.resume()
            q.join(timeout=600)
            wall = time.perf_counter() - t0
            infos = q.get_many([h.id for h in low + high])
        done = [i for i in infos if i is not None]
        last_high = max(i.finished_at or 0.0 for i in done if i.priority == 90)
        inversions = sum(1 for i in done if i.priority == 10 and (i.finished_at or 0) < last_high)
        last_high_start = max(i.started_at or 0.0 for i in done if i.priority == 90)
        start_inv = sum(1 for i in done
                        if i.priority == 10 and (i.started_at or 0) < last_high_start)
        return {"inversions": inversions, "handed_out_before_last_high": start_inv,
                "drain_per_s": (n_low + n_high) / wall}

    def w4(self) -> Figures:
        """2,000 tasks sleeping 10 ms on 16 slots; wall time against the ideal 1.25 s."""
        n, slots = (500, 16) if self.quick else (2_000, 16)
        with self.queue(concurrency=slots // WORKERS) as q:
            t0 = time.perf_counter()
            q.enqueue_many([SleepTask(ms=10) for _ in range(n)])
            q.join(timeout=600)
            wall = time.perf_counter() - t0
        ideal = n * 0.010 / slots
        return {"wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal}

    def w5(self) -> Figures:
        """300 tasks due over t+1..t+3 s: how late each starts (p50, p99)."""
        n = 100 if self.quick else 300
        with self.queue() as q:
            base = time.time() + 1.0
            dues = [base + 2.0 * i / n for i in range(n)]
            handles = [q.enqueue(StampTask(due=d),
                                 run_at=dt.datetime.fromtimestamp(d, dt.timezone.utc))
                       for d in dues]
            started = q.results(handles, timeout=60)
        late = [(s - d) * 1e3 for s, d in zip(started, dues, strict=True)]
        return {"p50_ms": statistics.median(late), "p99_ms": pct(late, 0.99),
                "early": sum(1 for x in late if x < 0)}

    def w6(self) -> Figures:
        """Bytes of queue-actor memory per queued task, at 100k and 1M queued."""
        marks = [20_000, 100_000] if self.quick else [100_000, 1_000_000]
        out: Figures = {}
        with self.queue(idle=True) as q:
            pid = int(ray.get(testing.actors(q).queue.pid.remote()))
            base = _rss_bytes(pid)
            done = 0
            for mark in marks:
                while done < mark:
                    q.enqueue_many([NoopTask(i=j) for j in range(done, done + 5_000)])
                    done += 5_000
                out[f"bytes_per_task_at_{mark}"] = (_rss_bytes(pid) - base) / mark
        return out

    def w7(self) -> Figures:
        """W1's drain with per-task lifecycle logging at INFO to a file, against off."""
        n = 5_000 if self.quick else 20_000
        out: Figures = {}
        log = self.tmp / "lifecycle.log"
        log.unlink(missing_ok=True)
        for label, env in (("off", {}), ("info_file", {
                "RAYQUEUE_LIFECYCLE_LEVEL": "INFO", "RAYQUEUE_LOG_FILE": str(log)})):
            with self.queue(actor_env=env) as q:
                t0 = time.perf_counter()
                for i in range(0, n, 1_000):
                    q.enqueue_many([NoopTask(i=j) for j in range(i, i + 1_000)])
                q.join(timeout=600)
                out[f"drain_{label}_per_s"] = n / (time.perf_counter() - t0)
        out["log_lines"] = sum(1 for _ in log.open()) if log.exists() else 0
        out["cost_pct"] = 100 * (1 - out["drain_info_file_per_s"] / out["drain_off_per_s"])
        return out


    def w8(self) -> Figures:
        """W1's drain (enqueue in batches while two workers drain, until joined) with the
        queue split over 1, 2 and 4 shards, in memory and with SQLite journals."""
        n = 5_000 if self.quick else 20_000
        out: Figures = {}
        for journal in (False, True):
            for shards in SHARD_COUNTS:
                with self.queue(journal=journal, shards=shards) as q:
                    cpu0 = cpu_by_role()
                    t0 = time.perf_counter()
                    for i in range(0, n, 1_000):
                        q.enqueue_many([NoopTask(i=j) for j in range(i, i + 1_000)])
                    q.join(timeout=600)
                    wall = time.perf_counter() - t0
                    cpu1 = cpu_by_role()
                key = f"{'sqlite' if journal else 'memory'}_{shards}"
                out[f"drain_{key}_per_s"] = n / wall
                # every process together: what one task costs the machine
                out[f"cpu_us_per_task_{key}"] = 1e6 * sum(
                    cpu1.get(r, 0.0) - cpu0.get(r, 0.0) for r in cpu1) / n
                out[f"cpu_us_per_task_{key}_queues"] = 1e6 * (
                    cpu1.get("queue", 0.0) - cpu0.get("queue", 0.0)) / n
        return out


class _ActorProfiler:
    """pyinstrument inside the queue actor and one worker for the length of a drain."""

    def __init__(self, queue: TaskQueue[Any], label: str) -> None:
        self.label = label
        workers = testing.worker_handles(queue)
        self.actors = {"queue": testing.actors(queue).queue, "worker": workers[0][1]}
        ray.get([a.profile_start.remote() for a in self.actors.values()])

    def stop(self) -> None:
        for role, actor in self.actors.items():
            report: dict[str, str] = ray.get(actor.profile_stop.remote())
            for kind, text in report.items():
                (OUT / f"{self.label}-{role}-profile.{kind}").write_text(text)


WORKLOADS: dict[str, tuple[str, Callable[[Bench], Figures]]] = {
    "W1-memory": ("throughput, in-memory queue", lambda b: b.w1(journal=False)),
    "W1-sqlite": ("throughput, SQLite journal (FULL)", lambda b: b.w1(journal=True)),
    "W1-postgres": ("throughput, PostgreSQL journal (sync on)",
                    lambda b: b.w1(journal="postgres")),
    "W2": ("latency, idle, sequential", Bench.w2),
    "W3": ("priority inversions", Bench.w3),
    "W4": ("I/O-bound, 16 slots", Bench.w4),
    "W5": ("scheduled start lateness", Bench.w5),
    "W6": ("memory per queued task", Bench.w6),
    "W7": ("lifecycle logging cost", Bench.w7),
    "W8": ("drain by shard count (1, 2, 4)", Bench.w8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated prefixes, e.g. W1,W3")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--no-profile", action="store_true", help="skip the W1 profile")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each workload this many times; print the median")
    parser.add_argument("--out", default=str(OUT / "results.json"))
    args = parser.parse_args()
    wanted = [w for w in WORKLOADS
              if not args.only or any(w.startswith(p) for p in args.only.split(","))]
    OUT.mkdir(exist_ok=True)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="rq-bench-ray-", dir="/tmp"))
    bench = Bench(quick=args.quick, profile=not args.no_profile)
    results: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "cpus": os.cpu_count(), "quick": args.quick}
    try:
        for key in wanted:
            what, run = WORKLOADS[key]
            t0 = time.perf_counter()
            runs: list[Figures] = []
            try:
                for _ in range(max(1, args.repeat)):
                    runs.append(run(bench))
                    bench.profile = False  # profile the first run only
            except Exception as err:  # one broken workload must not hide the others
                results[key] = {"error": f"{type(err).__name__}: {err}"}
                print(f"{key:<10} {what:<36} failed: {err}", flush=True)
                continue
            figures = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            bench.profile = not args.no_profile
            results[key] = {**figures, "runs": runs} if len(runs) > 1 else figures
            shown = "  ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in figures.items())
            print(f"{key:<10} {what:<36} {shown}  ({time.perf_counter() - t0:.0f} s"
                  f"{f', median of {len(runs)}' if len(runs) > 1 else ''})", flush=True)
    finally:
        ray.shutdown()
        bench.close()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
