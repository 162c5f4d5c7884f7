"""MetricsActor: aggregates lifecycle events and exports them to Ray's Prometheus endpoint.

One per cluster (named :data:`rayqueue.config.METRICS_ACTOR`), shared by every queue
on it: each queue's events are aggregated apart, keyed by its name, and every series it
exports carries a ``queue`` tag, as a cluster's one exporter would. (One per queue cost
each queue a process, about 100 MB and 0.8 s of CPU to start, to run a few microseconds
of work per task.) Events arrive in batches from the queue and pool actors (never one
call per task). The aggregation itself lives in
:class:`rayqueue.aggregate.MetricsAggregate` (pure); this shell adds the clock and the
``ray.util.metrics`` exporters.
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


class _Queue:
    """What the actor keeps for one queue: its aggregate, and the gauge keys it set."""

    def __init__(self, queue: str, window_s: float) -> None:
        self.agg = MetricsAggregate(queue, window_s)
        self.ready_keys: set[tuple[str, str]] = set()
        self.worker_keys: set[tuple[str, str, str]] = set()
        self.shards: set[str] = set()


class MetricsActor:
    """Counts, rates, histograms, depth and the worker table of every queue, by name."""

    def __init__(self, window_s: float = 60.0) -> None:
        configure("metrics")
        self._window_s = window_s
        self._queues: dict[str, _Queue] = {}
        #: queues shut down (or lost): a batch still on its way from one of their actors
        #: must not bring back what ``forget`` dropped, gauges above all
        self._gone: set[str] = set()
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
        self._workers = ray_metrics.Gauge(
            "rayqueue_workers", "Worker actors, by pool, node and state (busy, idle, "
            "starting, draining).", ("queue", "pool", "node", "state"))
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
        return "Metrics"

    def _of(self, queue: str) -> _Queue:
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[queue] = _Queue(queue, self._window_s)
        return found

    async def record(self, q: str, events: list[Event]) -> None:
        """Take a batch of queue ``q``'s events (``rayqueue.protocol``); export them."""
        if q in self._gone:
            return
        now = time.time()
        mine = self._of(q)
        agg = mine.agg
        for event in events:
            agg.add(event, now)
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
                for state, n in agg.depth.items():
                    self._depth.set(n, {"queue": q, "state": state})
                now_ready = {(pool, str(prio)): n
                             for pool, by_prio in agg.ready_by_priority_all().items()
                             for prio, n in by_prio.items()}
                # A priority whose tasks are all gone must read 0, not its last count.
                for key in mine.ready_keys - now_ready.keys():
                    now_ready[key] = 0
                for (pool, prio), n in now_ready.items():
                    self._ready.set(n, {"queue": q, "pool": pool, "priority": prio})
                mine.ready_keys = {k for k, n in now_ready.items() if n}
            elif isinstance(event, JournalHealth):
                tags = {"queue": q, "shard": str(event.shard)}
                mine.shards.add(str(event.shard))
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
                for gone in mine.worker_keys - now_workers.keys():
                    now_workers[gone] = 0  # gone: read 0, not the last count
                for (pool, node, state), n in now_workers.items():
                    self._workers.set(n, {"queue": q, "pool": pool, "node": node,
                                          "state": state})
                mine.worker_keys = {k for k, n in now_workers.items() if n}

    async def snapshot(self, q: str) -> MetricsSnapshot:
        """Everything aggregated so far for queue ``q`` (empty for a queue never seen, or
        forgotten: a read keeps nothing for it)."""
        mine = self._queues.get(q) or _Queue(q, self._window_s)
        return mine.agg.snapshot(time.time())

    async def forget(self, q: str) -> None:
        """Drop queue ``q`` (shut down, or lost and started afresh from its journal): its
        aggregate goes, and its gauges read 0 rather than their last values. Its
        counters stay as Prometheus counters do."""
        self._gone.add(q)
        mine = self._queues.pop(q, None)
        if mine is None:
            return
        for state in mine.agg.depth:
            self._depth.set(0, {"queue": q, "state": state})
        for pool, prio in mine.ready_keys:
            self._ready.set(0, {"queue": q, "pool": pool, "priority": prio})
        for pool, node, state in mine.worker_keys:
            self._workers.set(0, {"queue": q, "pool": pool, "node": node, "state": state})
        for shard in mine.shards:
            self._journal_failing.set(0, {"queue": q, "shard": shard})
            self._storage_full.set(0, {"queue": q, "shard": shard})

    async def open(self, q: str) -> None:
        """Queue ``q`` starts (``init``): its events count again if it was forgotten."""
        self._gone.discard(q)

    async def queues(self) -> list[str]:
        """The queues it holds an aggregate for."""
        return sorted(self._queues)
