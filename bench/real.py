"""The realistic family (issue 12): real task bodies, few slots, every enqueue style, and
the peers beside rayqueue in the same run.

Every task body makes one round trip to a private local ``redis-server`` (an RPUSH), as
a task that writes a row or calls a service does; the driver sees a task finished when
its push lands. Huey and Celery (2 worker processes, their normal per-task API) and
plain Ray tasks (2 slots) run the same body in the same pass, so the figures are ratios
from one machine at one time. rayqueue runs it on 2 workers x 1 slot, 2 x 4 and 2 x 8,
in memory, with the SQLite journal (FULL) and with the PostgreSQL journal
(``synchronous_commit`` on; ``$RAYQUEUE_BENCH_POSTGRES``, else a throwaway local
server), with four producers: the plain
``enqueue()`` loop, ``wait=False`` + ``flush()``, ``enqueue_many`` and
``enqueue_async``. For each case it prints the CPU each process spent per task and the
batch sizes the queue actor actually saw on enqueue, claim and report calls. The body's
own CPU (the redis client's round trip, timed alone in the driver first) is subtracted
from the workers' to give ``cpu_us_worker_overhead``: what rayqueue costs a worker per
task beside the body, for both workers together.

Run with ``make bench-real`` (``python -m bench.real [--quick] [--repeat 3]
[--no-peers]``); figures go to ``bench/out/real.json``. Asserts nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private throwaway cluster

import argparse
import asyncio
import datetime as dt
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

import rayqueue
from bench.suite import OUT, LocalPostgres, cpu_by_role, pct, wait_workers
from bench.tasks import RedisTask, redis_client
from rayqueue import PoolConfig, TaskQueue

ROOT = Path(__file__).resolve().parent.parent
#: (workers, slots each) of the rayqueue drains.
SLOTS = ((2, 1), (2, 4), (2, 8))
STYLES = ("loop", "nowait", "many", "async")
#: Where the queue keeps its tasks: no journal, SQLite FULL, PostgreSQL (sync on).
STORES = ("memory", "sqlite", "postgres")
Figures = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(tmp: Path) -> Iterator[int]:
    """A private redis-server on 127.0.0.1 (no persistence), stopped by its PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("bench.real needs redis-server (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                redis_client(port).ping()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)  # the server is starting
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class Done:
    """Counts the pushes that landed on one key: the driver's view of 'finished'."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.key = f"done-{uuid.uuid4().hex[:8]}"

    def wait(self, n: int, timeout: float = 600.0) -> None:
        client = redis_client(self.port)
        end = time.monotonic() + timeout
        while client.llen(self.key) < n:
            if time.monotonic() > end:
                raise TimeoutError(f"{client.llen(self.key)} of {n} finished")
            time.sleep(0.002)  # the bench polls; tests never do

    def latency(self, submit: Callable[[str], Any], n: int) -> list[float]:
        """Milliseconds from submit(key) to the push on key landing, n times in a row."""
        client = redis_client(self.port)
        out = []
        for i in range(n):
            key = f"{self.key}-{i}"
            t0 = time.perf_counter()
            submit(key)
            if client.blpop([key], timeout=30) is None:
                raise TimeoutError("a task did not finish in 30 s")
            out.append((time.perf_counter() - t0) * 1e3)
        return out


def body_cpu_us(port: int, n: int = 5_000) -> float:
    """CPU microseconds of one task body run alone in this process (no queue around
    it): the part of a worker's CPU per task that is the body, not rayqueue."""
    task = RedisTask(port=port, key=f"body-{uuid.uuid4().hex[:8]}")
    runs = []
    for _ in range(3):
        t0 = time.thread_time()
        for _ in range(n):
            task.execute()
        runs.append(1e6 * (time.thread_time() - t0) / n)
    redis_client(port).delete(task.key)
    return statistics.median(runs)


def _lat(values: list[float]) -> Figures:
    return {"p50_ms": statistics.median(values), "p99_ms": pct(values, 0.99)}


# ------------------------------------------------------------------ the peers
@contextmanager
def _consumer(cmd: list[str], port: int) -> Iterator[None]:
    env = {**os.environ, "BENCH_REDIS_PORT": str(port),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _peer_case(send: Callable[[str, float], Any], port: int, n: int,
               lat_n: int) -> Figures:
    done = Done(port)
    done.latency(lambda k: send(k, 0.0), 20)  # warm: consumers up, connections open
    t0 = time.perf_counter()
    for _ in range(n):
        send(done.key, 0.0)
    enq = time.perf_counter() - t0
    done.wait(n)
    wall = time.perf_counter() - t0
    lat = done.latency(lambda k: send(k, 0.0), lat_n)
    return {"enqueue_per_s": n / enq, "drain_per_s": n / wall,
            **{f"latency_{k}": v for k, v in _lat(lat).items()}}


def _sleeps(send: Callable[[str, float], Any], port: int, n: int, slots: int) -> Figures:
    done = Done(port)
    done.latency(lambda k: send(k, 0.0), 5)
    t0 = time.perf_counter()
    for _ in range(n):
        send(done.key, 10.0)
    done.wait(n)
    wall = time.perf_counter() - t0
    return {"sleeps_wall_over_ideal": wall / (n * 0.010 / slots)}


def huey_figures(port: int, n: int, lat_n: int, sleeps: int) -> Figures:
    from bench import peer_huey

    peer_huey.huey.flush()
    send = peer_huey.push
    exe = str(Path(sys.executable).with_name("huey_consumer"))
    with _consumer([exe, "bench.peer_huey.huey", "-w", "2", "-k", "process", "-q"], port):
        out = _peer_case(send, port, n, lat_n)
    with _consumer([exe, "bench.peer_huey.huey", "-w", "16", "-k", "thread", "-q"], port):
        out |= _sleeps(send, port, sleeps, 16)
    return out


def celery_figures(port: int, n: int, lat_n: int, sleeps: int) -> Figures:
    from bench import peer_celery


    def send(key: str, ms: float) -> Any:
        return peer_celery.push.delay(key, ms)

    exe = str(Path(sys.executable).with_name("celery"))
    common = ["-A", "bench.peer_celery", "worker", "--without-gossip", "--without-mingle",
              "--without-heartbeat", "-l", "error"]
    with _consumer([exe, *common, "-c", "2", "-P", "prefork"], port):
        out = _peer_case(send, port, n, lat_n)
    with _consumer([exe, *common, "-c", "16", "-P", "threads"], port):
        out |= _sleeps(send, port, sleeps, 16)
    return out


@ray.remote(num_cpus=0, resources={"bench_slot": 1})
def _ray_push(port: int, key: str) -> None:
    redis_client(port).rpush(key, b"1")


def ray_figures(port: int, n: int, lat_n: int) -> Figures:
    """Plain Ray tasks on 2 slots (a custom resource the bench's Ray has 2 of)."""
    done = Done(port)
    ray.get([_ray_push.remote(port, done.key) for _ in range(20)])
    done.wait(20)
    done = Done(port)
    t0 = time.perf_counter()
    refs = [_ray_push.remote(port, done.key) for _ in range(n)]
    enq = time.perf_counter() - t0
    done.wait(n)
    wall = time.perf_counter() - t0
    ray.get(refs)
    lat = done.latency(lambda k: _ray_push.remote(port, k), lat_n)
    res: list[float] = []
    for i in range(lat_n):
        t0 = time.perf_counter()
        ray.get(_ray_push.remote(port, f"{done.key}-r{i}"))
        res.append((time.perf_counter() - t0) * 1e3)
    return {"enqueue_per_s": n / enq, "drain_per_s": n / wall,
            **{f"latency_{k}": v for k, v in _lat(lat).items()},
            **{f"result_{k}": v for k, v in _lat(res).items()}}


# ------------------------------------------------------------------ rayqueue
class RayQueueBench:
    """rayqueue's side: one queue per (storage, slots), every producer style on it."""

    def __init__(self, port: int, tmp: Path, n: int, lat_n: int,
                 postgres: LocalPostgres, body_us: float = 0.0) -> None:
        self.port, self.tmp, self.n, self.lat_n = port, tmp, n, lat_n
        self.postgres = postgres
        #: the body's own CPU per task (``body_cpu_us``), taken off the workers' figure
        self.body_us = body_us

    @contextmanager
    def queue(self, store: str, workers: int, slots: int) -> Iterator[TaskQueue[Any]]:
        name = f"real-{uuid.uuid4().hex[:6]}"
        journal = (None if store == "memory" else self.postgres.url() if store == "postgres"
                   else str(self.tmp / f"{name}.sqlite"))
        q = rayqueue.init(name, pools=[PoolConfig(min_workers=workers, max_workers=workers,
                                                  concurrency=slots)], journal=journal)
        try:
            wait_workers(q, workers)
            done = Done(self.port)
            for h in [q.enqueue(RedisTask(port=self.port, key=done.key)) for _ in range(20)]:
                h.result(timeout=60)  # warm: classes resolved, connections open
            yield q
        finally:
            q.shutdown(timeout=10)

    def produce(self, q: TaskQueue[Any], style: str, key: str, n: int, tag: str = "1",
                **options: Any) -> list[str]:
        """Enqueue n tasks pushing ``tag`` to ``key`` in one producer style; their ids."""
        tasks = [RedisTask(port=self.port, key=key, tag=tag) for _ in range(n)]
        if style == "loop":
            handles = [q.enqueue(t, **options) for t in tasks]
            q.flush()
        elif style == "nowait":
            handles = [q.enqueue(t, wait=False, **options) for t in tasks]
            q.flush()
        elif style == "many":
            handles = [h for i in range(0, n, 1_000)
                       for h in q.enqueue_many(tasks[i:i + 1_000], **options)]
        else:
            async def go() -> list[Any]:
                return list(await asyncio.gather(
                    *(q.enqueue_async(t, **options) for t in tasks)))
            handles = asyncio.run(go())
        return [h.id for h in handles]

    def drain(self, q: TaskQueue[Any], style: str) -> Figures:
        done = Done(self.port)
        calls0 = q.metrics().calls
        cpu0 = cpu_by_role()
        t0 = time.perf_counter()
        self.produce(q, style, done.key, self.n)
        enq = time.perf_counter() - t0
        done.wait(self.n)
        wall = time.perf_counter() - t0
        cpu1 = cpu_by_role()
        out: Figures = {"enqueue_per_s": self.n / enq, "drain_per_s": self.n / wall}
        for role in ("queue", "worker", "metrics", "driver"):  # workers: both together
            out[f"cpu_us_{role}"] = 1e6 * (cpu1.get(role, 0.0) - cpu0.get(role, 0.0)) / self.n
        out["cpu_us_worker_overhead"] = out["cpu_us_worker"] - self.body_us
        out |= self._batches(q, calls0)
        return out

    def _batches(self, q: TaskQueue[Any], before: dict[str, tuple[int, int]]) -> Figures:
        """Tasks per queue-actor call by kind, once the reports' counts have arrived
        (the queue actor sends them to the metrics actor every 0.5 s)."""
        end = time.monotonic() + 5
        while True:
            calls = q.metrics().calls
            got = calls.get("report", (0, 0))[1] - before.get("report", (0, 0))[1]
            if got >= self.n or time.monotonic() > end:
                break
            time.sleep(0.1)  # until the next metrics flush
        out: Figures = {}
        for kind in ("enqueue", "claim", "report"):
            c1, i1 = calls.get(kind, (0, 0))
            c0, i0 = before.get(kind, (0, 0))
            out[f"batch_{kind}"] = (i1 - i0) / max(1, c1 - c0)
        return out

    def latency(self, q: TaskQueue[Any]) -> Figures:
        done = Done(self.port)
        fin = done.latency(lambda k: q.enqueue(RedisTask(port=self.port, key=k)), self.lat_n)
        res: list[float] = []
        for i in range(self.lat_n):
            t0 = time.perf_counter()
            q.enqueue(RedisTask(port=self.port, key=f"{done.key}-r{i}")).result(timeout=30)
            res.append((time.perf_counter() - t0) * 1e3)
        return ({f"latency_{k}": v for k, v in _lat(fin).items()}
                | {f"result_{k}": v for k, v in _lat(res).items()})

    def priority(self, q: TaskQueue[Any], style: str, n_low: int, n_high: int) -> Figures:
        """n_low at priority 10, then n_high at 90, enqueued while paused; once resumed,
        how many lows finished before the last high (in the order their bodies pushed)."""
        done = Done(self.port)
        q.pause()
        self.produce(q, style, done.key, n_low, tag="low", priority=10)
        self.produce(q, style, done.key, n_high, tag="high", priority=90)
        q.resume()
        done.wait(n_low + n_high)
        order = [x.decode() for x in redis_client(self.port).lrange(done.key, 0, -1)]
        last_high = max(i for i, tag in enumerate(order) if tag == "high")
        return {"lows_before_last_high": order[:last_high].count("low")}

    def sleeps(self, q: TaskQueue[Any], n: int, slots: int) -> Figures:
        done = Done(self.port)
        t0 = time.perf_counter()
        for _ in range(n):
            q.enqueue(RedisTask(port=self.port, key=done.key, ms=10.0))
        done.wait(n)
        return {"sleeps_wall_over_ideal": (time.perf_counter() - t0) / (n * 0.010 / slots)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--no-peers", action="store_true", help="rayqueue only")
    parser.add_argument("--only", default="", help="comma-separated case prefixes")
    parser.add_argument("--out", default=str(OUT / "real.json"))
    args = parser.parse_args()
    n = 3_000 if args.quick else 10_000
    lat_n = 100 if args.quick else 300
    sleeps = 500 if args.quick else 2_000
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rq-real-", dir="/tmp"))
    results: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "cpus": os.cpu_count(), "n": n, "body": "one redis RPUSH",
                               "repeat": args.repeat}

    def record(case: str, run: Callable[[], Figures]) -> None:
        if args.only and not any(case.startswith(p) for p in args.only.split(",")):
            return
        runs: list[Figures] = []
        t0 = time.perf_counter()
        try:
            for _ in range(max(1, args.repeat)):
                runs.append(run())
        except Exception as err:  # one broken case must not hide the others
            results[case] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{case:<28} failed: {type(err).__name__}: {err}", flush=True)
            return
        figures = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[case] = {**figures, "runs": runs}
        shown = "  ".join(f"{k}={v:,.1f}" for k, v in figures.items())
        print(f"{case:<28} {shown}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    with redis_server(tmp) as port:
        os.environ["BENCH_REDIS_PORT"] = str(port)  # before the peers' apps are imported
        results["body_cpu_us"] = body_us = body_cpu_us(port)
        print(f"{'body alone (CPU per task)':<28} {body_us:.1f} us", flush=True)
        if not args.no_peers:  # before Ray starts: the peers get the machine to themselves
            record("peer/huey", lambda: huey_figures(port, n, lat_n, sleeps))
            record("peer/celery", lambda: celery_figures(port, n, lat_n, sleeps))
        ray.init(address="local", num_cpus=4, resources={"bench_slot": 2},
                 include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="rq-real-ray-", dir="/tmp"))
        postgres = LocalPostgres()
        try:
            if not args.no_peers:
                record("peer/ray-tasks", lambda: ray_figures(port, n, lat_n))
            bench = RayQueueBench(port, tmp, n, lat_n, postgres, body_us)
            for store in STORES:
                if store == "postgres" and not _postgres_ready(postgres, results):
                    continue
                for workers, slots in SLOTS:
                    prefix = f"rq/{store}/{workers}x{slots}/"
                    if args.only and not any(
                            p.startswith(prefix) or prefix.startswith(p)
                            or (slots == 1 and f"rq/{store}/priority/".startswith(p))
                            for p in args.only.split(",")):
                        continue
                    with bench.queue(store, workers, slots) as q:
                        for style in STYLES:
                            record(prefix + style, lambda q=q, s=style: bench.drain(q, s))
                        if slots == 1:
                            record(prefix + "latency", lambda q=q: bench.latency(q))
                            for style in STYLES:
                                record(f"rq/{store}/priority/{style}",
                                       lambda q=q, s=style: bench.priority(q, s, 5_000, 500))
                        if slots == 8:
                            record(prefix + "sleeps-loop", lambda q=q, k=workers * slots:
                                   bench.sleeps(q, sleeps, k))
        finally:
            ray.shutdown()
            postgres.close()
    _ratios(results)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


def _postgres_ready(postgres: LocalPostgres, results: dict[str, Any]) -> bool:
    """Whether a PostgreSQL journal can be had here; if not, say why and skip its cases
    (the other figures of the run still count)."""
    try:
        postgres.url()
    except Exception as err:
        results["rq/postgres"] = {"error": f"{type(err).__name__}: {err}"}
        print(f"{'rq/postgres':<28} skipped: {type(err).__name__}: {err}", flush=True)
        return False
    return True


def _ratios(results: dict[str, Any]) -> None:
    """rayqueue's headline cases over Huey's figures from the same run."""
    huey = results.get("peer/huey")
    if not isinstance(huey, dict) or "error" in huey:
        return
    lines = []
    for case, fig in results.items():
        if not case.startswith("rq/") or not isinstance(fig, dict) or "error" in fig:
            continue
        for key in ("enqueue_per_s", "drain_per_s"):
            if key in fig:
                fig[f"{key}_vs_huey"] = fig[key] / huey[key]
        if "drain_per_s" in fig:
            lines.append(f"{case:<28} drain x{fig['drain_per_s_vs_huey']:.2f}  enqueue "
                         f"x{fig['enqueue_per_s_vs_huey']:.2f} of Huey's")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
