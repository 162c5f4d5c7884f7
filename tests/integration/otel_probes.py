"""Tracing set-up and task types for the OpenTelemetry test: every process (driver,
queue actor, worker) keeps its finished spans in memory, and a task reads the
worker's."""

from __future__ import annotations

from typing import Any, ClassVar

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rayqueue import Task

EXPORTER = InMemorySpanExporter()


def setup_tracing() -> None:
    """The ``configure`` of TracingMiddleware: an in-memory exporter in this process."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


def finished_spans() -> list[dict[str, Any]]:
    """This process's finished spans, as plain data."""
    out = []
    for span in EXPORTER.get_finished_spans():
        ctx = span.get_span_context()
        assert ctx is not None
        out.append({"name": span.name, "trace": f"{ctx.trace_id:032x}",
                    "span": f"{ctx.span_id:016x}",
                    "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name})
    return out


class Traced(Task[str]):
    """Opens a span of its own inside the attempt."""

    task_name: ClassVar[str] = "otel.traced"

    def execute(self) -> str:
        with trace.get_tracer("test").start_as_current_span("charge card"):
            return "ok"


class WorkerSpans(Task[list[dict[str, Any]]]):
    """Returns the spans this worker finished so far."""

    task_name: ClassVar[str] = "otel.spans"

    def execute(self) -> list[dict[str, Any]]:
        return finished_spans()
