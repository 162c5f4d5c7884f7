"""Middleware: hooks into a task's life, without editing rayqueue.

Subclass :class:`Middleware`, override the hooks you need (each is a no-op), and pass
instances to :func:`rayqueue.init` (``middleware=[...]``). They travel to the queue
actor and to every worker as task classes do (by reference when importable, else by
value), so each hook runs in the process where its event happens:

====================  ==============  ===============================================
hook                  process         when
====================  ==============  ===============================================
``before_enqueue``    producer        a task was validated and has its id; may add
                                      ``message.headers`` (trace context, ids)
``after_enqueue``     producer        the queue acknowledged it (or refused: ``error``)
``worker_started``    worker          a worker actor is ready to claim
``worker_stopping``   worker          a worker drained and is about to exit
``before_attempt``    worker          in the attempt's thread, inside ``current()``,
                                      before the payload is validated again
``after_attempt``     worker          same thread, with the attempt's result
``on_retry``          queue actor     a retry is scheduled (failure, timeout, or
                                      the worker lost)
``on_dead``           queue actor     the task is dead (no attempts left, not
                                      retryable, timed out, worker lost, ...)
====================  ==============  ===============================================

Hooks observe; they do not take part in the task's durability. ``on_retry`` and
``on_dead`` run once the queue has decided (for a reported failure, once the decision
is in the journal); a queue actor that dies between a decision and its hook skips the
hook, and a task that runs again after a crash runs its attempt hooks again.

``before_*`` hooks run in the order the middleware was given, ``after_*`` hooks in the
reverse order (so a span opened first is closed last). An attempt whose worker dies
(a timeout, a crash) has no ``after_attempt``: its end is seen by the queue, as
``on_retry`` or ``on_dead`` with ``reason`` ``timeout`` or ``worker_lost``.

A middleware that raises is logged (with its class name, at ERROR, once per hook and
middleware per minute) and otherwise ignored: the task's fate is the same as without
it. Hooks run on the hot path; keep them cheap (buffer, sample, or hand off to a
thread for anything slow).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger

from rayqueue.logging import traceback_of

__all__ = [
    "Attempt",
    "AttemptResult",
    "Middleware",
    "Message",
    "TaskEnd",
    "WorkerStart",
]


@dataclass
class Message:
    """A task on its way into the queue (producer side).

    ``headers`` is mutable in ``before_enqueue``: what it holds is validated, journaled
    and carried to every attempt (``TaskQueue.enqueue(headers=...)``,
    ``current().headers``, ``TaskInfo.headers``).
    ``state`` is scratch space for a middleware between ``before_enqueue`` and
    ``after_enqueue``.
    """

    task_id: str
    task_name: str
    priority: int
    headers: dict[str, str]
    task: Any = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attempt:
    """One attempt of a task on a worker. ``state`` is scratch space for a middleware
    between ``before_attempt`` and ``after_attempt`` (the same object)."""

    task_id: str
    task_name: str
    attempt: int
    worker: str
    priority: int
    headers: Mapping[str, str]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended on the worker.

    ``outcome`` is ``succeeded``, ``failed`` (the task raised, or its result did not fit
    its type), ``rejected`` (the payload no longer validates: never run) or
    ``cancelled`` (``queue.cancel(id)`` while it ran: its outcome is dropped). Whether a
    failure is retried is the queue's decision, seen in ``on_retry``/``on_dead``;
    ``retryable`` is what the worker reports.
    """

    outcome: Literal["succeeded", "failed", "rejected", "cancelled"]
    error_type: str | None = None
    error_message: str | None = None
    retryable: bool = False
    exception: BaseException | None = None


@dataclass(frozen=True)
class TaskEnd:
    """A task's attempt ended without success, as the queue decided (queue side).

    ``reason`` is why the task is dead (``max_attempts``, ``non_retryable``,
    ``timeout``, ``worker_lost``, ...) for ``on_dead``, and for ``on_retry`` what ended
    the attempt (``failed``, ``timeout``, ``worker_lost``).
    """

    task_id: str
    task_name: str
    attempts: int
    reason: str
    error_type: str | None
    error_message: str | None
    headers: Mapping[str, str]
    #: for ``on_retry``: when the next attempt is due (epoch seconds)
    due_at: float | None = None


@dataclass(frozen=True)
class WorkerStart:
    """A worker actor of a pool."""

    worker: str
    pool: str
    queue: str
    pid: int


