"""Running one attempt of a task, and the threads that run sync tasks.

A thread hop per task (``run_in_executor``) cost a worker ~40 us of a no-op task's
~60 us. :class:`SyncRunner` keeps the worker's threads busy instead: each thread takes
the next waiting task itself, highest priority first and in claim order within a
priority (so a slow task holds no other back, and an urgent task claimed after
prefetched lower work starts before it), runs it, and puts the outcome in a shared
outbox.

Waking the event loop costs more than a short task body (a self-pipe write, a loop
round and the GIL taken from the runner threads), so a runner wakes it only when the loop
has something to do: when nothing is left to start (a slot is free: claim, and report at
once), or when what is left runs down to the loop's low-water mark (claim more). In
between, outcomes wait in the outbox for that wake-up or for the loop's poll
(:meth:`SyncRunner.collect`, every few milliseconds while tasks are held).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import inspect
import itertools
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from loguru import logger

from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.record import ErrorInfo
from rayqueue.core.retry import Retry
from rayqueue.errors import InvalidPayloadError, InvalidResultError
from rayqueue.logging import LifecycleLog
from rayqueue.middleware import Attempt, AttemptResult, Middleware, worker_hooks
from rayqueue.task import (
    Task,
    TaskContext,
    TaskSignals,
    decode_payload,
    encode_result,
    reset_current,
    set_current,
)

#: Longest error message and traceback text kept from a failed attempt.
MAX_MESSAGE = 2_000
MAX_TRACEBACK = 8_000

Done = list[tuple[Lease, Outcome]]


@functools.lru_cache(maxsize=1_024)
def is_async(cls: type[Task[Any]]) -> bool:
    """Whether the task type's ``execute`` is a coroutine function (asked per task:
    ``inspect`` takes ~9 us, the cache ~0.1)."""
    return inspect.iscoroutinefunction(cls.execute)


def begin(lease: Lease, cls: type[Task[Any]], worker: str) -> Task[Any] | Outcome:
    """Validate the payload again; the task, or the outcome of a payload it refuses."""
    try:
        return decode_payload(lease.task_name, lease.payload, cls, lease.feed)
    except Exception as exc:  # a validator may raise anything, not only ValidationError
        if not isinstance(exc, InvalidPayloadError):
            exc = InvalidPayloadError(lease.task_name, f"{type(exc).__name__}: {exc}")
        # Data the code cannot take: never retried.
        reason = _payload_reason(exc)
        logger.bind(task_id=lease.task_id, task=lease.task_name, attempt=lease.attempt,
                    worker=worker).warning("task rejected ({}): {}", reason, exc,
                                           action="task_rejected")
        return Outcome(lease.task_id, lease.token, failure=Failure(
            ErrorInfo.from_exception(exc), retryable=False, reason=reason))


@contextlib.contextmanager
def attempt_context(lease: Lease, worker: str) -> Iterator[None]:
    """While an attempt runs: ``rayqueue.task.current()``, which also puts the task's
    ids on every log record (the patcher that :func:`rayqueue.logging.configure` installs;
    cheaper per task than ``logger.contextualize``)."""
    signals = SIGNALS.get(lease.task_id)
    token = set_current(TaskContext(lease.task_id, lease.attempt, worker,
                                    lease.headers or _NO_HEADERS,
                                    TaskSignals() if signals is None else signals))
    try:
        yield
    finally:
        reset_current(token)


_NO_HEADERS: dict[str, str] = {}

#: The signals of the attempts this worker process holds, by task id: the worker
#: registers one as it takes a lease (so a cancel that arrives before the attempt starts
#: is seen) and drops it when the attempt is done; the attempt's TaskContext shares it.
SIGNALS: dict[str, TaskSignals] = {}


def _cancelled(lease: Lease) -> bool:
    signals = SIGNALS.get(lease.task_id)
    return signals is not None and signals.cancelled


class AttemptRun:
    """One attempt, the steps every path shares (runner threads, the event loop, the
    executor): middleware before, validate the payload again, classify how the task
    ended into an :class:`Outcome` (one retryability decision), middleware after.

    Use inside :func:`attempt_context`: ``task = run.start()``; if it is None the
    payload was refused and ``run.outcome`` says so; else run the task and call
    :meth:`returned` or :meth:`raised`.
    """

    __slots__ = ("_attempt", "_hooks", "cls", "lease", "outcome", "worker")

    def __init__(self, lease: Lease, cls: type[Task[Any]], worker: str) -> None:
        self.lease, self.cls, self.worker = lease, cls, worker
        self.outcome: Outcome | None = None
        hooks = worker_hooks()
        # No middleware implements attempt hooks (the default): nothing is built.
        self._hooks = hooks if hooks.attempts else None
        self._attempt: Attempt | None = None

    def start(self) -> Task[Any] | None:
        """Middleware's ``before_attempt``, then the payload validated again."""
        lease = self.lease
        if self._hooks is not None:
            self._attempt = Attempt(lease.task_id, lease.task_name, lease.attempt,
                                    self.worker, lease.priority, lease.headers or {})
            self._hooks.call("before_attempt", self._attempt)
        task = begin(lease, self.cls, self.worker)
        if isinstance(task, Outcome):
            self._end(task, "rejected", None)
            return None
        return task

    def returned(self, value: Any) -> Outcome:
        """The attempt returned ``value`` (checked against the declared result type)."""
        try:
            outcome = Outcome(self.lease.task_id, self.lease.token,
                              result=encode_result(self.cls, value))
        except BaseException as exc:
            return self.raised(exc)
        self._end(outcome, "succeeded", None)
        return outcome

    def raised(self, exc: BaseException) -> Outcome:
        """The attempt raised ``exc``."""
        outcome = failed(self.lease, self.cls, exc, self.worker)
        self._end(outcome, "failed", exc)
        return outcome

    def cancelled(self, exc: BaseException | None = None) -> Outcome:
        """The task was cancelled while it ran (or before it started): the queue ended
        it already, so this outcome is only for the worker's books (its report is
        fenced)."""
        outcome = cancelled_outcome(self.lease)
        self._end(outcome, "cancelled", exc)
        return outcome

    def _end(self, outcome: Outcome, kind: Any, exc: BaseException | None) -> None:
        self.outcome = outcome
        if self._hooks is None or self._attempt is None:
            return
        f = outcome.failure
        self._hooks.call("after_attempt", self._attempt, AttemptResult(
            kind, None if f is None else f.error.type, None if f is None else f.error.message,
            False if f is None else f.retryable, exc))


