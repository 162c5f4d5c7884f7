"""Leases and outcomes: what a claim hands out and what a worker reports back."""

from __future__ import annotations

from dataclasses import dataclass

from rayqueue.core.record import ErrorInfo
from rayqueue.core.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed task: run it, then report with ``(task_id, token)``."""

    task_id: str
    token: int
    task_name: str
    payload: str
    attempt: int
    priority: int
    pool: str
    expires_at: float
    timeout: float | None
    retry: RetryPolicy
    #: a worker died under this task before: run it alone
    suspect: bool = False
    #: lower-priority work waits until the worker says this one started (see
    #: QueueCore.claim); only a worker that asked for it gets this
    confirm: bool = False
    #: the task's headers (see NewTask.headers)
    headers: dict[str, str] | None = None
    #: a workflow step's input: (payload field, JSON text of the parents' results),
    #: which the worker puts into the payload before it validates the task
    feed: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt as a worker reports it.

    ``reason`` names why a non-retryable failure ends the task (e.g. ``unknown_task``,
    ``schema_mismatch``); it defaults to ``non_retryable``.
    """

    error: ErrorInfo
    retryable: bool = True
    retry_delay: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt: a result (JSON text) or a failure."""

    task_id: str
    token: int
    result: str | None = None
    failure: Failure | None = None
