"""OpenTelemetry across a real Ray: the producer's enqueue span and the worker's
attempt span (and the task's own span inside it) join into one trace."""

from __future__ import annotations

from typing import Any

import pytest

from rayqueue import PoolConfig, TaskQueue
from rayqueue.otel import TracingMiddleware
from tests.integration.otel_probes import Traced, WorkerSpans, finished_spans, setup_tracing

pytestmark = pytest.mark.integration


def test_driver_and_worker_spans_join_into_one_trace(make_queue: Any) -> None:
    q: TaskQueue[Any] = make_queue(
        middleware=[TracingMiddleware(configure=setup_tracing)],
        pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    handle = q.enqueue(Traced())
    assert handle.result(timeout=60) == "ok"
    worker = q.enqueue(WorkerSpans()).result(timeout=60)

    [enqueue] = [s for s in finished_spans()
                 if s["attributes"].get("rayqueue.task_id") == handle.id]
    assert enqueue["name"] == "enqueue otel.traced"
    assert "traceparent" in q.get(handle.id).headers
    [run] = [s for s in worker if s["attributes"].get("rayqueue.task_id") == handle.id]
    [body] = [s for s in worker if s["name"] == "charge card"]
    assert run["name"] == "run otel.traced"
    assert run["attributes"]["rayqueue.attempt"] == 1
    assert run["attributes"]["rayqueue.outcome"] == "succeeded"
    # One trace: driver -> worker attempt -> the task's own span.
    assert enqueue["trace"] == run["trace"] == body["trace"]
    assert run["parent"] == enqueue["span"]
    assert body["parent"] == run["span"]