def cancelled_outcome(lease: Lease) -> Outcome:
    """The outcome of an attempt cancelled through the queue (reported, and fenced)."""
    return Outcome(lease.task_id, lease.token, failure=Failure(
        ErrorInfo("TaskCancelledError", "cancelled while running"), retryable=False,
        reason="cancelled"))


def failed(lease: Lease, cls: type[Task[Any]], exc: BaseException, worker: str) -> Outcome:
    """The outcome of an attempt that raised ``exc``."""
    return Outcome(lease.task_id, lease.token, failure=_failure(cls, exc))


def run_sync(lease: Lease, cls: type[Task[Any]], worker: str,
             loop: asyncio.AbstractEventLoop,
             on_start: Callable[[], None] | None = None) -> Outcome:
    """Run one attempt of a sync task in the calling thread. ``on_start``: called
    right before ``execute()`` (after the payload's validation and ``before_attempt``),
    so a start confirmed to the queue is as close as it can be to the body's start."""
    run = AttemptRun(lease, cls, worker)
    with attempt_context(lease, worker):
        task = run.start()
        if task is None:
            assert run.outcome is not None
            return run.outcome
        if _cancelled(lease):  # cancelled while it waited for a thread
            return run.cancelled()
        if on_start is not None:
            on_start()
        try:
            value = task.execute()
            if inspect.isawaitable(value):  # a sync execute that returned an awaitable
                value = asyncio.run_coroutine_threadsafe(_awaited(value), loop).result()
        except BaseException as exc:  # task code may raise anything
            return run.cancelled(exc) if _cancelled(lease) else run.raised(exc)
        return run.cancelled() if _cancelled(lease) else run.returned(value)


