"""QueueActor: one queue's core, journal and clock behind a Ray async actor.

Workers claim by long-polling: a claim that finds nothing parks on a future that an
enqueue (or a due timer) resolves, so an idle system does not spin and new work starts
within milliseconds. Writes are group-committed: every call changes the core at once,
its journal batch is buffered, one transaction commits everything buffered every few
milliseconds, and each call is answered only after the commit that holds its change.
If a commit fails, the core is rebuilt from the journal and every uncommitted call
fails with the storage error, so nothing is ever acknowledged that is not durable.
Reads run in their own concurrency group and stay responsive while claims are parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import ray
from loguru import logger

from rayqueue.actors import restarted
from rayqueue.actors.journal import crashpoint, open_storage
from rayqueue.actors.profiling import LoopProfiler
from rayqueue.core.browse import TaskFilter
from rayqueue.core.checks import check_lease_refs
from rayqueue.core.clock import Clock, SystemClock
from rayqueue.core.lease import Outcome
from rayqueue.core.queue import QueueConfig, QueueCore, TickReport, ready_since
from rayqueue.core.record import NewTask, ScheduleRecord, TaskRecord, TaskState
from rayqueue.core.retry import RetryPolicy
from rayqueue.core.schedule import MisfirePolicy, ScheduleSpec
from rayqueue.core.shards import PoolStatus
from rayqueue.core.stats import QueueStats
from rayqueue.errors import (
    InvalidArgumentTypeError,
    StaleLeaseError,
    StorageError,
    StorageFullError,
)
from rayqueue.info import ScheduleInfo, TaskInfo
from rayqueue.logging import configure, lifecycle
from rayqueue.middleware import Hooks, Middleware, TaskEnd
from rayqueue.protocol import (
    Calls,
    ClaimReply,
    ClaimRequest,
    Depth,
    Enqueued,
    Event,
    FailedAttempt,
    JournalHealth,
    Tally,
    pack_leases,
    unpack_news,
    unpack_outcomes,
)
from rayqueue.storage.base import Storage
from rayqueue.storage.buffered import CommitBuffer, Merged
from rayqueue.storage.identity import JournalIdentity
from rayqueue.storage.layout import check_layout
from rayqueue.storage.memory import NullStorage
from rayqueue.storage.url import is_postgres_url, shown

#: Longest sleep of the timer loop; bounds how late a due task or expired lease is seen.
TICK_MAX_S = 0.05
#: How often lifecycle events are flushed to the metrics actor.
FLUSH_EVERY_S = 0.5
#: While journal commits keep failing, at most one reminder line per this many seconds
#: (the first failure of an episode is logged at once, the recovery too).
FAILING_REMINDER_S = 30.0
#: While journal commits keep failing and nothing else writes, the timer loop commits a
#: probe this often, so a freed disk is seen within a second even when no call comes.
PROBE_EVERY_S = 0.25
#: What the probe deletes: an id no task can have (ids are printable), so the probe is a
#: real transaction (the journal's sequence moves on) that changes no record.
PROBE_ID = "\x00probe"
#: Concurrency groups of the actor: reads get their own, so parked claims never block them.
CONCURRENCY_GROUPS = {"control": 8}

F = TypeVar("F", bound=Callable[..., Any])


def _control(method: F) -> F:
    """Run ``method`` in the actor's ``control`` concurrency group."""
    return cast(F, ray.method(concurrency_group="control")(method))


