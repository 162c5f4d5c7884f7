"""OpenTelemetry tracing as middleware (``pip install 'rayqueue[otel]'``).

One trace per task, across processes::

    enqueue shop.payment      (producer, PRODUCER span; a child of whatever span is
      │                        current where enqueue() is called)
      ├─ run shop.payment #1  (worker, CONSUMER span, current while execute() runs, so
      │    └─ ...              the task's own spans are its children)
      ├─ retry shop.payment   (queue actor: an attempt ended and a retry is scheduled)
      └─ run shop.payment #2

The producer's span context travels in the task's headers (W3C ``traceparent``, through
OpenTelemetry's configured propagator), so it survives retries, worker loss and queue
restarts with the task. Usage::

    import rayqueue
    from rayqueue.otel import TracingMiddleware

    q = rayqueue.init("shop", middleware=[TracingMiddleware(configure=setup_tracing)])

``configure`` (optional) is a function importable by every process (a module-level
function of your code) that installs your tracer provider and exporter; it is called
once per process before the first span, in the producer, the queue actor and each
worker. Without it, the global provider of each process is used (no-op unless set).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from rayqueue.middleware import Attempt, AttemptResult, Message, Middleware, TaskEnd

__all__ = ["TracingMiddleware"]

_configured: set[Any] = set()
_configure_lock = threading.Lock()


class TracingMiddleware(Middleware):
    """Spans for enqueue (producer), each attempt (worker), retries and deaths (queue),
    joined into one trace per task through the task's headers."""

    def __init__(self, configure: Callable[[], None] | None = None,
                 tracer_name: str = "rayqueue") -> None:
        self.configure = configure
        self.tracer_name = tracer_name

    def _tracer(self) -> trace.Tracer:
        if self.configure is not None and self.configure not in _configured:
            with _configure_lock:
                if self.configure not in _configured:
                    self.configure()
                    _configured.add(self.configure)
        return trace.get_tracer(self.tracer_name)

    # ------------------------------------------------------------ producer
    def before_enqueue(self, message: Message) -> None:
        span = self._tracer().start_span(
            f"enqueue {message.task_name}", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "rayqueue", "messaging.operation": "publish",
                        "rayqueue.task_id": message.task_id,
                        "rayqueue.task_name": message.task_name,
                        "rayqueue.priority": message.priority})
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        message.headers.update(carrier)
        message.state["otel_span"] = span

    def after_enqueue(self, message: Message, error: BaseException | None) -> None:
        span = message.state.pop("otel_span", None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # -------------------------------------------------------------- worker
    def before_attempt(self, attempt: Attempt) -> None:
        parent = propagate.extract(dict(attempt.headers))
        span = self._tracer().start_span(
            f"run {attempt.task_name}", context=parent, kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "rayqueue", "messaging.operation": "process",
                        "rayqueue.task_id": attempt.task_id,
                        "rayqueue.task_name": attempt.task_name,
                        "rayqueue.attempt": attempt.attempt,
                        "rayqueue.worker": attempt.worker})
        attempt.state["otel_span"] = span
        # The task's own spans are children of this one.
        attempt.state["otel_token"] = otel_context.attach(trace.set_span_in_context(span))

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        span = attempt.state.pop("otel_span", None)
        token = attempt.state.pop("otel_token", None)
        if token is not None:
            otel_context.detach(token)
        if span is None:
            return
        span.set_attribute("rayqueue.outcome", result.outcome)
        if result.outcome != "succeeded":
            if result.exception is not None:
                span.record_exception(result.exception)
            span.set_status(Status(StatusCode.ERROR, f"{result.error_type}: "
                                   f"{(result.error_message or '')[:200]}"))
        span.end()

    # --------------------------------------------------------------- queue
    def on_retry(self, end: TaskEnd) -> None:
        self._mark("retry", end)

    def on_dead(self, end: TaskEnd) -> None:
        self._mark("dead", end)

    def _mark(self, what: str, end: TaskEnd) -> None:
        span = self._tracer().start_span(
            f"{what} {end.task_name}", context=propagate.extract(dict(end.headers)),
            attributes={"rayqueue.task_id": end.task_id, "rayqueue.task_name": end.task_name,
                        "rayqueue.attempts": end.attempts, "rayqueue.reason": end.reason})
        if what == "dead":
            span.set_status(Status(StatusCode.ERROR, end.reason))
        span.end()
