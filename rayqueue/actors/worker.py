"""WorkerActor: claims tasks of one pool, runs them, reports outcomes in batches.

Sync ``execute()`` runs on the worker's runner threads (as many as its concurrency),
which take tasks in claim order and hand outcomes back in batches; async ``execute()``
runs on the actor's event loop. A worker prefetches what it expects to start within
50 ms, so claims and reports are batches, not calls per task. Every exception from task code,
``SystemExit`` and ``KeyboardInterrupt`` included, is caught and reported; the worker
lives on. The worker never decides retries or order: the queue does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import ray
from loguru import logger

from rayqueue.actors.profiling import LoopProfiler
from rayqueue.actors.runner import (
    SIGNALS,
    LifecycleMiddleware,
    SyncRunner,
    cancelled_outcome,
    failed,
    is_async,
    run_async,
    run_sync,
)
from rayqueue.calls import ANSWER_TIMEOUT_S, bounded, every, shard_handles, stop
from rayqueue.codebook import resolve
from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.record import ErrorInfo
from rayqueue.core.shards import ShardChooser, shard_of, split
from rayqueue.errors import UnknownTaskError
from rayqueue.logging import configure, lifecycle
from rayqueue.middleware import Hooks, Middleware, WorkerStart, install_worker_hooks
from rayqueue.protocol import ClaimRequest, pack_outcomes, unpack_leases
from rayqueue.task import Task, TaskSignals

#: Seconds a claim waits for work before the run loop looks around again.
CLAIM_WAIT_S = 1.0
#: A worker holds beyond its free slots only what it expects to start within this
#: many seconds (at its threads' pace, or its measured rate for async tasks), so a
#: batch never keeps urgent work waiting long.
PREFETCH_HORIZON_S = 0.05
#: Most tasks a worker holds waiting for a slot.
MAX_PREFETCH = 500
#: Most a worker prefetches per slot on its threads' pace alone (beyond that, only a
#: measured rate of finished tasks earns more).
PACE_PREFETCH_PER_SLOT = 128
#: While a worker still holds tasks, outcomes wait up to this long to share a report,
#: or to ride on the worker's next claim (one call for both); an idle worker, one that
#: runs nothing more, reports at once.
REPORT_DELAY_S = 0.05
#: Seconds before a start confirmation whose call failed is sent again.
CONFIRM_RETRY_S = 0.5
#: ... unless this many are waiting already.
REPORT_BATCH = 256
# Every call to the queue waits at most ANSWER_TIMEOUT_S for its answer (a claim its
# long-poll more): Ray can lose a request or its reply, and without a deadline one lost
# reply idles the worker for good. A call that times out is treated as failed and made
# again; what it did is reconciled (``held`` on the next claim) or fenced (a repeated
# outcome).
#: Heartbeats out at once, at most: one unanswered this many periods is given up on.
BEATS_OUT = 3
#: While its runner threads hold tasks, the loop takes their outcomes at least this
#: often (between the wake-ups for a free slot or a refill, see runner.py).
OUTBOX_POLL_S = 0.01
#: A worker of a sharded queue looks at every shard at least this often, so urgent work
#: arriving in any shard is seen within it (the bound on priority across shards).
SHARD_REFRESH_S = 0.05
#: While it runs tasks, a worker asks the queue this often which of them were cancelled,
#: and sends their latest progress with the question (one small call per shard).
SIGNAL_S = 0.25


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
        shards: int = 1,
        start_shard: int = 0,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        # First what __repr__ shows: Ray names the actor by it, even in a failed start.
        self._pool = pool
        self._id = worker_id
        self._node = ray.get_runtime_context().get_node_id()
        configure("worker")
        records = lifecycle()
        # One worker actor per process: the attempt pipeline finds its hooks there.
        self._hooks = Hooks([*([LifecycleMiddleware(records)] if records else []),
                             *middleware])
        install_worker_hooks(self._hooks)
        #: the queue's shard actors (one for an unsharded queue); every lease, report,
        #: heartbeat and release goes to the shard that owns its task
        self._shards = shard_handles(queue, shards)
        self._queue = self._shards[0]
        self._chooser = ShardChooser(shards, start_shard, SHARD_REFRESH_S)
        #: long-polling claims on shards that had nothing, by shard
        self._parked: dict[int, asyncio.Task[None]] = {}
        self._queue_name = queue
        self._classes: dict[str, type[Task[Any]]] = {}
        self._resolving = asyncio.Lock()
        for module in imports:
            importlib.import_module(module)  # configured code: registers its task types
        self._concurrency = concurrency
        self._heartbeat_s = heartbeat_s
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"rq-{worker_id}")
        self._running: dict[str, Lease] = {}
        self._outcomes: list[Outcome] = []
        self._draining = False
        self._isolating = False
        self._claim_failures = 0
        #: the last claim's reply said the pool had no ready task left: a worker with no
        #: free slot sends no prefetch claim (it would come back empty) until one of its
        #: tasks ends
        self._nothing_left = False
        #: a claim call is out, or the run loop backs off after a failed one: buffered
        #: outcomes go to the report loop then, not onto the next claim
        self._claiming = False
        #: tasks whose outcome is buffered or being reported, not yet acknowledged
        self._unacked: dict[str, int] = {}
        self._drain_deadline: float | None = None
        self._max_rss_mb = max_rss_mb
        self._wakeup: asyncio.Event | None = None
        self._report_kick: asyncio.Event | None = None
        #: set when the worker runs nothing more: its outcomes go out without delay
        self._report_now: asyncio.Event | None = None
        self._done = 0
        self._slots: asyncio.Semaphore | None = None
        self._rate = _RateMeter()
        #: prefetched tasks not started before a drain: given back unrun
        self._unstarted: list[Lease] = []
        self._runner: SyncRunner | None = None
        self._flush_lock = asyncio.Lock()
        #: starts to confirm to the queue (leases marked ``confirm``), and the call
        #: sending them, if one is out
        self._to_confirm: list[tuple[str, int]] = []
        self._confirming: asyncio.Task[None] | None = None
        #: asyncio tasks of attempts run on the event loop (async tasks, first of a class)
        self._jobs: set[asyncio.Task[None]] = set()
        #: the asyncio task running each such attempt, by task id (to cancel it)
        self._job_of: dict[str, asyncio.Task[None]] = {}
        #: of those, the ones running a sync attempt on an executor thread
        self._in_thread: set[str] = set()
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
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._report_kick = asyncio.Event()
        self._report_now = asyncio.Event()
        self._slots = asyncio.Semaphore(self._concurrency)
        self._runner = SyncRunner(self._concurrency, self._id, loop, self._deliver_many,
                                  self._confirm)
        reporter = asyncio.create_task(self._report_loop())
        beater = asyncio.create_task(self._heartbeat_loop())
        poller = asyncio.create_task(self._poll_loop())
        signaller = asyncio.create_task(self._signal_loop())
        me = WorkerStart(self._id, self._pool, self._queue_name, os.getpid())
        self._hooks.call("worker_started", me)
        try:
            while not self._draining:
                # Claim when a slot is free, or when the prefetched work ran down to half
                # of what is wanted: big batches, and the next one arrives in time.
                held = len(self._running)
                free = self._concurrency - held
                target = self._concurrency + min(MAX_PREFETCH, max(
                    self._rate.expected(PREFETCH_HORIZON_S, MAX_PREFETCH, self._done),
                    self._runner.capacity(PREFETCH_HORIZON_S, PACE_PREFETCH_PER_SLOT)))
                if self._isolating or (free <= 0 and (held > target // 2
                                                      or self._nothing_left)):
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                room = target - held
                # The runner wakes this loop to claim again when what it has left to
                # start runs down to half of what is wanted.
                self._runner.low_water = max(0, target // 2 - self._concurrency)
                if len(self._shards) > 1:
                    await self._claim_sharded(min(room, max(free, 1)), room)
                    continue
                # The queue is told the free slots exactly: what goes beyond them is
                # prefetch, which it grants only where no free slot elsewhere needs it.
                slots = max(0, min(room, free))
                # Buffered outcomes ride on the claim: one call, one commit for both.
                outcomes, self._outcomes = self._outcomes, []
                self._claiming = True
                try:
                    wait = CLAIM_WAIT_S if slots else 0.0
                    reply = await bounded(self._queue.claim.remote(ClaimRequest(
                        self._id, self._pool, slots, wait, not held,
                        [*self._running, *self._unacked], room - slots, rank=True,
                        outcomes=pack_outcomes(outcomes) if outcomes else None,
                        confirm=True)), ANSWER_TIMEOUT_S + wait)
                    leases = unpack_leases(reply.leases)
                    self._nothing_left = reply.rank is None
                    self._claim_failures = 0
                    for o in outcomes:
                        self._unacked.pop(o.task_id, None)
                except ray.exceptions.RayError as err:
                    # The queue is restarting, its journal failed, or the call was lost:
                    # back off and try again (leases granted meanwhile are reconciled;
                    # the outcomes go out again, and a repeat of one is fenced).
                    self._outcomes = outcomes + self._outcomes
                    self._wake_reporter()
                    self._claim_failures += 1
                    self._log.warning("claim failed ({}); retrying", type(err).__name__,
                                      action="worker_claim_failed")
                    await asyncio.sleep(min(0.05 * 2 ** self._claim_failures, CLAIM_WAIT_S))
                    continue
                finally:
                    self._claiming = False
                for lease in leases:
                    self._start(lease)
                self._runner.hand_over()
                if not leases and len(self._running) >= self._concurrency:
                    # Nothing to prefetch and no slot free: claim again when one frees
                    # (each finished task sets the wakeup), not in a busy loop.
                    self._wakeup.clear()
                    await self._wakeup.wait()
            if self._parked:
                # Long-polls still out: what they bring now is given back unrun.
                await asyncio.gather(*self._parked.values(), return_exceptions=True)
            await self._finish()
            await self._give_back_unstarted()
            # A report in flight finishes (or is put back) first. (A plain cancel was
            # once swallowed inside the reporter's wait_for, and a recycled worker
            # never drained: its pool waited on it, with tasks ready, for good.)
            await stop(reporter)
            await self._flush(final=True)
        finally:
            reporter.cancel()
            beater.cancel()
            poller.cancel()
            signaller.cancel()
            self._runner.stop()
        self._hooks.call("worker_stopping", me)
        self._log.info("worker drained after {} task(s)", self._done, action="worker_drained")
        return self._done

    def _held_in(self, shard: int) -> list[str]:
        """The tasks of ``shard`` this worker holds or has not seen acknowledged."""
        n = len(self._shards)
        return [i for i in (*self._running, *self._unacked) if shard_of(i, n) == shard]

    async def _claim_sharded(self, slots: int, room: int) -> None:
        """One claim on a sharded queue: on the shard with the best work this worker
        knows of (asking for nothing worse than the best known elsewhere), or, when every
        shard is empty, a long-poll on each (parked) that wakes the run loop."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        for shard in self._chooser.order(loop.time()):
            if shard in self._parked:
                continue
            # A suspect only to a worker that runs nothing and has no long-poll out
            # that could bring it company.
            idle = not self._running and not self._parked
            leases = await self._claim_on(shard, slots, 0.0, idle, room - slots,
                                          self._chooser.bound(shard))
            if leases:
                for lease in leases:
                    if lease.suspect and self._running:
                        self._unstarted.append(lease)  # company arrived meanwhile
                    else:
                        self._start(lease)
                assert self._runner is not None
                self._runner.hand_over()
                if self._unstarted:
                    await self._give_back_unstarted()
                return
        if self._draining:
            return  # asked while claiming: no new long-polls
        self._wakeup.clear()
        for shard in self._chooser.order(loop.time()):  # not those backing off
            if shard not in self._parked:
                self._parked[shard] = asyncio.create_task(self._park(shard, slots))
        if self._parked:
            await self._wakeup.wait()
        else:  # every shard is backing off after failures
            await asyncio.sleep(self._chooser.wait_s(loop.time()))

    async def _claim_on(self, shard: int, slots: int, wait: float, idle: bool,
                        prefetch: int, bound: float | None) -> list[Lease]:
        """One claim on ``shard``; notes the rank it answers, or backs the shard off
        if the call fails (then: no leases)."""
        loop = asyncio.get_running_loop()
        try:
            reply = await bounded(self._shards[shard].claim.remote(ClaimRequest(
                self._id, self._pool, slots, wait, idle, self._held_in(shard), prefetch,
                bound, rank=True)), ANSWER_TIMEOUT_S + wait)
        except ray.exceptions.RayError as err:
            backoff = self._chooser.failed(shard, loop.time())
            self._log.warning("claim on shard {} failed ({}); retrying in {:.2f}s", shard,
                              type(err).__name__, backoff, action="worker_claim_failed")
            return []
        self._chooser.saw(shard, reply.rank, loop.time())
        return unpack_leases(reply.leases)

    async def _park(self, shard: int, slots: int) -> None:
        """Long-poll ``shard`` for work; start what comes (or give it back, if this
        worker is draining or runs a suspect alone), then wake the run loop."""
        try:
            leases = await self._claim_on(shard, slots, CLAIM_WAIT_S, False, 0, None)
        finally:
            self._parked.pop(shard, None)
        for lease in leases:
            if self._draining or self._isolating:
                self._unstarted.append(lease)
            else:
                self._start(lease)
        if self._runner is not None:
            self._runner.hand_over()
        if self._unstarted and not self._draining:
            await self._give_back_unstarted()
        self._wake()

    def _start(self, lease: Lease) -> None:
        """Hand one leased task to the sync runner, or to the event loop."""
        self._running[lease.task_id] = lease
        SIGNALS[lease.task_id] = TaskSignals()
        if lease.suspect:
            # Its last worker died under it: run it alone (claims nothing more).
            self._isolating = True
        cls = self._classes.get(lease.task_name)
        if cls is not None and not lease.suspect and not is_async(cls):
            assert self._runner is not None
            self._runner.submit(lease, cls)
            return
        # An async task, a class not resolved yet, or a suspect: one asyncio task each.
        job = asyncio.create_task(self._execute(lease))
        self._jobs.add(job)
        self._job_of[lease.task_id] = job
        job.add_done_callback(self._jobs.discard)
        job.add_done_callback(functools.partial(self._job_done, lease.task_id))

    def _job_done(self, task_id: str, job: asyncio.Task[None]) -> None:
        if self._job_of.get(task_id) is job:
            del self._job_of[task_id]

    async def _finish(self) -> None:
        """Give back what has not started; wait for the rest; past the drain deadline,
        release what is still running."""
        assert self._runner is not None and self._wakeup is not None
        for lease in self._runner.take_unstarted():
            self._running.pop(lease.task_id, None)
            self._unstarted.append(lease)
        # Give them back now, not after the running ones: nobody renews their leases.
        await self._give_back_unstarted()
        loop = asyncio.get_running_loop()
        while self._running:
            left = None if self._drain_deadline is None else self._drain_deadline - loop.time()
            if left is not None and left <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), left)
            await self._give_back_unstarted()  # async ones that reached a slot meanwhile
        if not self._running:
            return
        refs = [(lease.task_id, lease.token) for lease in self._running.values()]
        self._running.clear()
        for job in list(self._jobs):
            job.cancel()  # a thread cannot be stopped; its outcome is dropped
        self._log.info("drain deadline passed: releasing {} task(s)", len(refs),
                       action="worker_released", tasks=[r[0] for r in refs])
        await self._release(refs)

    async def _give_back_unstarted(self) -> None:
        """Release prefetched tasks a drain stopped before they started (not an attempt)."""
        refs = [(lease.task_id, lease.token) for lease in self._unstarted]
        self._unstarted.clear()
        if refs:
            self._log.info("{} prefetched task(s) given back unrun", len(refs),
                           action="worker_released", tasks=[r[0] for r in refs])
            await self._release(refs)

    async def _release(self, refs: list[tuple[str, int]]) -> None:
        """Give leases back to their shards (best effort: unreturned ones expire)."""
        await self._to_shards("release", refs, [r[0] for r in refs])

    async def _to_shards(self, method: str, items: list[Any], ids: list[str],
                         *lead: Any) -> list[Any]:
        """Call ``method`` on each shard with its part of ``items`` (after ``lead``
        arguments); answers (or the RayError) per part, in shard order."""
        parts = split(items, ids, len(self._shards))
        return list(await asyncio.gather(*(
            _call(getattr(self._shards[s], method), *lead, [x for _, x in part])
            for s, part in parts.items()), return_exceptions=True))

    async def _execute(self, lease: Lease) -> None:
        try:
            await self._execute_in_slot(lease)
        except asyncio.CancelledError:
            signals = SIGNALS.get(lease.task_id)
            if signals is None or not signals.cancelled:
                raise  # released at a drain deadline: no outcome
            # Cancelled through the queue before it started: an outcome for the books.
            self._deliver(lease, cancelled_outcome(lease))

    async def _execute_in_slot(self, lease: Lease) -> None:
        assert self._slots is not None
        async with self._slots:
            if self._draining:
                # A draining worker hands prefetched work back rather than start it.
                self._running.pop(lease.task_id, None)
                self._unstarted.append(lease)
                self._wake()
                return
            try:
                await self._run_one(lease)
            except asyncio.CancelledError:
                raise  # released at a drain deadline: no outcome
            except BaseException as exc:  # never leave a lease held without an outcome
                cls = self._classes.get(lease.task_name, Task)
                self._deliver(lease, failed(lease, cls, exc, self._id))

    async def _run_one(self, lease: Lease) -> None:
        try:
            cls = await self._resolve(lease.task_name)
        except UnknownTaskError as exc:
            # No class for this name yet (a client may still ship it, e.g. after a cold
            # restart): retry with backoff; dead as unknown_task when attempts run out.
            # Never an import of the name: the name is data.
            failure = Failure(ErrorInfo.from_exception(exc), retryable=True,
                              retry_delay=min(2.0 ** lease.attempt, 30.0), reason="unknown_task")
            self._deliver(lease, Outcome(lease.task_id, lease.token, failure=failure))
            self._task_log(lease).warning("{}", exc, action="task_unknown")  # says why
            return
        loop = asyncio.get_running_loop()
        # A lease marked ``confirm`` is confirmed right before its ``execute()``.
        confirm = functools.partial(self._confirm, lease) if lease.confirm else None
        if is_async(cls):
            outcome = await run_async(lease, cls, self._id, confirm)
        else:
            on_start: Callable[[], None] | None = None
            if confirm is not None:
                def on_start() -> None:  # in the executor thread
                    with contextlib.suppress(RuntimeError):  # a closed loop: exiting
                        loop.call_soon_threadsafe(confirm)
            self._in_thread.add(lease.task_id)  # a cancel sets its flag, not cancels it
            try:
                outcome = await loop.run_in_executor(
                    self._executor, copy_context().run, run_sync, lease, cls, self._id, loop,
                    on_start)
            finally:
                self._in_thread.discard(lease.task_id)
        self._deliver(lease, outcome)

    def _confirm(self, lease: Lease) -> None:
        """Tell the queue (soon, with other starts) that a lease marked ``confirm``
        started: lower-priority work waits for it. Runs on the event loop."""
        self._to_confirm.append((lease.task_id, lease.token))
        if self._confirming is None:
            self._confirming = asyncio.get_running_loop().create_task(self._send_confirms())

    async def _send_confirms(self) -> None:
        try:
            while self._to_confirm:
                refs, self._to_confirm = self._to_confirm, []
                try:
                    await bounded(self._queue.started.remote(refs), ANSWER_TIMEOUT_S)
                except ray.exceptions.RayError:
                    # Lower work waits for these starts: send again those still running
                    # (a lease that ended confirms its start by its end).
                    self._to_confirm = [r for r in refs if self._holds(*r)] + self._to_confirm
                    if self._to_confirm:
                        await asyncio.sleep(CONFIRM_RETRY_S)
        finally:
            self._confirming = None

    def _holds(self, task_id: str, token: int) -> bool:
        """Whether this worker still runs that lease (not a newer one of the task)."""
        held = self._running.get(task_id)
        return held is not None and held.token == token

    def _task_log(self, lease: Lease) -> Any:
        return self._log.bind(task_id=lease.task_id, task=lease.task_name,
                              attempt=lease.attempt)

    def _deliver(self, lease: Lease, outcome: Outcome) -> None:
        self._deliver_many([(lease, outcome)])

    def _deliver_many(self, done: list[tuple[Lease, Outcome]]) -> None:
        """Take finished attempts on the event loop: buffer their outcomes for a report."""
        for lease, outcome in done:
            held = self._running.get(lease.task_id)
            if held is None or held.token != lease.token:
                # Released at a drain deadline, or re-leased to us since (a newer token):
                # this attempt's outcome would be fenced; the current lease stays held.
                continue
            del self._running[lease.task_id]
            SIGNALS.pop(lease.task_id, None)
            self._unacked[lease.task_id] = lease.token
            self._done += 1
            self._outcomes.append(outcome)
        # New work may have come since the last reply said nothing was left: a task's end
        # lets the worker ask again (a refill of its prefetch).
        self._nothing_left = False
        # Idle now, and the run loop is not in a claim: it claims at once (woken below),
        # and the outcomes ride on that claim: one call, not a report and a claim (the
        # queue records them before the claim waits for work). Otherwise: a report.
        rides = (not self._running and not self._claiming and not self._draining
                 and len(self._shards) == 1)
        if not rides and self._report_kick is not None:
            self._report_kick.set()
            if not self._running and self._report_now is not None:
                self._report_now.set()
        if self._max_rss_mb is not None and not self._draining and (
                _rss_mb() > self._max_rss_mb):
            self._log.warning("memory {:.0f} MB over the limit of {:.0f} MB: recycling",
                              _rss_mb(), self._max_rss_mb, action="worker_recycled")
            self._draining = True  # run() returns once the rest is finished and reported
        self._wake()

    def _wake_reporter(self) -> None:
        if self._report_kick is not None:
            self._report_kick.set()

    def _wake(self) -> None:
        if not self._running:
            self._isolating = False
        if self._wakeup is not None:
            self._wakeup.set()

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
        assert self._report_kick is not None and self._report_now is not None
        while True:
            await self._report_kick.wait()
            self._report_kick.clear()
            if self._running and len(self._outcomes) < REPORT_BATCH:
                # More outcomes are due soon: let them share this call, or ride on the
                # next claim. A worker that runs nothing more reports at once, so idle
                # latency does not pay for this.
                self._report_now.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._report_now.wait(), REPORT_DELAY_S)
            await self._flush()

    async def _flush(self, final: bool = False) -> None:
        async with self._flush_lock:  # one report at a time, the final one included
            await self._flush_locked(final)

    async def _flush_locked(self, final: bool) -> None:
        """Report the buffered outcomes (``final``: until every one got through)."""
        records = lifecycle()
        if records is not None:
            records.flush()
        n = len(self._shards)
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            parts = split(batch, [o.task_id for o in batch], n) if n > 1 else {0: list(
                enumerate(batch))}
            try:
                answers = await asyncio.gather(*(
                    _call(self._shards[s].report, self._id, pack_outcomes([o for _, o in p]))
                    for s, p in parts.items()), return_exceptions=True)
            except asyncio.CancelledError:
                self._outcomes = batch + self._outcomes  # the final flush sends them again
                raise
            unsent: list[Outcome] = []
            for part, answer in zip(parts.values(), answers, strict=True):
                if isinstance(answer, ray.exceptions.RayError):
                    # The shard is unreachable: keep its outcomes and try again; if we die
                    # first, the leases expire and the tasks run again (at-least-once).
                    self._log.warning("report failed ({}); retrying", type(answer).__name__,
                                      action="worker_report_failed")
                    unsent.extend(o for _, o in part)
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    for _, o in part:
                        self._unacked.pop(o.task_id, None)
            if unsent:
                self._outcomes = unsent + self._outcomes
                if final or len(unsent) == len(batch):
                    await asyncio.sleep(0.5)  # back off, then send them again
                else:  # others got through: don't hold their next reports back
                    asyncio.get_running_loop().call_later(0.5, self._wake_reporter)
                    return
            elif not final:
                # What finished during this call waits for the next round (or a claim):
                # sending it at once would make every report as small as one round trip.
                return

    async def _poll_loop(self) -> None:
        assert self._runner is not None
        while True:
            # Idle, a finished task wakes the loop itself (nothing left to start).
            await asyncio.sleep(OUTBOX_POLL_S if self._running else 0.25)
            self._runner.collect()

    async def _signal_loop(self) -> None:
        """While tasks run: send their latest progress, and learn which were cancelled
        (at most SIGNAL_S plus a round trip after the cancel: async attempts are
        cancelled on this loop at once, sync ones see ``current().cancelled``)."""
        while True:
            await asyncio.sleep(SIGNAL_S)
            if not self._running:
                continue
            items: list[tuple[str, int, float | None, str | None]] = []
            for task_id, lease in self._running.items():
                signals = SIGNALS.get(task_id)
                if signals is not None and not signals.sent and signals.progress is not None:
                    signals.sent = True
                    items.append((task_id, lease.token, *signals.progress))
                else:
                    items.append((task_id, lease.token, None, None))
            for answer in await self._to_shards("signals", items, [i[0] for i in items]):
                if isinstance(answer, BaseException):
                    continue  # asked again in SIGNAL_S (a lost progress update is no harm)
                for task_id in answer:
                    self._cancel_local(task_id)

    def _cancel_local(self, task_id: str) -> None:
        """The queue cancelled this running task: stop it here (its outcome is fenced)."""
        signals = SIGNALS.get(task_id)
        if signals is None or signals.cancelled:
            return
        signals.cancelled = True
        lease = self._running.get(task_id)
        self._log.info("task cancelled while running", action="task_cancel_seen",
                       task_id=task_id, attempt=lease.attempt if lease else None)
        job = self._job_of.get(task_id)
        if job is not None and task_id not in self._in_thread:
            job.cancel()  # an async attempt (or one waiting for a slot): at its next await

    async def _heartbeat_loop(self) -> None:
        # A beat each period, whether or not the last one was answered: Ray can lose a
        # reply, and waiting ANSWER_TIMEOUT_S for it let every lease of this worker
        # expire (30 s against a lease TTL of 3 periods) while its tasks ran on, so
        # they ran again elsewhere. A beat unanswered after BEATS_OUT periods is given up.
        await every(self._heartbeat_s, self._beat, BEATS_OUT * self._heartbeat_s,
                    lambda err: self._log.warning("heartbeat failed: {}", type(err).__name__,
                                                  action="worker_heartbeat_failed"))

    async def _beat(self) -> None:
        # Finished attempts whose report has not got through yet (the queue is
        # restarting, say) keep their leases too: else they would run again.
        refs = [(lease.task_id, lease.token) for lease in self._running.values()]
        refs += self._unacked.items()
        if refs:
            for answer in await self._to_shards("heartbeat", refs, [r[0] for r in refs]):
                if isinstance(answer, ray.exceptions.RayError):
                    self._log.warning("heartbeat failed: {}", answer,
                                      action="worker_heartbeat_failed")


async def _call(method: Any, *args: Any) -> Any:
    """``await method.remote(*args)``, with a refusal at submission raised here too,
    and a lost answer raised as a timeout (see ANSWER_TIMEOUT_S)."""
    return await bounded(method.remote(*args), ANSWER_TIMEOUT_S)


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
