"""WorkerActor: claims tasks of one pool, runs them, reports outcomes in batches.

Sync ``execute()`` runs on a thread pool the size of the worker's concurrency; async
``execute()`` runs on the actor's event loop. Every exception from task code,
``SystemExit`` and ``KeyboardInterrupt`` included, is caught and reported; the worker
lives on. The worker never decides retries or order: the queue does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import ray
from loguru import logger

from rayqueue.actors.profiling import LoopProfiler
from rayqueue.codebook import resolve
from rayqueue.config import NAMESPACE, actor_name
from rayqueue.core.lease import Failure, Lease, Outcome, pack_outcomes, unpack_leases
from rayqueue.core.record import ErrorInfo
from rayqueue.core.retry import Retry
from rayqueue.errors import InvalidPayloadError, UnknownTaskError
from rayqueue.logging import configure, lifecycle
from rayqueue.task import (
    Task,
    TaskContext,
    decode_payload,
    encode_result,
    set_current,
)

#: Seconds a claim waits for work before the run loop looks around again.
CLAIM_WAIT_S = 1.0
#: A worker holds beyond its free slots only what it expects to start within this
#: many seconds at its measured rate, so a batch never keeps urgent work waiting long.
PREFETCH_HORIZON_S = 0.05
#: Most tasks a worker holds waiting for a slot.
MAX_PREFETCH = 500
#: Longest error message and traceback text kept from a failed attempt.
MAX_MESSAGE = 2_000
MAX_TRACEBACK = 8_000


class WorkerActor:
    """Runs tasks of one pool. Spawned and retired by the pool manager."""

    def __init__(
        self,
        queue: str,
        pool: str,
        worker_id: str,
        concurrency: int = 4,
        heartbeat_s: float = 5.0,
        max_rss_mb: float | None = None,
        imports: Sequence[str] = (),
    ) -> None:
        configure("worker")
        self._queue = ray.get_actor(actor_name(queue, "queue"), namespace=NAMESPACE)
        self._queue_name = queue
        self._classes: dict[str, type[Task[Any]]] = {}
        self._resolving = asyncio.Lock()
        for module in imports:
            importlib.import_module(module)  # configured code: registers its task types
        self._pool = pool
        self._id = worker_id
        self._concurrency = concurrency
        self._heartbeat_s = heartbeat_s
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"rq-{worker_id}")
        self._running: dict[str, Lease] = {}
        self._outcomes: list[Outcome] = []
        self._draining = False
        self._isolating = False
        self._claim_failures = 0
        #: tasks whose outcome is buffered or being reported, not yet acknowledged
        self._unacked: set[str] = set()
        self._drain_deadline: float | None = None
        self._max_rss_mb = max_rss_mb
        self._wakeup: asyncio.Event | None = None
        self._report_kick: asyncio.Event | None = None
        self._node = ray.get_runtime_context().get_node_id()
        self._done = 0
        self._slots: asyncio.Semaphore | None = None
        self._rate = _RateMeter()
        #: prefetched tasks not started before a drain: given back unrun
        self._unstarted: list[Lease] = []
        self._profiler = LoopProfiler()
        self._log = logger.bind(worker=worker_id, pool=pool)
        self._log.info("worker started", action="worker_started", node=self._node[:12],
                       pid=os.getpid())

    def __repr__(self) -> str:
        return f"Worker(pool={self._pool}, id={self._id}, node={self._node[:8]})"

    async def info(self) -> dict[str, Any]:
        """Where this worker runs and what it holds."""
        return {"id": self._id, "pid": os.getpid(), "node_id": self._node,
                "running": len(self._running), "done": self._done}

    async def profile_start(self) -> None:
        """Bench hook: start a CPU profile of the event loop (needs pyinstrument)."""
        self._profiler.start()

    async def profile_stop(self) -> dict[str, str]:
        """Bench hook: stop the profile; returns its report as ``html`` and ``text``."""
        return self._profiler.stop()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop claiming; ``run()`` returns once the tasks held are finished and reported.

        With ``timeout``, tasks still running after that many seconds are released back
        to the queue (their attempt does not count) and ``run()`` returns without them.
        """
        self._draining = True
        if timeout is not None:
            self._drain_deadline = asyncio.get_running_loop().time() + timeout
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> int:
        """The run loop; returns the number of tasks run once drained."""
        self._wakeup = asyncio.Event()
        self._report_kick = asyncio.Event()
        self._slots = asyncio.Semaphore(self._concurrency)
        reporter = asyncio.create_task(self._report_loop())
        beater = asyncio.create_task(self._heartbeat_loop())
        active: set[asyncio.Task[None]] = set()
        try:
            while not self._draining:
                # Claim when a slot is free, or when the prefetched work ran down to half
                # of what is wanted: big batches, and the next one arrives in time.
                free = self._concurrency - len(active)
                target = self._concurrency + self._rate.expected(
                    PREFETCH_HORIZON_S, MAX_PREFETCH, self._done)
                if self._isolating or (free <= 0 and len(active) > target // 2):
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                room = target - len(active)
                slots = min(room, max(free, 1))
                try:
                    held = [*self._running, *self._unacked]
                    leases = unpack_leases(await self._queue.claim.remote(
                        self._id, self._pool, slots, CLAIM_WAIT_S, not active, held,
                        room - slots))
                    self._claim_failures = 0
                except ray.exceptions.RayError as err:
                    # The queue is restarting, its journal failed, or the call was lost:
                    # back off and try again (leases granted meanwhile are reconciled).
                    self._claim_failures += 1
                    self._log.warning("claim failed ({}); retrying", type(err).__name__,
                                      action="worker_claim_failed")
                    await asyncio.sleep(min(0.05 * 2 ** self._claim_failures, CLAIM_WAIT_S))
                    continue
                for lease in leases:
                    if lease.suspect:
                        # Its last worker died under it: run it alone (claims nothing more).
                        self._isolating = True
                    self._running[lease.task_id] = lease
                    job = asyncio.create_task(self._execute(lease))
                    active.add(job)
                    job.add_done_callback(self._finished(active))
            if active:
                await self._finish(active)
            await self._give_back_unstarted()
            await self._flush()
        finally:
            reporter.cancel()
            beater.cancel()
        self._log.info("worker drained after {} task(s)", self._done, action="worker_drained")
        return self._done

    async def _finish(self, active: set[asyncio.Task[None]]) -> None:
        """Wait for running tasks; past the drain deadline, release what is left."""
        loop = asyncio.get_running_loop()
        left = None if self._drain_deadline is None else self._drain_deadline - loop.time()
        _, pending = await asyncio.wait(set(active), timeout=left)
        if not pending:
            return
        refs = [(lease.task_id, lease.token) for lease in self._running.values()]
        self._running.clear()
        for job in pending:
            job.cancel()  # a thread cannot be stopped; its outcome is dropped
        self._log.info("drain deadline passed: releasing {} task(s)", len(refs),
                       action="worker_released", tasks=[r[0] for r in refs])
        with contextlib.suppress(ray.exceptions.RayError):
            await self._queue.release.remote(refs)

    async def _give_back_unstarted(self) -> None:
        """Release prefetched tasks a drain stopped before they started (not an attempt)."""
        refs = [(lease.task_id, lease.token) for lease in self._unstarted]
        self._unstarted.clear()
        if refs:
            self._log.info("draining: {} prefetched task(s) given back unrun", len(refs),
                           action="worker_released", tasks=[r[0] for r in refs])
            with contextlib.suppress(ray.exceptions.RayError):
                await self._queue.release.remote(refs)

    def _finished(self, active: set[asyncio.Task[None]]) -> Any:
        def done(job: asyncio.Task[None]) -> None:
            active.discard(job)
            if not active:
                self._isolating = False
            if self._wakeup is not None:
                self._wakeup.set()
        return done

    async def _execute(self, lease: Lease) -> None:
        assert self._slots is not None
        async with self._slots:
            if self._draining:
                # A draining worker hands prefetched work back rather than start it.
                self._running.pop(lease.task_id, None)
                self._unstarted.append(lease)
                return
            await self._run_one(lease)

    async def _run_one(self, lease: Lease) -> None:
        outcome: Outcome
        try:
            cls = await self._resolve(lease.task_name)
            task = decode_payload(lease.task_name, lease.payload, cls)
        except UnknownTaskError as exc:
            # No class for this name yet (a client may still ship it, e.g. after a cold
            # restart): retry with backoff; dead as unknown_task when attempts run out.
            # Never an import of the name: the name is data.
            failure = Failure(ErrorInfo.from_exception(exc), retryable=True,
                              retry_delay=min(2.0 ** lease.attempt, 30.0), reason="unknown_task")
            self._deliver(lease, Outcome(lease.task_id, lease.token, failure=failure))
            self._task_log(lease).warning("no class for task {!r}", lease.task_name,
                                          action="task_unknown")
            return
        except InvalidPayloadError as exc:
            # Data the code cannot take: never retried.
            reason = _payload_reason(exc)
            self._deliver(lease, Outcome(lease.task_id, lease.token, failure=Failure(
                ErrorInfo.from_exception(exc), retryable=False, reason=reason)))
            self._task_log(lease).warning("task rejected ({}): {}", reason, exc,
                                          action="task_rejected")
            return
        try:
            records = lifecycle()
            if records is not None:
                records.emit("task started", "task_started", worker=self._id,
                             task_id=lease.task_id, task=lease.task_name, attempt=lease.attempt)
            set_current(TaskContext(lease.task_id, lease.attempt, self._id))
            with logger.contextualize(task_id=lease.task_id, attempt=lease.attempt):
                value = await self._call(task)
            outcome = Outcome(lease.task_id, lease.token, result=encode_result(cls, value))
        except asyncio.CancelledError:
            raise  # released at a drain deadline: no outcome
        except BaseException as exc:  # task code may raise anything
            outcome = Outcome(lease.task_id, lease.token, failure=_failure(cls, exc))
            records = lifecycle()
            if records is not None:
                records.emit(f"task failed: {_describe(exc)}", "task_failed", worker=self._id,
                             task_id=lease.task_id, task=lease.task_name, attempt=lease.attempt)
        self._deliver(lease, outcome)
        if self._max_rss_mb is not None and _rss_mb() > self._max_rss_mb:
            self._log.warning("memory {:.0f} MB over the limit of {:.0f} MB: recycling",
                              _rss_mb(), self._max_rss_mb, action="worker_recycled")
            await self.drain()

    def _task_log(self, lease: Lease) -> Any:
        return self._log.bind(task_id=lease.task_id, task=lease.task_name,
                              attempt=lease.attempt)

    def _deliver(self, lease: Lease, outcome: Outcome) -> None:
        self._unacked.add(lease.task_id)
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
        cls = self._classes.get(name)
        if cls is None:
            # One resolution at a time: a class being rebuilt by value is incomplete
            # until cloudpickle has set its state, and must not be used before.
            async with self._resolving:
                cls = self._classes.get(name)
                if cls is None:
                    loop = asyncio.get_running_loop()
                    cls = await loop.run_in_executor(None, resolve, self._queue_name, name)
                    self._classes[name] = cls
        return cls

    async def _report_loop(self) -> None:
        assert self._report_kick is not None
        while True:
            await self._report_kick.wait()
            self._report_kick.clear()
            await self._flush()

    async def _flush(self) -> None:
        records = lifecycle()
        if records is not None:
            records.flush()
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self._queue.report.remote(self._id, pack_outcomes(batch))
                self._unacked.difference_update(o.task_id for o in batch)
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


def _message(exc: BaseException) -> str:
    """``str(exc)`` cut to MAX_MESSAGE, even for exceptions whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception as err:  # a misbehaving exception must not take the worker down
        text = f"<str() failed: {type(err).__name__}>"
    return text[:MAX_MESSAGE]  # cut first: a 50 MB message is not copied around


def _describe(exc: BaseException) -> str:
    """``Type: message`` for logs."""
    return f"{type(exc).__name__}: {_message(exc)}"


def _failure(cls: type[Task[Any]], exc: BaseException) -> Failure:
    message = _message(exc)
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except Exception as err:
        frames = f"  <frames unavailable: {type(err).__name__}>\n"
    room = MAX_TRACEBACK - MAX_MESSAGE - 200
    if len(frames) > room:
        frames = "  ...\n" + frames[-room:]  # the innermost frames matter most
    tb = f"Traceback (most recent call last):\n{frames}{type(exc).__name__}: {message}\n"
    error = ErrorInfo.of(type(exc).__name__, message, tb)
    if isinstance(exc, InvalidPayloadError):  # the result did not match its type
        return Failure(error, retryable=False, reason="invalid_result")
    if isinstance(exc, Retry):
        return Failure(error, retryable=True, retry_delay=exc.delay)
    try:
        retryable = cls.retry.is_retryable(exc)
    except Exception:
        retryable = False
    return Failure(error, retryable=retryable)


def _payload_reason(exc: InvalidPayloadError) -> str:
    """``invalid_payload`` for data that is not JSON (e.g. an injected pickle), else
    ``schema_mismatch`` (JSON that no longer fits the task model)."""
    return "invalid_payload" if "json_invalid" in exc.detail.lower() or (
        "invalid json" in exc.detail.lower()) else "schema_mismatch"


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RateMeter:
    """Tasks finished per second, smoothed; decays to zero when the worker idles."""

    def __init__(self, every: float = 0.1) -> None:
        self._every = every
        self._rate = 0.0
        self._at = 0.0
        self._done = 0

    def expected(self, horizon: float, cap: int, done: int) -> int:
        """How many tasks this worker finishes in ``horizon`` s at its recent rate."""
        now = time.monotonic()
        if now - self._at >= self._every:
            if self._at:
                recent = (done - self._done) / (now - self._at)
                self._rate = 0.5 * self._rate + 0.5 * recent
            self._at, self._done = now, done
        return min(cap, int(self._rate * horizon))
