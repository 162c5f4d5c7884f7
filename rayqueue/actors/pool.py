"""PoolManagerActor: keeps each pool's worker count where the backlog wants it.

Every cycle it reads demand from the queue, asks the pure ``ScalingPolicy`` for a
desired count, spawns workers (Ray resources, spread over nodes) or drains the surplus,
kills workers whose task overran its timeout, and learns of a dead worker at once by
awaiting its ``run()`` reference, then hands the worker's leases back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from loguru import logger

from rayqueue.actors import remote_class, restarted
from rayqueue.actors.worker import WorkerActor
from rayqueue.calls import ANSWER_TIMEOUT_S, bounded, shard_handles
from rayqueue.config import NAMESPACE, PoolConfig
from rayqueue.core.scaling import ScalingPolicy
from rayqueue.core.shards import merge_pool_status
from rayqueue.info import PoolInfo, WorkerInfo
from rayqueue.logging import configure
from rayqueue.middleware import Middleware
from rayqueue.protocol import Workers

#: Seconds between scaling cycles.
CYCLE_S = 0.25
#: A pool keeps a warm worker from this many seconds before one of its schedules is
#: due (a worker's cold start takes seconds; see README, "Scheduling").
SCHEDULE_WARMUP_S = 30.0
#: How often pools are checked against the cluster's nodes (ray.nodes() is a GCS call).
FEASIBILITY_EVERY_S = 5.0
#: Longest pause before replacing workers that keep dying (poison tasks, bad nodes).
MAX_RESPAWN_BACKOFF_S = 5.0
#: At shutdown, how long a worker still starting is waited for once the others are done.
STARTING_GRACE_S = 1.0


@dataclass
class _Worker:
    id: str
    pool: str
    handle: Any
    run_ref: Any
    started_at: float
    state: str = "starting"
    node_id: str | None = None
    pid: int | None = None


@dataclass
class _Pool:
    config: PoolConfig
    policy: ScalingPolicy
    workers: dict[str, _Worker] = field(default_factory=dict)
    desired: int = 0
    ready: int = 0
    leased: int = 0
    deaths: int = 0
    infeasible: str | None = None
    recent_deaths: int = 0
    next_spawn_at: float = 0.0


class PoolManagerActor:
    """Spawns, drains and replaces the worker actors of a queue's pools."""

    def __init__(self, queue: str, pools: list[PoolConfig], metrics: Any = None,
                 heartbeat_s: float = 5.0, shards: int = 1,
                 middleware: Sequence[Middleware] = ()) -> None:
        # First what __repr__ shows: Ray names the actor by it, even in a failed start.
        self._queue_name = queue
        self._pools = {p.name: _Pool(p, ScalingPolicy(p.scaling())) for p in pools}
        configure("pool")
        ctx = ray.get_runtime_context()
        self._shards = shard_handles(queue, shards)
        self._metrics = metrics
        #: given to every worker (their hooks run there)
        self._middleware = list(middleware)
        self._heartbeat_s = heartbeat_s
        self._ids = itertools.count(1)
        # Worker ids carry this incarnation, so a restarted manager can tell the queue
        # to take back the leases of the workers that died with its predecessor.
        self._incarnation = uuid.uuid4().hex[:6]
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._log = logger.bind(queue=queue)
        self._restarted = restarted()
        self._tasks_by_worker: dict[str, int] = {}
        self._next_feasibility_check = 0.0
        # start() is a call the actor makes to itself. Ray can fail it when it arrives
        # while Ray still counts this actor as restarting (seen after the node of the
        # pool manager died: the restarted manager never scaled, and no worker ever
        # came back), so it is made again until the scaling loop runs.
        threading.Thread(target=self._ensure_started, args=(ctx.current_actor,),
                         name="pool-start", daemon=True).start()

    def _ensure_started(self, me: Any) -> None:
        pause = threading.Event()
        while self._loop_task is None and not self._stopping:
            try:
                # A future, not ray.get: Ray warns about any blocking get in an async
                # actor ("Using blocking ray.get inside async actor"), a thread's too.
                me.start.remote().future().result(timeout=ANSWER_TIMEOUT_S)
            except Exception as err:  # failed or lost on the way: ask again
                self._log.debug("pool manager start not run yet ({}); asking again",
                                type(err).__name__, action="pool_start_retried")
                pause.wait(0.2)

    def __repr__(self) -> str:
        return f"PoolManager({self._queue_name}: {', '.join(self._pools)})"

    async def start(self) -> None:
        """Start the scaling loop (idempotent); after a restart, reclaim orphaned leases."""
        if self._loop_task is not None:
            return
        self._loop_task = asyncio.get_running_loop().create_task(self._cycle_loop())
        if self._restarted:
            # Our old workers were owned by the dead incarnation and died with it.
            ids = [i for part in await asyncio.gather(*(
                bounded(q.reclaim_workers.remote(f"{self._queue_name}/"), ANSWER_TIMEOUT_S)
                for q in self._shards))
                for i in part]
            self._log.warning("pool manager restarted: {} lease(s) of its old workers "
                              "returned", len(ids), action="pool_restarted")

    async def _cycle_loop(self) -> None:
        while not self._stopping:
            try:
                await self._cycle()
            except Exception as err:  # the loop must outlive any one cycle
                self._log.exception("scaling cycle failed: {}", err, action="pool_cycle_failed")
            await asyncio.sleep(CYCLE_S)

    async def _cycle(self) -> None:
        answers = await asyncio.gather(*(bounded(q.pool_status.remote(), ANSWER_TIMEOUT_S)
                                         for q in self._shards),
                                       return_exceptions=True)
        for err in answers:
            if isinstance(err, BaseException):
                # A shard restarting: scale and police on what the others said (their
                # timed-out lists were handed over and must not be dropped).
                self._log.warning("a queue shard did not answer ({})", type(err).__name__,
                                  action="pool_shard_unavailable")
        parts = [a for a in answers if not isinstance(a, BaseException)]
        if not parts:
            raise answers[0]  # no shard answered: skip this cycle (logged by the loop)
        status = merge_pool_status(parts)
        for task_id, worker_id in status.timed_out:
            self._kill_overrunning(worker_id, task_id)
        now = time.monotonic()
        self._tasks_by_worker = status.by_worker
        if now >= self._next_feasibility_check:
            self._next_feasibility_check = now + FEASIBILITY_EVERY_S
            # ray.nodes() is a blocking GCS call: keep it off the event loop.
            nodes = await asyncio.get_running_loop().run_in_executor(None, ray.nodes)
            self._check_feasible(nodes)
        for name, pool in self._pools.items():
            pool.ready = status.ready.get(name, 0)
            leased = pool.leased = status.leased.get(name, 0)
            live = [w for w in pool.workers.values() if w.state != "draining"]
            # A schedule due soon finds a warm worker: no cold start (seconds) makes its
            # run late, even in a pool that scales to zero.
            warm = status.schedule_in.get(name, math.inf) <= SCHEDULE_WARMUP_S
            # A paused queue's backlog asks for no worker: a pool that scales to zero
            # stays there until resume (then cold-starts within a cycle).
            decision = pool.policy.decide(backlog=status.claimable.get(name, 0),
                                          in_flight=leased, current=len(live), now=now,
                                          warm=warm)
            pool.desired = decision.desired
            if decision.desired > len(live) and now >= pool.next_spawn_at:
                for _ in range(decision.desired - len(live)):
                    self._spawn(pool)
                self._scaled(pool, len(live), decision.desired, decision.reason)
            elif decision.desired < len(live):
                surplus = sorted(live, key=lambda w: w.started_at, reverse=True)
                for worker in surplus[: len(live) - decision.desired]:
                    worker.state = "draining"
                    worker.handle.drain.remote()
                self._scaled(pool, len(live), decision.desired, decision.reason)
        self._report_workers()

    def _check_feasible(self, nodes: list[dict[str, Any]]) -> None:
        """Note (and log once) pools that no node of the cluster can host."""
        for name, pool in self._pools.items():
            why = pool.config.infeasible_on(nodes)
            if why and why != pool.infeasible:
                self._log.warning("pool {} cannot place workers: {}", name, why,
                                  action="pool_infeasible", pool=name)
            elif pool.infeasible and not why:
                self._log.info("pool {} can place workers again", name,
                               action="pool_feasible", pool=name)
            pool.infeasible = why

    def _scaled(self, pool: _Pool, old: int, new: int, reason: str) -> None:
        # DEBUG: a scale step is routine (a burst makes several); the worker count is in
        # the metrics (worker_history) and the log file at DEBUG.
        self._log.debug("pool {} scaled {} -> {} ({})", pool.config.name, old, new, reason,
                        action="pool_scaled", pool=pool.config.name, old=old, new=new)
        if pool.config.request_resources and new > old:
            from ray.autoscaler.sdk import request_resources

            bundle = {"CPU": pool.config.num_cpus, **pool.config.resources}
            if pool.config.num_gpus:
                bundle["GPU"] = pool.config.num_gpus
            request_resources(bundles=[bundle] * new)

    def _spawn(self, pool: _Pool) -> None:
        cfg = pool.config
        seq = next(self._ids)  # also the worker's first shard: workers start spread out
        worker_id = f"{self._queue_name}/{cfg.name}-{self._incarnation}-{seq}"
        handle = (
            remote_class(WorkerActor)
            .options(max_concurrency=cfg.concurrency + 16, max_restarts=0,
                     namespace=NAMESPACE, **cfg.ray_options())
            .remote(self._queue_name, cfg.name, worker_id, cfg.concurrency, self._heartbeat_s,
                    cfg.max_rss_mb, cfg.imports, len(self._shards), seq, self._middleware)
        )
        worker = _Worker(worker_id, cfg.name, handle, handle.run.remote(), time.monotonic())
        pool.workers[worker_id] = worker
        asyncio.get_running_loop().create_task(self._watch(pool, worker))

    async def _watch(self, pool: _Pool, worker: _Worker) -> None:
        try:
            info = await _info_of(worker.handle)
            worker.node_id, worker.pid = info["node_id"], info["pid"]
            if worker.state == "starting":
                worker.state = "running"
            await worker.run_ref
        except ray.exceptions.RayError as err:
            await self._lost(pool, worker, err)
            return
        pool.workers.pop(worker.id, None)
        ray.kill(worker.handle)
        self._log.debug("worker retired", action="worker_retired", worker=worker.id)

    async def _lost(self, pool: _Pool, worker: _Worker, err: Exception) -> None:
        pool.workers.pop(worker.id, None)
        # Make sure: a call that failed on the way (not a death) must not leave an
        # orphan worker claiming tasks that the queue is about to hand out again.
        ray.kill(worker.handle, no_restart=True)
        pool.deaths += 1
        lived = time.monotonic() - worker.started_at
        pool.recent_deaths = 0 if lived > 30 else pool.recent_deaths + 1
        backoff = min(MAX_RESPAWN_BACKOFF_S, 0.1 * 2 ** max(0, pool.recent_deaths - 1))
        pool.next_spawn_at = time.monotonic() + backoff
        self._log.warning("worker {} died ({}); respawn after {:.1f}s", worker.id,
                          type(err).__name__, backoff, action="worker_lost", worker=worker.id)
        answers = await asyncio.gather(*(bounded(q.worker_lost.remote(worker.id),
                                                 ANSWER_TIMEOUT_S)
                                         for q in self._shards),
                                       return_exceptions=True)
        for qerr in answers:
            if isinstance(qerr, Exception):
                self._log.error("could not return leases of {}: {}", worker.id, qerr,
                                action="worker_lost_unreported")

    def _kill_overrunning(self, worker_id: str, task_id: str) -> None:
        for pool in self._pools.values():
            worker = pool.workers.get(worker_id)
            if worker is not None:
                self._log.warning("killing {}: task {} overran its timeout or was cancelled "
                                  "with force", worker_id, task_id,
                                  action="worker_killed_timeout", worker=worker_id,
                                  task_id=task_id)
                ray.kill(worker.handle, no_restart=True)

    def _report_workers(self) -> None:
        if self._metrics is not None:
            self._metrics.record.remote(self._queue_name,
                                        [Workers(self.pool_infos(), self.worker_infos())])

    def pool_infos(self) -> list[PoolInfo]:
        """Size and demand of each pool."""
        return [
            PoolInfo(name=name, workers=len(p.workers), desired=p.desired, ready=p.ready,
                     leased=p.leased, min_workers=p.config.min_workers,
                     max_workers=p.config.max_workers, deaths=p.deaths,
                     infeasible=p.infeasible)
            for name, p in self._pools.items()
        ]

    def worker_infos(self) -> list[WorkerInfo]:
        """Every worker with its pool, node and state."""
        now_wall, now_mono = time.time(), time.monotonic()
        return [
            WorkerInfo(id=w.id, pool=w.pool, state=w.state, node_id=w.node_id, pid=w.pid,
                       started_at=now_wall - (now_mono - w.started_at),
                       tasks=self._tasks_by_worker.get(w.id, 0))
            for p in self._pools.values()
            for w in p.workers.values()
        ]

    async def pools(self) -> list[PoolInfo]:
        """Size, bounds and demand of each pool."""
        return self.pool_infos()

    async def resize(self, pool: str, min_workers: int, max_workers: int) -> PoolInfo:
        """Change a pool's worker bounds; the next scaling cycle applies them.

        Raises:
            ValueError: no such pool, or bounds a PoolConfig refuses (negative, min > max).
        """
        if pool not in self._pools:
            raise ValueError(f"no pool named {pool!r}; pools: {', '.join(self._pools)}")
        entry = self._pools[pool]
        config = PoolConfig.model_validate({**entry.config.model_dump(),
                                            "min_workers": min_workers,
                                            "max_workers": max_workers})
        entry.config, entry.policy = config, ScalingPolicy(config.scaling())
        self._log.info("pool {} resized to {}..{} workers", pool, min_workers, max_workers,
                       action="pool_resized", pool=pool)
        return next(p for p in self.pool_infos() if p.name == pool)

    async def workers(self) -> list[WorkerInfo]:
        """Every worker with its pool, node and state."""
        return self.worker_infos()

    async def pid(self) -> int:
        """This manager's process id (for fault-injection tests)."""
        return os.getpid()

    async def worker_pid(self, worker_id: str) -> int | None:
        """The process id of a worker (for fault-injection tests)."""
        for pool in self._pools.values():
            worker = pool.workers.get(worker_id)
            if worker is not None:
                info = await worker.handle.info.remote()
                return int(info["pid"])
        return None

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Drain every worker (waiting up to ``timeout`` s), then kill what is left.

        Workers finish what they can within ``timeout`` and release the rest to the
        queue without counting an attempt.
        """
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        workers = [w for p in self._pools.values() for w in p.workers.values()]
        # A worker that never answered (still starting: no node has its resources, say)
        # is not waited for beyond the others plus STARTING_GRACE_S: it can hold no more
        # than a claim's worth, and a lease of a killed worker only runs again. (A pool
        # no node could place held every shutdown for its whole timeout plus 5 s.)
        started = [asyncio.ensure_future(_settle(w.run_ref))
                   for w in workers if w.state != "starting"]
        still = [asyncio.ensure_future(_settle(w.run_ref))
                 for w in workers if w.state == "starting"]
        for worker in workers:
            worker.state = "draining"
            worker.handle.drain.remote(timeout)
        if started:
            await asyncio.wait(started, timeout=timeout + 5)
        if still:
            await asyncio.wait(still, timeout=STARTING_GRACE_S)
        for worker in workers:
            ray.kill(worker.handle)
        for pool in self._pools.values():
            pool.workers.clear()


async def _info_of(handle: Any, tries: int = 5) -> dict[str, Any]:
    """A worker's ``info()``, retried when the call (not the worker) failed."""
    for attempt in range(1, tries + 1):
        try:
            info: dict[str, Any] = await bounded(handle.info.remote(), ANSWER_TIMEOUT_S)
            return info
        except ray.exceptions.ActorDiedError:
            raise
        except ray.exceptions.RayError:
            if attempt == tries:
                raise
            await asyncio.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


async def _settle(ref: Any) -> None:
    with contextlib.suppress(ray.exceptions.RayError):
        await ref
