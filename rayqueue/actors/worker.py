"""WorkerActor: claims tasks of one pool, runs them, reports outcomes in batches.

Sync ``execute()`` runs on a thread pool the size of the worker's concurrency; async
``execute()`` runs on the actor's event loop. Every exception from task code,
``SystemExit`` and ``KeyboardInterrupt`` included, is caught and reported; the worker
lives on. The worker never decides retries or order: the queue does.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from loguru import logger

from rayqueue.config import NAMESPACE, actor_name
from rayqueue.core.queue import Failure, Lease, Outcome
from rayqueue.core.record import ErrorInfo
from rayqueue.core.retry import Retry
from rayqueue.errors import InvalidPayloadError, UnknownTaskError
from rayqueue.logging import configure
from rayqueue.task import (
    Task,
    TaskContext,
    decode_payload,
    encode_result,
    lookup,
    register,
    set_current,
)

#: Seconds a claim waits for work before the run loop looks around again.
CLAIM_WAIT_S = 1.0


class WorkerActor:
    """Runs tasks of one pool. Spawned and retired by the pool manager."""

    def __init__(
        self,
        queue: str,
        pool: str,
        worker_id: str,
        concurrency: int = 4,
        heartbeat_s: float = 5.0,
    ) -> None:
        configure("worker")
        self._queue = ray.get_actor(actor_name(queue, "queue"), namespace=NAMESPACE)
        self._pool = pool
        self._id = worker_id
        self._concurrency = concurrency
        self._heartbeat_s = heartbeat_s
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"rq-{worker_id}")
        self._running: dict[str, Lease] = {}
        self._outcomes: list[Outcome] = []
        self._draining = False
        self._wakeup: asyncio.Event | None = None
        self._report_kick: asyncio.Event | None = None
        self._node = ray.get_runtime_context().get_node_id()
        self._done = 0
        self._log = logger.bind(worker=worker_id, pool=pool)
        self._log.info("worker started", action="worker_started", node=self._node[:12],
                       pid=os.getpid())

    def __repr__(self) -> str:
        return f"Worker(pool={self._pool}, id={self._id}, node={self._node[:8]})"

    async def info(self) -> dict[str, Any]:
        """Where this worker runs and what it holds."""
        return {"id": self._id, "pid": os.getpid(), "node_id": self._node,
                "running": len(self._running), "done": self._done}

    async def drain(self) -> None:
        """Stop claiming; ``run()`` returns once the tasks held are finished and reported."""
        self._draining = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> int:
        """The run loop; returns the number of tasks run once drained."""
        self._wakeup = asyncio.Event()
        self._report_kick = asyncio.Event()
        reporter = asyncio.create_task(self._report_loop())
        beater = asyncio.create_task(self._heartbeat_loop())
        active: set[asyncio.Task[None]] = set()
        try:
            while not self._draining:
                free = self._concurrency - len(active)
                if free <= 0:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                leases: list[Lease] = await self._queue.claim.remote(
                    self._id, self._pool, free, CLAIM_WAIT_S)
                for lease in leases:
                    self._running[lease.task_id] = lease
                    job = asyncio.create_task(self._execute(lease))
                    active.add(job)
                    job.add_done_callback(self._finished(active))
            if active:
                await asyncio.gather(*active)
            await self._flush()
        finally:
            reporter.cancel()
            beater.cancel()
        self._log.info("worker drained after {} task(s)", self._done, action="worker_drained")
        return self._done

    def _finished(self, active: set[asyncio.Task[None]]) -> Any:
        def done(job: asyncio.Task[None]) -> None:
            active.discard(job)
            if self._wakeup is not None:
                self._wakeup.set()
        return done

    async def _execute(self, lease: Lease) -> None:
        log = self._log.bind(task_id=lease.task_id, task=lease.task_name, attempt=lease.attempt)
        outcome: Outcome
        cls: type[Task[Any]] | None = None
        try:
            cls = await self._resolve(lease.task_name)
            task = decode_payload(lease.task_name, lease.payload)
            log.debug("task started", action="task_started")
            set_current(TaskContext(lease.task_id, lease.attempt, self._id))
            with logger.contextualize(task_id=lease.task_id, attempt=lease.attempt):
                value = await self._call(task)
            outcome = Outcome(lease.task_id, lease.token, result=encode_result(cls, value))
        except BaseException as exc:  # task code may raise anything
            outcome = Outcome(lease.task_id, lease.token, failure=_failure(cls, exc))
            log.debug("task failed: {}: {}", type(exc).__name__, exc, action="task_failed")
        self._running.pop(lease.task_id, None)
        self._done += 1
        self._outcomes.append(outcome)
        if self._report_kick is not None:
            self._report_kick.set()

    async def _call(self, task: Task[Any]) -> Any:
        if inspect.iscoroutinefunction(type(task).execute):
            return await task.execute()
        loop = asyncio.get_running_loop()
        ctx = copy_context()
        value = await loop.run_in_executor(self._executor, ctx.run, task.execute)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _resolve(self, name: str) -> type[Task[Any]]:
        try:
            return lookup(name)
        except UnknownTaskError:
            blob = await self._queue.get_type.remote(name)
            if blob is None:
                raise
            cls: type[Task[Any]] = cloudpickle.loads(blob)
            # A class rebuilt by value gets its attributes (task_name included) after
            # its creation hook ran: register it again under its real name.
            register(cls)
            return cls

    async def _report_loop(self) -> None:
        assert self._report_kick is not None
        while True:
            await self._report_kick.wait()
            self._report_kick.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self._queue.report.remote(self._id, batch)
            except ray.exceptions.RayError as err:
                # The queue is unreachable: keep the outcomes and try again; if we die
                # first, the leases expire and the tasks run again (at-least-once).
                self._log.warning("report failed ({}); retrying", type(err).__name__,
                                  action="worker_report_failed")
                self._outcomes = batch + self._outcomes
                await asyncio.sleep(0.5)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            refs = [(lease.task_id, lease.token) for lease in self._running.values()]
            if refs:
                try:
                    await self._queue.heartbeat.remote(refs)
                except ray.exceptions.RayError as err:
                    self._log.warning("heartbeat failed: {}", err, action="worker_heartbeat_failed")


def _failure(cls: type[Task[Any]] | None, exc: BaseException) -> Failure:
    error = ErrorInfo.of(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))
    if isinstance(exc, (UnknownTaskError, InvalidPayloadError)) or cls is None:
        return Failure(error, retryable=False)
    if isinstance(exc, Retry):
        return Failure(error, retryable=True, retry_delay=exc.delay)
    return Failure(error, retryable=cls.retry.is_retryable(exc))
