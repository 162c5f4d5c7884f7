"""Ray call plumbing: submit, wait with a deadline, retry, and translate Ray's errors.

Every call the client makes to an actor goes through here, so no Ray or asyncio error
reaches a user raw: each is mapped onto the rayqueue error tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import ray

from rayqueue import settings
from rayqueue.errors import (
    InvalidArgumentError,
    JournalCorruptError,
    JournalInUseError,
    JournalNotFoundError,
    QueueBusyError,
    QueueFullError,
    QueueLostError,
    QueueUnavailableError,
    RayQueueError,
    StorageBusyError,
    StorageError,
    StorageFullError,
)

#: Longest wait for an answer beyond what a call may rightly park (its ``hold``). Ray
#: can lose a request or its reply, and the reference then never resolves; a call not
#: answered in time is treated as unanswered and retried (every retried call here is
#: idempotent), so one lost reply cannot hang a producer for good. 30 s unless
#: ``RAYQUEUE_ANSWER_TIMEOUT_S`` says otherwise.
ANSWER_TIMEOUT_S = settings.answer_timeout_s()

#: Calls one client handle may have waiting on the queue actor before QueueBusyError:
#: a flood of producers meets a typed error, not an unbounded backlog in the actor.
MAX_PENDING_CALLS = 1_000


def _translate(err: BaseException) -> BaseException:
    """Map a Ray error to the rayqueue error it stands for."""
    lost = _lost(err)
    if lost is not None:
        return lost
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause
        if isinstance(cause, RayQueueError):
            return cause
        if isinstance(cause, (ValueError, TypeError)):
            return cause
    if isinstance(err, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return QueueUnavailableError(
            f"the queue's actor is unreachable ({type(err).__name__}); the operation may "
            "not have happened: retry with the same task ids to be safe"
        )
    if isinstance(err, ray.exceptions.PendingCallsLimitExceeded):
        return QueueBusyError(
            f"more than {MAX_PENDING_CALLS} calls are waiting on the queue actor: slow "
            "down, batch with enqueue_many, or retry later"
        )
    if isinstance(err, ray.exceptions.GetTimeoutError):
        return QueueUnavailableError(f"the queue's actor did not answer in time: {err}")
    return err


def _lost(err: BaseException) -> Exception | None:
    """The error for an actor that is gone for good (None if it may come back)."""
    if isinstance(err, ray.exceptions.ActorUnschedulableError):
        return QueueLostError(
            f"the queue's actor cannot be placed ({err.error_message}). With a journal, it "
            "runs only on the node that holds the file: bring that node (and its disk) "
            "back, then call rayqueue.init again with the same journal to recover every "
            "acknowledged task")
    if isinstance(err, ray.exceptions.RayActorError) and err.actor_init_failed:
        text = str(err)
        missing = _JOURNAL_MISSING.search(text)
        if missing:
            return JournalNotFoundError(missing.group(2))
        corrupt = _JOURNAL_CORRUPT.search(text)
        if corrupt:
            return JournalCorruptError(corrupt.group(2), corrupt.group(3))
        in_use = _JOURNAL_IN_USE.search(text)
        if in_use:  # another queue (or another copy of this one) owns the journal
            return JournalInUseError(in_use.group(2), in_use.group(3))
        storage = _STORAGE_FAILED.findall(text)
        if storage:  # e.g. a journal of another schema version, or an unwritable one
            kind, message = storage[-1]
            return _STORAGE_ERRORS[kind](message)
        refused = _REFUSED.findall(text)
        if refused:  # a configuration the actor refused (e.g. another shard count)
            return InvalidArgumentError("journal", refused[-1])
        last = text.strip().splitlines()[-1] if text.strip() else type(err).__name__
        return QueueLostError(f"the queue's actor failed to start: {last}")
    return None


#: How JournalNotFoundError's message names the path (its text crosses Ray as a string).
_JOURNAL_MISSING = re.compile(r"queue journal is missing at (['\"])(.+?)\1")
#: How JournalCorruptError's message names the path and the problem.
_JOURNAL_CORRUPT = re.compile(r"queue journal at (['\"])(.+?)\1 is refused and was left as it "
                              r"was: (.+?)\. See what it holds")
#: How JournalInUseError's message names the path and the owner.
_JOURNAL_IN_USE = re.compile(r"queue journal at (['\"])(.+?)\1 is in use by (.+?): a journal "
                             r"has one owner at a time")
#: Any other StorageError raised by the queue actor's constructor (opening its journal).
_STORAGE_FAILED = re.compile(r"^(?:rayqueue\.errors\.)?(Storage(?:Busy|Full)?Error): (.+)$",
                             re.MULTILINE)
_STORAGE_ERRORS: dict[str, type[StorageError]] = {
    "StorageError": StorageError, "StorageBusyError": StorageBusyError,
    "StorageFullError": StorageFullError}
#: A ValueError raised by an actor's constructor, as its traceback text shows it.
_REFUSED = re.compile(r"^ValueError: (.+)$", re.MULTILINE)


def _get(ref: Any, timeout: float | None = None) -> Any:
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayError as err:
        raise _translate(err) from None


#: At most this many seconds of retrying for the calls made in this context (None: the
#: caller's own timeout); see :func:`retry_cap`.
_RETRY_CAP: ContextVar[float | None] = ContextVar("rayqueue_retry_cap", default=None)


@contextlib.contextmanager
def retry_cap(seconds: float) -> Iterator[None]:
    """Within it, a retried call gives up after ``seconds`` of unreachability whatever
    its own timeout: for a caller that stops waiting anyway (the dashboard answers 503
    after a few seconds), so its call does not go on retrying in a thread of its own."""
    token = _RETRY_CAP.set(seconds)
    try:
        yield
    finally:
        _RETRY_CAP.reset(token)


class _Budget:
    """How long a retried call may go on failing: ``timeout`` s of unreachability.

    ``hold`` is how long the call itself may rightly park (a long-poll). An attempt that
    fails after parking was answered late, not refused: only its time beyond ``hold``
    counts. So a reply lost after a 30-s result wait costs nothing, while an actor that
    refuses every call is given up on after ``timeout`` s.
    """

    def __init__(self, timeout: float, hold: float, spent: float = 0.0) -> None:
        cap = _RETRY_CAP.get()
        self.timeout = timeout if cap is None else min(timeout, cap)
        self.hold, self.spent = hold, spent
        self.pause = 0.05

    def after(self, began: float, err: BaseException) -> float:
        """The pause before the next attempt, given one began at ``began`` failed with
        ``err``; re-raises ``err`` when the budget is spent or the actor is lost."""
        self.spent += max(0.0, time.monotonic() - began - self.hold)
        # (a journal another queue owns is as final: waiting does not free it)
        if isinstance(err, (QueueLostError, JournalInUseError)) \
                or self.spent + self.pause > self.timeout:
            raise err
        pause = self.pause
        self.spent += pause
        self.pause = min(pause * 2, 1.0)
        return pause


def _retrying(call: Callable[[], Any], timeout: float, *, hold: float = 0.0,
              retry_full: bool = False, spent: float = 0.0) -> Any:
    """Run an idempotent actor call, retrying with backoff while the actor is unreachable
    or busy (and, with ``retry_full``, while the queue is full); see :class:`_Budget`."""
    budget = _Budget(timeout, hold, spent)
    retry_on = _retryable(retry_full)
    while True:
        began = time.monotonic()
        try:
            return _get(_submit(call), timeout=hold + ANSWER_TIMEOUT_S)
        except retry_on as err:
            time.sleep(budget.after(began, err))  # backing off between retries


def _retryable(retry_full: bool) -> tuple[type[BaseException], ...]:
    """The errors worth retrying an idempotent call on (a full queue only if asked)."""
    always = (QueueUnavailableError, QueueBusyError, StorageBusyError)
    return (*always, QueueFullError) if retry_full else always


def _retrying_all(calls: Sequence[Callable[[], Any]], timeout: float, *, hold: float = 0.0,
                  retry_full: bool = False, settle: bool = False) -> list[Any]:
    """:func:`_retrying` for several calls at once (one per shard): all are submitted
    before any is waited for; answers in the calls' order. The first error that outlasts
    its retries is raised once every call has settled, so none is left running unseen
    (with ``settle``, each call's error is returned in its place instead)."""
    if len(calls) == 1 and not settle:
        return [_retrying(calls[0], timeout, hold=hold, retry_full=retry_full)]
    began = time.monotonic()
    refs: list[Any] = []
    for call in calls:
        try:
            refs.append(_submit(call))
        except RayQueueError:
            refs.append(None)  # refused at submission: retried below
    out: list[Any] = []
    error: BaseException | None = None
    lent = 0.0  # seconds spent retrying calls read earlier: not this call's to pay for
    for call, ref in zip(calls, refs, strict=True):
        try:
            try:
                if ref is None:
                    raise QueueBusyError("refused at submission")
                out.append(_get(ref, timeout=hold + ANSWER_TIMEOUT_S))
            except _retryable(retry_full):
                start = time.monotonic()
                try:
                    out.append(_retrying(call, timeout, hold=hold, retry_full=retry_full,
                                         spent=max(0.0, start - began - lent - hold)))
                finally:
                    lent += time.monotonic() - start
        except Exception as err:  # raised below, once the other calls have settled
            out.append(err if settle else None)
            error = error or err
    if error is not None and not settle:
        raise error
    return out


def _submit(call: Callable[[], Any]) -> Any:
    """Submit an actor call; a refusal at submission (too many pending) is translated."""
    try:
        return call()
    except ray.exceptions.RayError as err:
        raise _translate(err) from None


async def bounded(ref: Any, timeout: float) -> Any:
    """The answer of ``ref``; a :class:`ray.exceptions.GetTimeoutError` (a RayError, so
    callers back off and call again) if none came within ``timeout`` s: Ray can lose a
    request or its reply, and the reference then never resolves."""
    try:
        return await asyncio.wait_for(ref, timeout)
    except asyncio.TimeoutError:
        raise ray.exceptions.GetTimeoutError(
            f"no answer in {timeout:.0f} s (a lost request or reply)") from None


async def stop(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its CancelledError swallowed, any
    other error raised). Before Python 3.12, ``asyncio.wait_for`` can swallow a cancel
    that arrives as the thing it awaits completes (CPython gh-86296): the task then goes
    on to its next await as if never cancelled, and a plain ``cancel(); await task``
    waits for good. So the cancel is repeated until the task has ended."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled():
        task.result()


async def every(period: float, call: Callable[[], Awaitable[Any]], deadline: float,
                on_error: Callable[[BaseException], None] | None = None) -> None:
    """Start ``call()`` every ``period`` s, forever, never waiting for an earlier one's
    answer; each is given up on after ``deadline`` s. For renewals: a lost reply must
    not hold back the next one. ``on_error`` hears of any other exception a call
    raised. Cancelling this cancels the calls still out."""
    out: set[asyncio.Future[Any]] = set()

    def settled(job: asyncio.Future[Any]) -> None:
        out.discard(job)
        if job.cancelled():
            return
        error = job.exception()  # retrieved: a call given up on is no unhandled error
        if error is not None and not isinstance(error, asyncio.TimeoutError) and on_error:
            on_error(error)

    try:
        while True:
            await asyncio.sleep(period)
            job = asyncio.ensure_future(asyncio.wait_for(call(), deadline))
            out.add(job)
            job.add_done_callback(settled)
    finally:
        for left in out:
            left.cancel()


async def _aget(ref: Any, timeout: float | None = None) -> Any:
    try:
        return await (ref if timeout is None else bounded(ref, timeout))
    except ray.exceptions.RayError as err:
        raise _translate(err) from None


async def _aretrying(call: Callable[[], Any], timeout: float, *, hold: float = 0.0) -> Any:
    """:func:`_retrying` for an event loop: backs off without blocking the loop."""
    budget = _Budget(timeout, hold)
    while True:
        began = time.monotonic()
        try:
            return await _aget(_submit(call), hold + ANSWER_TIMEOUT_S)
        except _retryable(False) as err:
            await asyncio.sleep(budget.after(began, err))


def shard_handles(queue: str, shards: int) -> list[Any]:
    """Handles on every shard actor of ``queue``."""
    from rayqueue.config import NAMESPACE, shard_name

    return [ray.get_actor(shard_name(queue, i), namespace=NAMESPACE) for i in range(shards)]