async def run_async(lease: Lease, cls: type[Task[Any]], worker: str,
                    on_start: Callable[[], None] | None = None) -> Outcome:
    """Run one attempt of an async task on the calling event loop (``on_start``: as
    for :func:`run_sync`).

    A task cancelled through the queue (its signals say so) ends with the outcome of
    :meth:`AttemptRun.cancelled`.

    Raises:
        asyncio.CancelledError: the attempt was cancelled otherwise (released at a
            drain deadline): it has no outcome.
    """
    run = AttemptRun(lease, cls, worker)
    with attempt_context(lease, worker):
        task = run.start()
        if task is None:
            assert run.outcome is not None
            return run.outcome
        if _cancelled(lease):
            return run.cancelled()
        if on_start is not None:
            on_start()
        try:
            value = await task.execute()
        except asyncio.CancelledError as exc:
            if _cancelled(lease):
                return run.cancelled(exc)
            raise
        except BaseException as exc:  # task code may raise anything
            return run.cancelled(exc) if _cancelled(lease) else run.raised(exc)
        return run.cancelled() if _cancelled(lease) else run.returned(value)


async def _awaited(value: Any) -> Any:
    return await value


class LifecycleMiddleware(Middleware):
    """The per-task ``task_started``/``task_failed`` records of a worker, as the first
    middleware (installed when lifecycle records are wanted: see
    :func:`rayqueue.logging.lifecycle_level`)."""

    def __init__(self, records: LifecycleLog) -> None:
        self._records = records

    def before_attempt(self, attempt: Attempt) -> None:
        self._records.emit("task started", "task_started", worker=attempt.worker,
                           task_id=attempt.task_id, task=attempt.task_name,
                           attempt=attempt.attempt)

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        if result.outcome == "cancelled":
            self._records.emit("task cancelled", "task_cancelled", worker=attempt.worker,
                               task_id=attempt.task_id, task=attempt.task_name,
                               attempt=attempt.attempt)
        elif result.outcome != "succeeded":
            self._records.emit(f"task failed: {result.error_type}: {result.error_message}",
                               "task_failed", worker=attempt.worker, task_id=attempt.task_id,
                               task=attempt.task_name, attempt=attempt.attempt)


