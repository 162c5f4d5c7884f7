"""Middleware and task types for the middleware tests (shipped to the actors)."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from rayqueue import Middleware, RetryPolicy, Task
from rayqueue.middleware import Attempt, AttemptResult, Message, TaskEnd, WorkerStart
from rayqueue.task import current


class Recorder(Middleware):
    """Appends one JSON line per hook call (hook, pid, task id, details) to ``path``;
    every process of the queue appends to the same file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, hook: str, **fields: Any) -> None:
        line = json.dumps({"hook": hook, "pid": os.getpid(), **fields}) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def before_enqueue(self, message: Message) -> None:
        message.headers["x-recorded"] = "yes"
        self._write("before_enqueue", task_id=message.task_id, task=message.task_name)

    def after_enqueue(self, message: Message, error: BaseException | None) -> None:
        self._write("after_enqueue", task_id=message.task_id,
                    error=None if error is None else type(error).__name__)

    def worker_started(self, worker: WorkerStart) -> None:
        self._write("worker_started", worker=worker.worker)

    def worker_stopping(self, worker: WorkerStart) -> None:
        self._write("worker_stopping", worker=worker.worker)

    def before_attempt(self, attempt: Attempt) -> None:
        ctx = current()
        attempt.state["seen"] = True
        self._write("before_attempt", task_id=attempt.task_id, attempt=attempt.attempt,
                    headers=dict(attempt.headers),
                    in_context=ctx is not None and ctx.task_id == attempt.task_id)

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        self._write("after_attempt", task_id=attempt.task_id, attempt=attempt.attempt,
                    outcome=result.outcome, error=result.error_type,
                    same_attempt=attempt.state.get("seen", False))

    def on_retry(self, end: TaskEnd) -> None:
        self._write("on_retry", task_id=end.task_id, reason=end.reason,
                    headers=dict(end.headers))

    def on_dead(self, end: TaskEnd) -> None:
        self._write("on_dead", task_id=end.task_id, reason=end.reason)


class Raiser(Middleware):
    """Raises from every hook: the task's fate must not change."""

    def _boom(self, *args: Any) -> None:
        raise RuntimeError("middleware bug")

    before_enqueue = after_enqueue = worker_started = worker_stopping = _boom
    before_attempt = after_attempt = on_retry = on_dead = _boom


class EchoHeaders(Task[dict[str, str]]):
    """Returns the headers its attempt sees through ``current()``."""

    task_name: ClassVar[str] = "hooks.echo"

    def execute(self) -> dict[str, str]:
        ctx = current()
        return dict(ctx.headers) if ctx is not None else {}


class CrashesOnce(Task[int]):
    """Its first attempt kills its worker process (the worker is lost)."""

    task_name: ClassVar[str] = "hooks.crash"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2, max_lost_attempts=2,
                                               base_delay=0.1, jitter=False)

    def execute(self) -> int:
        ctx = current()
        if ctx is not None and ctx.attempt == 1:
            os._exit(1)
        return os.getpid()