class QueueActor:
    """The owner of one queue's tasks. Created by :func:`rayqueue.init`."""

    def __init__(
        self,
        name: str,
        config: QueueConfig | None = None,
        metrics: Any = None,
        journal: str | None = None,
        clock: Clock | None = None,
        durability: str = "full",
        shard: int = 0,
        shards: int = 1,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        configure("queue")
        ctx = ray.get_runtime_context()
        reconstructed = restarted()
        self._name = name
        self._shard, self._shards = shard, shards
        self._config = config or QueueConfig()
        if journal is not None and shard == 0 and not reconstructed and not is_postgres_url(
                journal):  # (a PostgreSQL journal checks its shard count when it opens)
            check_layout(journal, shards)
        self._storage = open_storage(journal, durability, reconstructed,
                                     JournalIdentity(queue=name, shard=shard, shards=shards))
        self._buffer = CommitBuffer(self._storage, lookup=lambda i: self._core.find(i))
        #: the batch being committed now (reads answer its tasks as they were before it)
        self._inflight: Merged | None = None
        # A queue without a journal has nothing to commit: its core writes straight to
        # the NullStorage, the buffer stays empty, and no call waits for a commit.
        self._journal: Storage = self._storage if isinstance(
            self._storage, NullStorage) else self._buffer
        self._core = QueueCore.recover(self._journal, self._config)
        self._clock = clock or SystemClock()
        if reconstructed:
            self._core.renew_all_leases(self._clock.now())
        self._lock = threading.Lock()
        self._metrics = metrics
        #: middleware's queue-side hooks (on_retry, on_dead), called once a change is
        #: durable; empty ones cost nothing on the hot path
        self._hooks = Hooks(middleware)
        self._end_hooks = self._hooks.wants("on_retry") or self._hooks.wants("on_dead")
        self._claims: dict[str, deque[asyncio.Future[None]]] = {}
        self._results: dict[str, list[asyncio.Future[None]]] = {}
        self._events: list[Event] = []
        #: start waits and run times since the last metrics flush, packed
        self._tally = Tally()
        #: calls served and tasks they carried since the last metrics flush, by kind
        self._calls: dict[str, list[int]] = {k: [0, 0] for k in ("enqueue", "claim", "report")}
        self._timed_out: list[tuple[str, str]] = []
        self._ticker: asyncio.Task[None] | None = None
        #: the default group's event loop (set by ``start``): parked claims, commits and
        #: result waiters live on it; the ``control`` group runs on a loop of its own
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flushing = False
        #: the current episode of failing commits: its start (loop time), how many
        #: failed, the last error (None again once a probe commits: the journal takes
        #: writes, though the episode ends only with a real commit), and when the next
        #: reminder may be logged
        self._failing_since: float | None = None
        self._failed_commits = 0
        self._failing_error: StorageError | None = None
        #: set when the journal could not be reloaded after a failed commit (fenced)
        self._unloaded: StorageError | None = None
        self._next_reminder = 0.0
        self._next_probe = 0.0
        self._log = logger.bind(queue=name, **({"shard": shard} if shards > 1 else {}))
        self._profiler = LoopProfiler()
        stats = self._core.stats()
        self._log.info("queue {} ({}): {} unfinished task(s) recovered from {}",
                       "restarted" if reconstructed else "started", name, stats.size,
                       shown(journal), action="queue_started", recovered=stats.size)
        # Start the timer loop on the actor's event loop, also after a restart.
        ctx.current_actor.start.remote()

    def __repr__(self) -> str:
        if self._shards > 1:
            return f"QueueActor({self._name}, shard {self._shard} of {self._shards})"
        return f"QueueActor({self._name})"

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the timer loop (idempotent)."""
        if self._ticker is None:
            self._loop = asyncio.get_running_loop()
            self._ticker = self._loop.create_task(self._tick_loop())

    async def _tick_loop(self) -> None:
        last_flush = 0.0
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock.now()
            try:
                with self._lock:
                    report = self._core.tick(now)
                    wake = self._core.next_wakeup()
                self._after_tick(report)  # wakes parked claims (a rate refill too)
            except StorageError as err:
                self._log.error("tick failed: {}", err, action="queue_tick_failed")
                wake = None
            except Exception as err:  # the timer loop must outlive any one tick
                self._log.opt(exception=err).error("tick failed: {}", err,
                                                   action="queue_tick_failed")
                wake = None
            if self._buffer.pending:
                self._schedule_flush()
            elif self._failing_error is not None and loop.time() >= self._next_probe:
                self._next_probe = loop.time() + PROBE_EVERY_S
                self._probe()
            if loop.time() - last_flush >= FLUSH_EVERY_S:
                last_flush = loop.time()
                try:
                    self._flush_events()
                except Exception as err:  # metrics are best effort; the loop goes on
                    self._log.opt(exception=err).warning(
                        "metrics events not sent: {}", err, action="metrics_flush_failed")
            delay = TICK_MAX_S if wake is None else min(max(wake - now, 0.001), TICK_MAX_S)
            await asyncio.sleep(delay)

    def _after_tick(self, report: TickReport) -> None:
        if report.expired:  # back as suspects, which only an idle claimer may take
            self._wake_claims(None, 1 << 30)
        elif report.promoted:
            self._wake_claims(None, report.promoted)
        for task_id in report.expired:
            self._event_of(task_id, "lost")
        for task_id, worker in report.timed_out:
            self._timed_out.append((task_id, worker))
            self._log.warning("task timed out on {}", worker, action="task_timed_out",
                              task_id=task_id, worker=worker)
            self._event_of(task_id, "timed_out")
        for task_id in report.dead:
            self._log.warning("task dead", action="task_dead", task_id=task_id)
        self._resolve_results([*report.dead, *report.expired,
                               *(t for t, _ in report.timed_out)])
        self._wake_parked()

    # ---------------------------------------------------------- group commit
    async def _durable(self) -> None:
        """Wait until every change made so far is committed to the journal."""
        if self._unloaded is not None:
            # The journal could not be reloaded after a failed commit: this call's change
            # is void; try the reload again for the calls after it.
            error = self._unloaded
            with self._lock:
                self._buffer.take()
                self._inflight = None
                try:
                    self._core = self._reloaded()
                    self._unloaded = None
                except StorageError as err:
                    self._unloaded = error = err
            raise error
        if not self._buffer.pending and not self._flushing:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._schedule_flush()
        await fut

    def _schedule_flush(self) -> None:
        # No timer: the commit starts as soon as the calls already dispatched have run,
        # so an idle queue commits at once, and under load every change made while one
        # commit is writing rides on the next (group commit without a fixed delay).
        if self._flush_handle is None and not self._flushing:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_soon(lambda: loop.create_task(self._flush()))

    async def _flush(self) -> None:
        self._flush_handle = None
        if self._flushing:
            return
        self._flushing = True
        with self._lock:
            merged = self._inflight = self._buffer.take()
        waiters, self._waiters = self._waiters, []
        try:
            if merged:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, merged.write_to, self._storage)
        except Exception as err:
            self._rollback(err, waiters)
        else:
            with self._lock:
                self._inflight = None
            if merged and self._failing_since is not None:
                self._recovered()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            if self._results:  # waiters of tasks whose end this commit made durable
                self._resolve_results(list(merged.before.keys() & self._results.keys()))
        finally:
            self._flushing = False
            if self._waiters or self._buffer.pending:
                self._schedule_flush()

    def _rollback(self, err: Exception, waiters: list[asyncio.Future[None]]) -> None:
        error = err if isinstance(err, StorageError) else StorageError(
            f"journal commit failed ({type(err).__name__}: {err}); nothing was changed, "
            "try again")
        # Everything uncommitted, also what was buffered during this commit, is void.
        waiters = waiters + self._waiters
        self._waiters = []
        with self._lock:
            self._buffer.take()
            self._inflight = None
            try:
                self._core = self._reloaded()
            except StorageError as reload_err:
                # Fenced (a newer incarnation owns the journal) or unreadable: this core
                # may hold what was never committed, so no call commits on it until a
                # reload succeeds (a fenced journal never reloads).
                self._unloaded = error = reload_err
        self._failing(error, len(waiters))
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error)
        self._wake_claims(None, 1 << 30)

    def _probe(self) -> None:
        """While commits fail and nothing is buffered: commit a probe that changes no
        record, to see whether the journal takes writes again. Runs as a flush would,
        so no commit overlaps it."""
        if self._flushing or self._flush_handle is not None or self._buffer.pending:
            return
        self._flushing = True

        async def probe() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, lambda: self._storage.write(delete_tasks=[PROBE_ID]))
            except StorageError as err:
                self._failing(err, 0)
            except Exception as err:  # the timer loop goes on; the next probe tries again
                self._failing(StorageError(f"journal probe failed ({type(err).__name__}: "
                                           f"{err})"), 0)
            else:
                # Stats say so at once; the episode (one ERROR, reminders) goes on until
                # a real commit succeeds: a probe is small, and a size cap or a WAL with
                # room left may take it while a batch still fails.
                if self._failing_error is not None:
                    self._failing_error = None
                    self._log.info("journal takes writes again (a probe committed)",
                                   action="journal_probe_ok")
            finally:
                self._flushing = False
                if self._waiters or self._buffer.pending:
                    self._schedule_flush()

        asyncio.get_running_loop().create_task(probe())

    def _failing(self, error: StorageError, calls: int) -> None:
        """Log a failed commit: the first of an episode at once, then a reminder at most
        every FAILING_REMINDER_S (workers retrying claims fail a commit many times a
        second, and a line each would flood the driver's console)."""
        now = asyncio.get_running_loop().time()
        self._failed_commits += 1
        self._failing_error = error
        if self._failing_since is None:
            self._failing_since = now
            self._next_reminder = now + FAILING_REMINDER_S
            self._log.error("journal commit failed, state reloaded from the journal: {}",
                            error, action="journal_commit_failed", calls=calls)
        elif now >= self._next_reminder:
            self._next_reminder = now + FAILING_REMINDER_S
            self._log.error("journal commits still failing after {:.0f}s ({} failed): {}",
                            now - self._failing_since, self._failed_commits, error,
                            action="journal_commit_failing", failed=self._failed_commits)

    def _recovered(self) -> None:
        since = self._failing_since or 0.0
        self._log.info("journal commits succeed again after {:.1f}s ({} failed)",
                       asyncio.get_running_loop().time() - since, self._failed_commits,
                       action="journal_recovered", failed=self._failed_commits)
        self._failing_since, self._failed_commits, self._failing_error = None, 0, None

    # ------------------------------------------------- what the journal holds
    # The core runs ahead of the journal by the batches not yet committed, and a commit
    # that fails rolls them back; so reads answer each task as the journal holds it,
    # never a state that may never have been (issue 13: during a full disk, get_many
    # said `failed` for tasks that stats, after the rollback, counted as `leased`).

    def _befores(self) -> tuple[dict[str, TaskRecord | None], ...]:
        """Uncommitted changes, oldest first: per task, its record before them."""
        inflight = self._inflight
        if inflight is None:
            return (self._buffer.before,)
        return inflight.before, self._buffer.before

    def _committed(self, task_id: str) -> TaskRecord | None:
        """A task as the journal holds it (the caller holds the lock)."""
        for before in self._befores():
            if task_id in before:
                return before[task_id]
        return self._core.find(task_id)

    def _committed_stats(self) -> QueueStats:
        """The core's counts less its uncommitted changes (the caller holds the lock)."""
        stats = self._core.stats()
        changed = {task_id for before in self._befores() for task_id in before}
        if not changed:
            return stats
        by_state = dict(stats.by_state)
        ready = {pool: dict(by_prio) for pool, by_prio in stats.ready_by_priority.items()}
        size = stats.size
        for task_id in changed:
            now_rec, then = self._core.find(task_id), self._committed(task_id)
            if now_rec is then:
                continue
            for rec, sign in ((now_rec, -1), (then, 1)):
                if rec is None:
                    continue
                by_state[rec.state.value] += sign
                size += 0 if rec.state.terminal else sign
                if rec.state is TaskState.READY:
                    by_prio = ready.setdefault(rec.pool, {})
                    by_prio[rec.priority] = by_prio.get(rec.priority, 0) + sign
                    if not by_prio[rec.priority]:
                        del by_prio[rec.priority]
                    if not by_prio:
                        del ready[rec.pool]
        return stats.model_copy(update={"by_state": by_state, "ready_by_priority": ready,
                                        "size": size})

    def _reloaded(self) -> QueueCore:
        """A core rebuilt from the journal, with the closed and paused flags kept."""
        core = QueueCore.recover(self._journal, self._config)
        if self._core.closed:
            core.close()
        if self._core.paused:
            core.pause()
        return core

    # ---------------------------------------------------------------- events
    def _event_of(self, task_id: str, outcome: str) -> None:
        rec = self._core.find(task_id)
        if rec is not None:
            self._tally.end(rec.task_name, outcome, None)
            self._events.append(_failure_event(rec, self._clock.now(), outcome))
            if rec.state is TaskState.DEAD:
                self._tally.end(rec.task_name, "dead", None)
            if self._end_hooks:
                self._call_end_hooks(rec, "worker_lost" if outcome == "lost" else "timeout")

    def _call_end_hooks(self, rec: TaskRecord, ended: str) -> None:
        """Middleware's ``on_retry``/``on_dead`` for an attempt that ended without
        success (``ended``: failed, timeout, worker_lost)."""
        err = rec.error
        if rec.state is TaskState.DEAD:
            hook, reason, due = "on_dead", rec.reason or ended, None
        elif rec.state in (TaskState.FAILED, TaskState.READY, TaskState.SCHEDULED):
            hook, reason, due = "on_retry", ended, max(rec.due_at, self._clock.now())
        else:
            return
        self._hooks.call(hook, TaskEnd(rec.id, rec.task_name, rec.attempts, reason,
                                       err.type if err else None,
                                       err.message if err else None, rec.headers or {}, due))

    def _flush_events(self) -> None:
        with self._lock:
            stats = self._committed_stats()
        events, self._events = self._events, []
        events += self._tally.take()
        # Throttled tasks (held back by a rate or concurrency limit) are ready tasks too:
        # a state of their own in depth (rayqueue_queue_depth{state="throttled"}).
        events.append(Depth({**stats.by_state, "throttled": stats.throttled},
                            stats.ready_by_priority, self._shard))
        events.append(JournalHealth(self._shard, self._failing_error is not None,
                                    isinstance(self._failing_error, StorageFullError)))
        for kind, counts in self._calls.items():
            if counts[0]:
                events.append(Calls(kind, counts[0], counts[1]))
                counts[0] = counts[1] = 0
        if self._metrics is not None:
            self._metrics.record.remote(self._name, events)

    # ------------------------------------------------------------- producers
    async def enqueue_many(self, packed: bytes | Sequence[NewTask]) -> list[str]:
        """Add tasks (all or nothing); answers their ids once they are in the journal.

        ``packed`` comes from :func:`~rayqueue.core.lease.pack_news` (a list of NewTask
        is taken too). Only ids go back: a pydantic model per task would cost more than
        the enqueue.
        """
        news = unpack_news(packed) if isinstance(packed, bytes) else packed
        tally = self._calls["enqueue"]
        tally[0] += 1
        tally[1] += len(news)
        now = self._clock.now()
        with self._lock:
            before = self._core.size()
            recs = self._core.enqueue_many(news, now)
            added = self._core.size() - before
        if added:
            # Before the commit, not after: a parked claim woken now leases in time to
            # ride on this commit (its reply waits for it), so an idle queue's task
            # costs one journal commit before it starts, not two in a row.
            self._wake_claims(None, added)
        await self._durable()
        crashpoint("enqueue.after_commit_before_reply")
        counts: dict[str, int] = {}
        for rec in recs:
            counts[rec.task_name] = counts.get(rec.task_name, 0) + 1
        self._events.extend(Enqueued(name, n) for name, n in counts.items())
        records = lifecycle()
        if records is not None:
            for rec in recs:
                records.emit("task enqueued", "task_enqueued", queue=self._name, task_id=rec.id,
                             task=rec.task_name, priority=rec.priority)
            records.flush()
        return [r.id for r in recs]

    async def add_schedule(
        self,
        *,
        schedule_id: str,
        task_name: str,
        payload: str,
        spec: ScheduleSpec,
        priority: int,
        pool: str,
        misfire: MisfirePolicy,
        retry: RetryPolicy,
        timeout: float | None,
    ) -> ScheduleRecord:
        """Create a periodic schedule (idempotent)."""
        with self._lock:
            sched = self._core.add_schedule(
                schedule_id=schedule_id, task_name=task_name, payload=payload, spec=spec,
                now=self._clock.now(), priority=priority, pool=pool, misfire=misfire,
                retry=retry, timeout=timeout,
            )
        await self._durable()
        return sched

    async def cancel(self, task_id: str, force: bool = False) -> str:
        """Cancel a task (waiting or running) or stop a schedule; returns the new state.

        A running task's worker learns of it at its next signal call (see
        ``rayqueue.actors.worker.SIGNAL_S``); with ``force`` the pool manager kills that
        worker as for a timeout (its other tasks count a lost attempt)."""
        with self._lock:
            before = self._core.find(task_id)
            running = before is not None and before.state is TaskState.LEASED
            out = self._core.cancel(task_id, self._clock.now())
        await self._durable()
        if running and before is not None:
            self._log.info("running task cancelled{}", " (force: its worker is killed)"
                           if force else "", action="task_cancelled_running",
                           task_id=task_id, worker=before.worker)
            if force:
                self._timed_out.append((task_id, before.worker or ""))
        self._resolve_results([task_id])
        self._wake_parked()
        return out.state.value if isinstance(out, TaskRecord) else "removed"

    async def signals(self, items: Sequence[tuple[str, int, float | None, str | None]]
                      ) -> list[str]:
        """A worker's running leases (task id, token, progress fraction or None, message):
        notes their progress (in memory) and answers those cancelled while running."""
        with self._lock:
            self._core.set_progress((i, t, f, m) for i, t, f, m in items if f is not None)
            return self._core.cancelled_leases((i, t) for i, t, _, _ in items)

    async def retry_dead(self, task_id: str) -> TaskInfo:
        """Put a dead task back to ready."""
        with self._lock:
            rec = self._core.retry_dead(task_id, self._clock.now())
        await self._durable()
        self._wake_claims(rec.pool, 1)
        return TaskInfo.of(rec)

    async def close(self) -> None:
        """Refuse further enqueues at once."""
        with self._lock:
            self._core.close()

    async def stop(self) -> None:
        """Before the actor is killed: refuse enqueues, commit what is buffered, fold the
        journal's log into its file and close it, so a cleanly shut-down journal is one
        file and its side file says it was closed. Calls after this fail with
        :class:`~rayqueue.errors.StorageError`."""
        with self._lock:
            self._core.close()
        with contextlib.suppress(StorageError):  # its callers had the error already
            await self._durable()
        await asyncio.get_running_loop().run_in_executor(self._io, self._storage.close)
        self._log.info("journal closed", action="journal_closed")

    @_control
    async def pause(self) -> None:
        """Stop handing out tasks (kept in memory: a restarted queue runs again)."""
        with self._lock:
            self._core.pause()
        self._log.info("queue paused", action="queue_paused")

    @_control
    async def resume(self) -> None:
        """Hand out tasks again, at once."""
        with self._lock:
            self._core.resume()
        self._log.info("queue resumed", action="queue_resumed")
        # This runs on the control group's loop, in another thread: the parked claims'
        # futures belong to the default loop, so they are woken there (setting them from
        # here was not thread-safe, and their loop noticed only at its next wake-up).
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_claims, None, 1 << 30)
        else:
            self._wake_claims(None, 1 << 30)

    # --------------------------------------------------------------- workers
    async def claim(self, request: ClaimRequest) -> ClaimReply:
        """Lease up to ``max_n`` tasks of ``pool``, waiting up to ``wait`` s for work
        (see :class:`~rayqueue.protocol.ClaimRequest` for each field).

        Answers the leases packed (:func:`~rayqueue.protocol.unpack_leases`); with
        ``rank``, also the rank of the best task left (workers of sharded queues steer by
        it). ``outcomes`` are recorded first, as :meth:`report` would: a busy worker's
        report rides on its next claim, one call and one commit for both (the call
        succeeding means they are recorded). With ``confirm`` the worker calls
        :meth:`started` for leases marked ``confirm``, so lower-priority work never
        starts before them.
        """
        if not isinstance(request, ClaimRequest):
            raise InvalidArgumentTypeError("request", "expected a ClaimRequest, got "
                                           f"{type(request).__name__}")
        worker, pool, max_n, wait = request.worker, request.pool, request.max_n, request.wait
        idle, held, prefetch = request.idle, request.held, request.prefetch
        no_worse_than, rank, outcomes = request.no_worse_than, request.rank, request.outcomes
        confirm = request.confirm
        loop = asyncio.get_running_loop()
        reported = None if outcomes is None else self._complete(worker, outcomes)
        if held is not None:
            with self._lock:
                returned = self._core.reconcile(worker, held, self._clock.now())
            if returned:
                self._log.warning("{} lease(s) whose claim reply was lost returned",
                                  len(returned), action="lease_reconciled", worker=worker)
                self._wake_claims(pool, len(returned))
        deadline = loop.time() + max(0.0, wait)
        parked = False
        while True:
            now = self._clock.now()
            with self._lock:
                leases = self._core.claim(worker, max_n, now, pool, idle=idle,
                                          prefetch=prefetch, no_worse_than=no_worse_than,
                                          confirm_starts=confirm)
            if leases or loop.time() >= deadline:
                break
            if reported is not None:  # durable and visible before this claim parks
                await self._durable()
                self._completed(worker, *reported)
                reported = None
            fut: asyncio.Future[None] = loop.create_future()
            self._claims.setdefault(pool, deque()).append(fut)
            parked = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, deadline - loop.time())
        tally = self._calls["claim"]
        tally[0] += 1
        tally[1] += len(leases)
        if reported is not None:
            await self._durable()
            self._completed(worker, *reported)
        if not leases:
            if not rank:
                return ClaimReply(pack_leases(leases))
            with self._lock:  # top_rank pops stale heap entries: never beside a peek
                return ClaimReply(pack_leases(leases), self._core.top_rank(pool))
        find = self._core.find
        # from due (or, after a lost attempt, from the loss) to start
        waits = [max(0.0, now - (ready_since(rec) if (rec := find(lease.task_id)) is not None
                                 else now)) for lease in leases]
        try:
            await self._durable()
        except StorageError:
            if not parked:
                raise
            # Woken by work whose commit then failed (an enqueue wakes the waiting
            # claims before it commits, so their leases share its commit): the rollback
            # voided these leases with it. The worker claims again, as it would after an
            # empty long-poll, rather than back off as from a failed call of its own.
            return ClaimReply(pack_leases([]))
        crashpoint("claim.after_commit_before_reply")
        start = self._tally.start
        for lease, wait_s in zip(leases, waits, strict=True):
            start(lease.task_name, wait_s)
        if rank:
            with self._lock:
                return ClaimReply(pack_leases(leases), self._core.top_rank(pool))
        return ClaimReply(pack_leases(leases))

    def _wake_claims(self, pool: str | None, n: int) -> None:
        pools = [pool] if pool is not None else list(self._claims)
        for name in pools:
            waiters = self._claims.get(name)
            woken = 0
            while waiters and woken < n:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    woken += 1

    async def report(self, worker: str, packed: bytes) -> list[bool]:
        """Record finished attempts (packed by :func:`~rayqueue.core.lease.pack_outcomes`);
        ``False`` marks a fenced (stale) one."""
        reported = self._complete(worker, packed)
        await self._durable()
        return self._completed(worker, *reported)

    def _complete(self, worker: str, packed: bytes) -> tuple[
            list[Outcome], list[TaskRecord | None], float]:
        """Apply finished attempts to the core (committed by the caller's _durable)."""
        outcomes = unpack_outcomes(packed)
        tally = self._calls["report"]
        tally[0] += 1
        tally[1] += len(outcomes)
        now = self._clock.now()
        crashpoint("ack.before_commit")
        with self._lock:
            recs = self._core.complete_many(outcomes, now)
        return outcomes, recs, now

    def _completed(self, worker: str, outcomes: list[Outcome],
                   recs: list[TaskRecord | None], now: float) -> list[bool]:
        """Once finished attempts are durable: events, logs, result waiters."""
        crashpoint("ack.after_commit_before_reply")
        # The hot path: no method calls per task (Ray wraps every actor method).
        done: list[str] = []
        events = self._events
        end = self._tally.end
        records = lifecycle()
        for outcome, rec in zip(outcomes, recs, strict=True):
            if rec is None:
                self._log.info("stale report ignored", action="task_report_fenced",
                               task_id=outcome.task_id, worker=worker)
                continue
            # A finished record keeps the start of its last attempt.
            run_s = max(0.0, now - (rec.started_at or now))
            if rec.state is TaskState.SUCCEEDED:
                end(rec.task_name, "succeeded", run_s)
                done.append(rec.id)
                if records is not None:
                    records.emit("task succeeded", "task_succeeded", queue=self._name,
                                 task_id=rec.id, task=rec.task_name, attempt=rec.attempts,
                                 worker=worker)
                continue
            end(rec.task_name, _outcome_of(rec), run_s)
            events.append(_failure_event(rec, now))
            self._log_outcome(rec, worker)
            if self._end_hooks:
                self._call_end_hooks(rec, "failed")
            if rec.state is TaskState.FAILED:
                crashpoint("retry.after_commit")
            if rec.state.terminal:
                done.append(rec.id)
        self._resolve_results(done)
        if records is not None:
            records.flush()
        self._wake_parked()  # an end of an attempt confirms its start
        return [r is not None for r in recs]

    def _log_outcome(self, rec: TaskRecord, worker: str) -> None:
        """Log an attempt that did not succeed."""
        log = self._log.bind(task_id=rec.id, task=rec.task_name, attempt=rec.attempts,
                             worker=worker)
        if rec.state is TaskState.FAILED:
            err = rec.error
            # DEBUG, as other per-task records: a retry is the policy working, counted in
            # the metrics ("retried"); a task that gives up is a WARNING below.
            log.debug("task failed ({}), retry in {:.2f}s", err.type if err else "?",
                      rec.due_at - rec.updated_at, action="task_retry_scheduled")
        elif rec.state is TaskState.DEAD:
            err = rec.error
            log.warning("task dead ({}): {}", rec.reason, err.message if err else "",
                        action="task_dead", reason=rec.reason)

    async def started(self, refs: Sequence[tuple[str, int]]) -> None:
        """A worker says these leases (task id, lease token; marked ``confirm``) have
        started: claims held back for them may now take lower-priority work."""
        refs = check_lease_refs("refs", refs)  # all checked before any is applied
        with self._lock:
            self._core.started(refs)
        self._wake_parked()

    def _wake_parked(self) -> None:
        """Wake the claims parked on pools that may have work for them now: held back
        for an unconfirmed start that is now confirmed, limited tasks back in line (a
        rate refill), workflow steps made ready by their parents. Steps cancelled
        because a parent failed are listed with the recent failures (dashboard)."""
        with self._lock:
            pools = self._core.take_held_back() | self._core.take_unblocked()
            cut = self._core.take_cancelled_steps()
        for pool in pools:
            self._wake_claims(pool, 1 << 30)
        if cut:
            now = self._clock.now()
            self._events.extend(_failure_event(rec, now, "cancelled") for rec in cut)

    async def heartbeat(self, refs: Sequence[tuple[str, int]]) -> list[bool]:
        """Extend leases; ``False`` tells the worker its lease is gone."""
        refs = check_lease_refs("refs", refs)
        with self._lock:
            alive = self._core.heartbeat(refs, self._clock.now())
        await self._durable()
        return alive

    async def release(self, refs: Sequence[tuple[str, int]]) -> list[bool]:
        """Give leased tasks back unrun (attempts not counted); False where stale."""
        refs = check_lease_refs("refs", refs)  # a bad item changes nothing, not half
        now = self._clock.now()
        out: list[bool] = []
        with self._lock:
            for task_id, token in refs:
                try:
                    self._core.release(task_id, token, now)
                    out.append(True)
                except StaleLeaseError:  # finished or re-leased: nothing to give back
                    out.append(False)
        await self._durable()
        self._wake_claims(None, sum(out))
        return out

    async def worker_lost(self, worker: str) -> list[str]:
        """Return a dead worker's leases to the queue (each counts a lost attempt)."""
        with self._lock:
            ids = self._core.worker_lost(worker, self._clock.now())
        await self._durable()
        for task_id in ids:
            self._event_of(task_id, "lost")
        if ids:
            self._log.warning("worker lost; {} lease(s) returned", len(ids),
                              action="worker_lost", worker=worker, task_ids=ids)
            self._resolve_results(ids)
            self._wake_parked()
            # Ready again at once, as suspects, which only an idle claimer may take: wake
            # every waiting claim, not the first few (which may be busy workers').
            self._wake_claims(None, 1 << 30)
        return ids

    async def reclaim_workers(self, prefix: str, keep: Sequence[str] = ()) -> list[str]:
        """Return the leases of every worker whose id starts with ``prefix``, but ``keep``.

        A restarted pool manager calls this: its old workers died with it.
        """
        with self._lock:
            gone = [w for w in self._core.workers() if w.startswith(prefix) and w not in keep]
        ids: list[str] = []
        for worker in gone:
            ids.extend(await self.worker_lost(worker))
        return ids

    async def pool_status(self) -> PoolStatus:
        """Demand per pool, and workers whose task overran its timeout (taken once)."""
        # The timer loop is started by a call this actor makes to itself at creation;
        # Ray can lose that call (an RPC failure), and then no retry is ever promoted
        # and no lease expires. The pool manager asks this every 250 ms: start it here
        # too, so a lost start costs at most a cycle.
        await self.start()
        with self._lock:
            ready = {p: self._core.ready_count(p) for p in self._core.pools()}
            leased = self._core.leased_by_pool()
            by_worker = self._core.leased_by_worker()
            schedule_in = self._core.schedules_due_in(self._clock.now())
            claimable = {} if self._core.paused else ready
        timed_out, self._timed_out = self._timed_out, []
        return PoolStatus(ready, leased, timed_out, by_worker, schedule_in, claimable)

    async def recover_now(self) -> dict[str, int]:
        """Test hook (``rayqueue.testing.recover_now``): reload the core from the
        journal, as a restart would, then tick."""
        if isinstance(self._storage, NullStorage):
            raise TypeError("this queue has no journal to recover from (journal=None)")
        await self._durable()
        with self._lock:
            self._core = self._reloaded()
            report = self._core.tick(self._clock.now())
        self._after_tick(report)  # outside the lock, as the timer loop does: it takes it
        await self._durable()
        return self._core.stats().by_state

    # --------------------------------------------------------------- results
    async def wait_results(self, task_ids: Sequence[str], timeout: float) -> list[TaskInfo | None]:
        """Wait until every task is finished, or ``timeout`` s; return their records."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        for task_id in task_ids:
            while True:
                with self._lock:
                    rec = self._committed(task_id)
                if rec is None or rec.state.terminal or loop.time() >= deadline:
                    break
                fut: asyncio.Future[None] = loop.create_future()
                self._results.setdefault(task_id, []).append(fut)
                try:
                    await asyncio.wait_for(fut, deadline - loop.time())
                except asyncio.TimeoutError:
                    break
        with self._lock:
            return [_info(self._committed(i)) for i in task_ids]

    def _resolve_results(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            for fut in self._results.pop(task_id, ()):
                if not fut.done():
                    fut.set_result(None)

    async def join(self, timeout: float) -> bool:
        """Wait until no unfinished task is left (or ``timeout``); True if drained."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with self._lock:
                if self._core.size() == 0:
                    return True
            await asyncio.sleep(0.02)  # an actor-side poll, cheap and bounded
        with self._lock:
            return self._core.size() == 0

    # ----------------------------------------------------------------- reads
    @_control
    async def stats(self) -> QueueStats:
        """Counts by state and priority, and whether the journal is failing."""
        with self._lock:
            stats = self._committed_stats()
        if self._failing_error is None:
            return stats
        return stats.model_copy(update={
            "journal_failing": True,
            "storage_full": isinstance(self._failing_error, StorageFullError)})

    @_control
    async def peek(self, pool: str = "default") -> TaskInfo | None:
        """The next task a claim on ``pool`` would get."""
        with self._lock:
            return _info(self._core.peek(pool))

    @_control
    async def head_rank(self, pool: str = "default") -> tuple[float, float] | None:
        """The rank (QueueCore.top_rank) and due time of the task a claim on ``pool``
        would get: how a client orders shards as one queue would, payload left out."""
        with self._lock:
            rank, head = self._core.top_rank(pool), self._core.peek(pool)
        return None if rank is None or head is None else (rank, head.due_at)

    @_control
    async def get(self, task_id: str) -> TaskInfo | None:
        """One task's record (as committed), or None; with its last progress."""
        with self._lock:
            info = _info(self._committed(task_id))
            progress = self._core.progress(task_id) if info is not None else None
        if info is not None and progress is not None:
            info.progress, info.progress_message = progress
        return info

    @_control
    async def dead_letters(self, limit: int = 100) -> list[TaskInfo]:
        """Dead tasks (as committed), most recent first."""
        with self._lock:
            changed = {task_id for before in self._befores() for task_id in before}
            dead = {r.id: r for r in self._core.dead_letters(limit + len(changed))}
            for task_id in changed:
                rec = self._committed(task_id)
                if rec is not None and rec.state is TaskState.DEAD:
                    dead[task_id] = rec
                else:
                    dead.pop(task_id, None)
        ordered = sorted(dead.values(), key=lambda r: r.finished_at or 0.0, reverse=True)
        return [TaskInfo.of(r) for r in ordered[:limit]]

    @_control
    async def browse(self, where: TaskFilter, limit: int,
                     before: int | None) -> tuple[list[tuple[int, TaskInfo]], int | None]:
        """A page of tasks (as committed) matching ``where``, newest first, as brief
        rows with their ``seq``, and the cursor of the next page (see
        :meth:`QueueCore.browse`): bounded work, whatever the queue holds."""
        with self._lock:
            page = self._core.browse(where, limit, before)
            rows: list[tuple[int, TaskInfo]] = []
            for rec in page.records:
                committed = self._committed(rec.id)
                if committed is not None and where.matches(committed):
                    rows.append((rec.seq, TaskInfo.brief_of(committed)))
        return rows, page.next

    async def purge(self, states: Sequence[str]) -> int:
        """Remove the finished tasks in ``states`` (journaled); how many were removed."""
        with self._lock:
            removed = self._core.purge(TaskState(s) for s in states)
        await self._durable()
        self._log.info("{} tasks purged ({})", len(removed), ", ".join(states),
                       action="tasks_purged", purged=len(removed))
        return len(removed)

    @_control
    async def schedules(self) -> list[ScheduleInfo]:
        """Periodic schedules."""
        with self._lock:
            return [ScheduleInfo.of(s) for s in self._core.schedules()]

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Let a paused schedule create runs again (see QueueCore.resume_schedule)."""
        with self._lock:
            sched = self._core.resume_schedule(schedule_id, self._clock.now())
        await self._durable()
        return ScheduleInfo.of(sched)

    @_control
    async def max_payload_bytes(self) -> int:
        """The largest payload this queue accepts, in bytes of JSON."""
        return self._config.max_payload_bytes

    async def profile_start(self) -> None:
        """Bench hook: start a CPU profile of the event loop (needs pyinstrument)."""
        self._profiler.start()

    async def profile_stop(self) -> dict[str, str]:
        """Bench hook: stop the profile; returns its report as ``html`` and ``text``."""
        return self._profiler.stop()

    @_control
    async def pid(self) -> int:
        """The actor's process id (for fault-injection tests)."""
        return os.getpid()

    @_control
    async def quiet_mark(self) -> tuple[int, int]:
        """Unfinished tasks and how many were ever created: a sharded queue's ``join``
        takes two equal rounds of all-empty marks as "empty at one instant"."""
        with self._lock:
            return self._core.size(), self._core.created()

    @_control
    async def node_id(self) -> str:
        """The Ray node this actor runs on (where its journal must be)."""
        return str(ray.get_runtime_context().get_node_id())

    @_control
    async def shard_info(self) -> tuple[int, int]:
        """This actor's shard index and the queue's shard count."""
        return self._shard, self._shards


def _info(rec: TaskRecord | None) -> TaskInfo | None:
    return None if rec is None else TaskInfo.of(rec)


def _outcome_of(rec: TaskRecord) -> str:
    if rec.state is TaskState.SUCCEEDED:
        return "succeeded"
    if rec.state is TaskState.DEAD:
        return "dead"
    return "retried"


def _failure_event(rec: TaskRecord, now: float, outcome: str | None = None) -> FailedAttempt:
    """A failed attempt for the metrics actor's list of recent failures."""
    err = rec.error
    return FailedAttempt(now, rec.id, rec.task_name, outcome or _outcome_of(rec),
                         rec.state.value, err.type if err else (rec.reason or ""),
                         (err.message if err else "")[:300], rec.attempts)