class SyncRunner:
    """``threads`` threads running sync tasks from one FIFO, outcomes back in batches."""

    def __init__(self, threads: int, worker: str, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[Done], None],
                 started: Callable[[Lease], None] | None = None) -> None:
        #: waiting attempts as (-priority, arrival, lease, class); a stop is priority
        #: -inf, so it comes after every task
        self._waiting: list[tuple[float, int, Lease | None, type[Task[Any]] | None]] = []
        self._arrivals = itertools.count()
        #: leases in ``_waiting`` (stops are not counted)
        self._left = 0
        self._ready = threading.Condition(threading.Lock())
        self._worker = worker
        self._loop = loop
        self._deliver = deliver
        #: told (on the loop) of each lease marked ``confirm`` as it starts
        self._started = started
        #: starts of marked leases not yet told; one wake-up carries all of them
        self._starts: list[Lease] = []
        #: seconds a thread spends on one attempt, smoothed (None: none ran yet)
        self._pace: float | None = None
        #: threads waiting for work, and whether a submit woke one since hand_over
        self._idle = 0
        self._woke = False
        self._outbox: deque[tuple[Lease, Outcome]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        #: wake the loop once when this few tasks are left to start (it claims more)
        self.low_water = 0
        #: the low-water wake-up went out; the next submit re-arms it
        self._refill_asked = False
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"rq-{worker}-{i}") for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, lease: Lease, cls: type[Task[Any]]) -> None:
        """Queue one attempt (run by priority, then in submission order)."""
        with self._ready:
            heapq.heappush(self._waiting,
                           (-lease.priority, next(self._arrivals), lease, cls))
            self._left += 1
            self._refill_asked = False
            if self._idle:
                self._woke = True
            self._ready.notify()

    def hand_over(self) -> None:
        """On the loop, after submitting: if that woke an idle thread, give up the GIL
        for a moment so it starts its task now. Otherwise it waits for the GIL while the
        loop goes on to send its next claim (about half a millisecond of idle latency
        here, measured from the claim reply to the task's start)."""
        if self._woke:
            self._woke = False
            time.sleep(0)  # releases the GIL; the woken thread takes it

    def collect(self) -> None:
        """On the loop: take whatever finished without a wake-up (the loop's poll)."""
        if self._outbox:
            self._empty_outbox()

    def take_unstarted(self) -> list[Lease]:
        """Remove and return what no thread has started yet."""
        with self._ready:
            out = [lease for _, _, lease, _ in sorted(self._waiting) if lease is not None]
            self._waiting = [item for item in self._waiting if item[2] is None]
            self._left = 0
            return out

    def stop(self) -> None:
        """Let every thread end once nothing waits (running tasks finish)."""
        with self._ready:
            for _ in self._threads:
                heapq.heappush(self._waiting, (math.inf, next(self._arrivals), None, None))
            self._ready.notify_all()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                _, _, lease, cls = heapq.heappop(self._waiting)
                if lease is not None:
                    self._left -= 1
            if lease is None or cls is None:
                return
            on_start = None
            if lease.confirm and self._started is not None:
                on_start = functools.partial(self._tell_start, lease)
            began = time.perf_counter()
            try:
                outcome = run_sync(lease, cls, self._worker, self._loop, on_start)
            except BaseException as exc:  # never let a runner thread die with a lease
                outcome = failed(lease, cls, exc, self._worker)
            self._hand_back(lease, outcome, time.perf_counter() - began)

    def capacity(self, horizon: float, per_thread: int) -> int:
        """Attempts the threads can finish in ``horizon`` s at the pace of recent ones,
        at most ``per_thread`` each: what the worker may hold beyond its slots. Unlike a
        count of finished tasks it does not fall while work is scarce (idle spells, or
        one task per claim while lower work is ready), so a burst is claimed in batches
        from its first claim. The pace is the attempts' own time, not the loop's share
        per task, so for short bodies this is more than the horizon's worth of work,
        which is what keeps claims large; hence the bound (a worker that dies takes
        what it holds with it as lost attempts)."""
        pace = self._pace
        if pace is None:
            return 0
        threads = len(self._threads)
        return min(threads * per_thread, int(horizon * threads / max(pace, 1e-6)))

    def _tell_start(self, lease: Lease) -> None:
        """A marked lease starts: tell the loop, one wake-up for the starts that come
        while it is pending (prefetched marked leases start back to back)."""
        with self._lock:
            self._starts.append(lease)
            if len(self._starts) > 1:
                return
        with contextlib.suppress(RuntimeError):  # a closed loop: exiting
            self._loop.call_soon_threadsafe(self._told_starts)

    def _told_starts(self) -> None:
        with self._lock:
            starts, self._starts = self._starts, []
        assert self._started is not None
        for lease in starts:
            self._started(lease)

    def _hand_back(self, lease: Lease, outcome: Outcome, took: float) -> None:
        """Queue one outcome for the loop; wake the loop when it has work to do (see the
        module docstring) and no wake-up is pending, so outcomes that finish while the
        loop is busy come back as one batch. ``took``: the attempt's seconds."""
        self._outbox.append((lease, outcome))
        with self._ready:
            pace = self._pace
            self._pace = took if pace is None else 0.8 * pace + 0.2 * took
            left = self._left
            if left and (self._refill_asked or left > self.low_water):
                return  # the loop's poll takes it
            if left:
                self._refill_asked = True
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: the actor is exiting
            self._loop.call_soon_threadsafe(self._empty_outbox)

    def _empty_outbox(self) -> None:
        with self._lock:
            self._wake_pending = False
        done: Done = []
        while self._outbox:
            done.append(self._outbox.popleft())
        if done:
            self._deliver(done)


def _message(exc: BaseException) -> str:
    """``str(exc)`` cut to MAX_MESSAGE, even for exceptions whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception as err:  # a misbehaving exception must not take the worker down
        text = f"<str() failed: {type(err).__name__}>"
    return text[:MAX_MESSAGE]  # cut first: a 50 MB message is not copied around


def describe(exc: BaseException) -> str:
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
    if isinstance(exc, InvalidResultError) and exc.task_name is not None:  # a wrong result
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