class Middleware:
    """Base class of middleware: every hook is a no-op; override what you need."""

    def before_enqueue(self, message: Message) -> None:
        """Producer: before the task is sent (may change ``message.headers``)."""

    def after_enqueue(self, message: Message, error: BaseException | None) -> None:
        """Producer: the enqueue was acknowledged (``error`` None) or refused."""

    def worker_started(self, worker: WorkerStart) -> None:
        """Worker: ready to claim."""

    def worker_stopping(self, worker: WorkerStart) -> None:
        """Worker: drained, about to exit."""

    def before_attempt(self, attempt: Attempt) -> None:
        """Worker: an attempt is about to run (in its thread, inside ``current()``)."""

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        """Worker: the attempt returned or raised."""

    def on_retry(self, end: TaskEnd) -> None:
        """Queue actor: a retry is scheduled (durably)."""

    def on_dead(self, end: TaskEnd) -> None:
        """Queue actor: the task is dead (durably)."""


HOOKS = ("before_enqueue", "after_enqueue", "worker_started", "worker_stopping",
         "before_attempt", "after_attempt", "on_retry", "on_dead")
#: at most one ERROR line per (middleware, hook) per this many seconds
_REPORT_EVERY_S = 60.0


class Hooks:
    """The hooks of a list of middleware, ready to call: per hook only the middleware
    that override it (so a hook nobody implements costs one empty-tuple check)."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware = tuple(check_middleware(middleware))
        self._last_report: dict[tuple[str, str], float] = {}
        for hook in HOOKS:
            fns = [getattr(m, hook) for m in self.middleware
                   if getattr(type(m), hook) is not getattr(Middleware, hook)]
            if hook.startswith("after_") or hook == "worker_stopping":
                fns.reverse()
            setattr(self, "_" + hook, tuple(fns))
        #: some middleware hooks attempts (else the attempt pipeline builds nothing)
        self.attempts = self.wants("before_attempt") or self.wants("after_attempt")
        #: some middleware hooks enqueues (else an enqueue builds no messages)
        self.enqueues = self.wants("before_enqueue") or self.wants("after_enqueue")

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def wants(self, hook: str) -> bool:
        """Whether any middleware implements ``hook``."""
        return bool(getattr(self, "_" + hook))

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on each middleware that has it; a raise is logged, not passed on."""
        for fn in getattr(self, "_" + hook):
            try:
                fn(*args)
            except Exception as err:  # a middleware's bug never changes a task's fate
                self._report(fn, hook, err)

    def _report(self, fn: Callable[..., Any], hook: str, err: Exception) -> None:
        owner = type(getattr(fn, "__self__", fn)).__name__
        key = (owner, hook)
        now = time.monotonic()
        if now - self._last_report.get(key, -_REPORT_EVERY_S) < _REPORT_EVERY_S:
            return
        self._last_report[key] = now
        # Runs in the driver too: a traceback without locals (they hold payloads).
        logger.error(
            "middleware {}.{} raised {}: {} (ignored; the task goes on)\n{}", owner, hook,
            type(err).__name__, err, traceback_of(err), action="middleware_failed",
            middleware=owner, hook=hook)


def check_middleware(middleware: object) -> list[Middleware]:
    """``middleware`` as a list of :class:`Middleware` instances, else a typed error."""
    from rayqueue.errors import InvalidArgumentTypeError

    if isinstance(middleware, Middleware) or not isinstance(middleware, (list, tuple)):
        raise InvalidArgumentTypeError(
            "middleware", f"expected a list of Middleware instances, got "
            f"{type(middleware).__name__}")
    for m in middleware:
        if not isinstance(m, Middleware):
            raise InvalidArgumentTypeError(
                "middleware", f"expected Middleware instances, got {type(m).__name__}"
                + (" (a class: pass an instance)" if isinstance(m, type) else ""))
    return list(middleware)


NO_HOOKS = Hooks()
_WORKER_HOOKS = NO_HOOKS


def install_worker_hooks(hooks: Hooks) -> None:
    """Set this worker process's hooks (one worker actor per process)."""
    global _WORKER_HOOKS
    _WORKER_HOOKS = hooks


def worker_hooks() -> Hooks:
    """This worker process's hooks (empty outside a worker)."""
    return _WORKER_HOOKS
