"""Handles on tasks: ``TaskHandle[R]`` (a typed promise of a result) and ``ClaimedTask``.

Both are thin views that call back into their :class:`~rayqueue.client.TaskQueue`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Generator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rayqueue.actors.runner import _failure
from rayqueue.arguments import check_timeout
from rayqueue.core.lease import Lease, Outcome
from rayqueue.errors import (
    InvalidArgumentTypeError,
    ResultTimeoutError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
)
from rayqueue.info import TaskInfo
from rayqueue.sender import settled
from rayqueue.task import Task, decode_result, encode_result

if TYPE_CHECKING:
    from rayqueue.client import TaskQueue

T = TypeVar("T", bound=Task[Any])
R = TypeVar("R")


class TaskHandle(Generic[R]):
    """A promise of one task's result; ``await handle`` or ``handle.result()``."""

    def __init__(self, queue: TaskQueue[Any], task_id: str,
                 task_cls: type[Task[R]] | None, sent: Future[list[str]] | None = None) -> None:
        self.id = task_id
        self._queue = queue
        self._cls = task_cls
        self._sent = sent

    def sent(self, timeout: float | None = None) -> None:
        """Wait until the task is durable in the queue (after ``enqueue(wait=False)``).

        Raises:
            RayQueueError: the enqueue failed (the task is not in the queue).
            ResultTimeoutError: it was not sent within ``timeout`` s.
        """
        check_timeout("timeout", timeout, allow_none=True)
        if self._sent is None:
            return
        try:
            self._sent.result(timeout)
        except FutureTimeout:
            raise ResultTimeoutError(self.id, timeout or 0.0) from None

    def __repr__(self) -> str:
        """Its id, task type and what this process knows of it without asking the queue
        (``sending``: enqueued, not yet acknowledged; ``sent``; ``refused``)."""
        parts = [repr(self.id)]
        if self._cls is not None:
            parts.append(f"task={getattr(self._cls, 'task_name', self._cls.__name__)!r}")
        if self._sent is not None:
            if not self._sent.done():
                parts.append("sending")
            else:
                parts.append("refused" if self._sent.exception() is not None else "sent")
        return f"TaskHandle({', '.join(parts)})"

    def info(self) -> TaskInfo:
        """The task's record now."""
        return self._queue.get(self.id)

    def status(self) -> str:
        """The task's state now (``ready``, ``leased``, ``succeeded``, ...)."""
        return self.info().state

    def cancel(self, force: bool = False) -> str:
        """Cancel the task, also while it runs (see :meth:`TaskQueue.cancel`)."""
        return self._queue.cancel(self.id, force=force)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the result.

        Raises:
            ResultTimeoutError: not finished within ``timeout`` seconds.
            TaskFailedError: the task ended dead or cancelled (carries the remote error);
                :class:`TaskCancelledError` (a subclass) when it was cancelled.
        """
        check_timeout("timeout", timeout, allow_none=True)
        self.sent(timeout)
        info = self._queue.wait([self.id], timeout)[0]
        return self.value_of(info, timeout)

    async def result_async(self, timeout: float | None = None) -> R:
        """Like :meth:`result`, without blocking the event loop."""
        check_timeout("timeout", timeout, allow_none=True)
        if self._sent is not None:
            await asyncio.wait_for(settled(self._sent), timeout)
        info = (await self._queue.wait_async([self.id], timeout))[0]
        return self.value_of(info, timeout)

    def __await__(self) -> Generator[Any, None, R]:
        return self.result_async().__await__()

    def value_of(self, info: TaskInfo | None, timeout: float | None = None) -> R:
        """The typed result in ``info`` (this task's record, from :meth:`TaskQueue.wait`).

        Raises:
            TaskNotFoundError: ``info`` is None (no such task).
            ResultTimeoutError: the task has not finished (``timeout`` says how long
                was waited).
            TaskFailedError: it ended dead or cancelled.
        """
        if info is None:
            raise TaskNotFoundError(self.id)
        if not info.terminal:
            raise ResultTimeoutError(self.id, timeout or 0.0)
        if info.state == "cancelled":
            raise TaskCancelledError(self.id, info.state, info.error_type or info.reason,
                                     info.error_message)
        if info.state != "succeeded":
            raise TaskFailedError(self.id, info.state, info.error_type or info.reason,
                                  info.error_message)
        return _decode(self._cls, info.result_json or "null")


class GroupHandle(Generic[R]):
    """The handle of an enqueued group: ``result()`` is the list of its members'
    results, in order (``handles`` holds each member's :class:`TaskHandle`)."""

    def __init__(self, queue: TaskQueue[Any], workflow: str,
                 handles: list[TaskHandle[R]]) -> None:
        self.workflow = workflow
        self.handles = handles
        self._queue = queue

    def __repr__(self) -> str:
        return f"GroupHandle({self.workflow!r}, {len(self.handles)} tasks)"

    @property
    def ids(self) -> list[str]:
        """The members' task ids, in order."""
        return [h.id for h in self.handles]

    def result(self, timeout: float | None = None) -> list[R]:
        """Wait for every member's result (one call per slice, not per task).

        Raises:
            ResultTimeoutError, TaskFailedError: as :meth:`TaskHandle.result`, for the
                first member (in order) that did not succeed.
        """
        return self._queue.results(self.handles, timeout)

    async def result_async(self, timeout: float | None = None) -> list[R]:
        """Like :meth:`result`, without blocking the event loop."""
        check_timeout("timeout", timeout, allow_none=True)
        infos = await self._queue.wait_async(self.ids, timeout)
        return [h.value_of(i, timeout) for h, i in zip(self.handles, infos, strict=True)]

    def __await__(self) -> Generator[Any, None, list[R]]:
        return self.result_async().__await__()

    def info(self) -> list[TaskInfo | None]:
        """The members' records now."""
        return self._queue.get_many(self.ids)


def _decode(cls: type[Task[R]] | None, text: str) -> R:
    if cls is None:
        value: R = json.loads(text)
        return value
    return decode_result(cls, text)


class ClaimedTask(Generic[T]):
    """A task taken with :meth:`TaskQueue.dequeue`; finish it with ack, fail or release."""

    def __init__(self, lease: Lease, task: T, report: Callable[[Outcome], bool],
                 release: Callable[[str, int], bool]) -> None:
        self.lease = lease
        self.task = task
        #: how this claim's outcome reaches the queue (the claiming TaskQueue's shard)
        self._send = report
        self._give_back = release
        #: what this client did with it: leased, then acked, failed or released
        #: (``... (stale)`` when the queue no longer held this lease)
        self.state = "leased"

    def __repr__(self) -> str:
        return (f"ClaimedTask({self.id!r}, task={self.lease.task_name!r}, "
                f"attempt={self.attempt}, {self.state})")

    def _done(self, state: str, current: bool) -> bool:
        self.state = state if current else f"{state} (stale)"
        return current

    @property
    def id(self) -> str:
        """The task id."""
        return self.lease.task_id

    @property
    def attempt(self) -> int:
        """Which attempt this is (1-based)."""
        return self.lease.attempt

    def ack(self, result: Any) -> bool:
        """Report success; False if the lease was no longer current (fenced)."""
        text = encode_result(type(self.task), result)
        return self._done("acked", bool(self._send(
            Outcome(self.id, self.lease.token, result=text))))

    def fail(self, exc: BaseException) -> bool:
        """Report a failure; the task's retry policy decides what happens next.

        Described as a worker describes a task's exception (an ``__str__`` that raises
        does not escape; a :class:`Retry` asks for its delay).
        """
        if not isinstance(exc, BaseException):
            raise InvalidArgumentTypeError(
                "exc", f"expected an exception, got {type(exc).__name__}")
        failure = _failure(type(self.task), exc)
        return self._done("failed", bool(self._send(
            Outcome(self.id, self.lease.token, failure=failure))))

    def release(self) -> bool:
        """Give the task back unrun (the attempt does not count); False if stale."""
        return self._done("released", bool(self._give_back(self.id, self.lease.token)))
