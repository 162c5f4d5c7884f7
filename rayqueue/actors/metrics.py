"""MetricsActor: aggregates lifecycle events and exports them to Ray's Prometheus endpoint.

Events arrive in batches from the queue and pool actors (never one call per task). The
aggregation itself lives in :class:`rayqueue.aggregate.MetricsAggregate` (pure);
this shell adds the clock and the ``ray.util.metrics`` exporters.
"""

from __future__ import annotations

import time

from ray.util import metrics as ray_metrics

from rayqueue.aggregate import BUCKETS, MetricsAggregate
from rayqueue.info import MetricsSnapshot
from rayqueue.logging import configure
from rayqueue.protocol import (
    Calls,
    Depth,
    Enqueued,
    Event,
    Finished,
    JournalHealth,
    Started,
    Workers,
)


class MetricsActor:
    """Counts, rates, histograms, depth and the worker table of one queue."""

    def __init__(self, queue: str, window_s: float = 60.0) -> None:
        configure("metrics")
        self._queue = queue
        self._agg = MetricsAggregate(queue, window_s)
        tags = ("queue", "task", "outcome")
        self._tasks = ray_metrics.Counter(
            "rayqueue_tasks_finished", "Attempts finished, by task type and outcome.", tags)
        self._enqueued = ray_metrics.Counter(
            "rayqueue_tasks_enqueued", "Tasks enqueued, by task type.", ("queue", "task"))
        self._wait = ray_metrics.Histogram(
            "rayqueue_task_wait_seconds", "Time from due to start.", BUCKETS, ("queue", "task"))
        self._run = ray_metrics.Histogram(
            "rayqueue_task_run_seconds", "Time from start to end of an attempt.", BUCKETS,
            ("queue", "task"))
        self._depth = ray_metrics.Gauge(
            "rayqueue_queue_depth", "Tasks in the queue, by state.", ("queue", "state"))
        self._ready = ray_metrics.Gauge(
            "rayqueue_ready_tasks", "Ready tasks, by pool and priority.",
            ("queue", "pool", "priority"))
        self._ready_keys: set[tuple[str, str]] = set()
        self._workers = ray_metrics.Gauge(
            "rayqueue_workers", "Worker actors, by pool, node and state (busy, idle, "
            "starting, draining).", ("queue", "pool", "node", "state"))
        self._worker_keys: set[tuple[str, str, str]] = set()
        self._journal_failing = ray_metrics.Gauge(
            "rayqueue_journal_failing", "1 while the journal's commits fail (changes are "
            "refused until one succeeds), else 0.", ("queue", "shard"))
        self._storage_full = ray_metrics.Gauge(
            "rayqueue_storage_full", "1 while the journal's commits fail because its disk "
            "(or size cap) is full, else 0.", ("queue", "shard"))
        self._calls = ray_metrics.Counter(
            "rayqueue_queue_calls", "Calls the queue actor served, by kind (enqueue, "
            "claim, report).", ("queue", "kind"))
        self._call_tasks = ray_metrics.Counter(
            "rayqueue_queue_call_tasks", "Tasks those calls carried, by kind: divided by "
            "rayqueue_queue_calls, the batch size.", ("queue", "kind"))

    def __repr__(self) -> str:
        return f"Metrics({self._queue})"

    async def record(self, events: list[Event]) -> None:
        """Take a batch of events (``rayqueue.protocol``) and export them."""
        now = time.time()
        q = self._queue
        for event in events:
            self._agg.add(event, now)
            if isinstance(event, Finished):
                self._tasks.inc(event.n, {"queue": q, "task": event.task_name,
                                          "outcome": event.outcome})
                tags = {"queue": q, "task": event.task_name}
                for run_s in event.runs:
                    self._run.observe(run_s, tags)
            elif isinstance(event, Started):
                tags = {"queue": q, "task": event.task_name}
                for wait_s in event.waits:
                    self._wait.observe(wait_s, tags)
            elif isinstance(event, Enqueued):
                self._enqueued.inc(event.n, {"queue": q, "task": event.task_name})
            elif isinstance(event, Depth):  # summed over shards by the aggregate
                for state, n in self._agg.depth.items():
                    self._depth.set(n, {"queue": q, "state": state})
                now_ready = {(pool, str(prio)): n
                             for pool, by_prio in self._agg.ready_by_priority_all().items()
                             for prio, n in by_prio.items()}
                # A priority whose tasks are all gone must read 0, not its last count.
                for key in self._ready_keys - now_ready.keys():
                    now_ready[key] = 0
                for (pool, prio), n in now_ready.items():
                    self._ready.set(n, {"queue": q, "pool": pool, "priority": prio})
                self._ready_keys = {k for k, n in now_ready.items() if n}
            elif isinstance(event, JournalHealth):
                tags = {"queue": q, "shard": str(event.shard)}
                self._journal_failing.set(int(event.failing), tags)
                self._storage_full.set(int(event.full), tags)
            elif isinstance(event, Calls):
                self._calls.inc(event.calls, {"queue": q, "kind": event.kind})
                if event.items:
                    self._call_tasks.inc(event.items, {"queue": q, "kind": event.kind})
            elif isinstance(event, Workers):
                now_workers: dict[tuple[str, str, str], int] = {}
                for w in event.workers:
                    wkey = (str(w.pool), (w.node_id or "unknown")[:12], str(w.activity))
                    now_workers[wkey] = now_workers.get(wkey, 0) + 1
                for gone in self._worker_keys - now_workers.keys():
                    now_workers[gone] = 0  # gone: read 0, not the last count
                for (pool, node, state), n in now_workers.items():
                    self._workers.set(n, {"queue": q, "pool": pool, "node": node,
                                          "state": state})
                self._worker_keys = {k for k, n in now_workers.items() if n}

    async def snapshot(self) -> MetricsSnapshot:
        """Everything aggregated so far."""
        return self._agg.snapshot(time.time())
