"""MetricsAggregate: counters, sliding-window rates and histograms of task lifecycle events.

Pure: events and ``now`` come in as arguments. The events are the typed messages of
:mod:`rayqueue.protocol` (``Enqueued``, ``Started``, ``Finished``, ``FailedAttempt``,
``Depth``, ``JournalHealth``, ``Calls``, ``Workers``), sent in batches by the queue
and pool actors. A sharded queue's depth is summed over its shards, and its journal
is failing if any shard's is.
"""

from __future__ import annotations

import bisect
from collections import deque

from rayqueue.core.shards import sum_counts, sum_ready
from rayqueue.info import FailureInfo, MetricsSnapshot, PoolInfo, WorkerInfo
from rayqueue.protocol import (
    Calls,
    Depth,
    Enqueued,
    Event,
    FailedAttempt,
    Finished,
    JournalHealth,
    Started,
    Workers,
)

#: Histogram bucket upper bounds in seconds (the last bucket is everything above).
BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
#: Worker-count samples kept for the "workers over time" view.
HISTORY = 2_000
#: Recent failed attempts kept for dashboards.
RECENT_FAILURES = 50


class MetricsAggregate:
    """The aggregation behind the metrics actor."""

    def __init__(self, queue: str, window_s: float = 60.0) -> None:
        self.queue = queue
        self.window_s = window_s
        self.counts: dict[str, dict[str, int]] = {}
        self.enqueued: dict[str, int] = {}
        self.window: deque[tuple[float, str, int]] = deque()
        self.wait_counts = [0] * (len(BUCKETS) + 1)
        self.run_counts = [0] * (len(BUCKETS) + 1)
        self.wait_sum = 0.0
        self.run_sum = 0.0
        self.depth: dict[str, int] = {}
        self.ready: dict[str, dict[int, int]] = {}
        self._shard_depth: dict[int, tuple[dict[str, int], dict[str, dict[int, int]]]] = {}
        self.pools: list[PoolInfo] = []
        self.workers: list[WorkerInfo] = []
        self.history: deque[tuple[float, str, int]] = deque(maxlen=HISTORY)
        self.failures: deque[FailureInfo] = deque(maxlen=RECENT_FAILURES)
        #: per shard: (journal commits failing, because the disk is full)
        self.journal: dict[int, tuple[bool, bool]] = {}
        #: calls and the tasks they carried, by kind (how well batching works)
        self.calls: dict[str, list[int]] = {}

    def add(self, event: Event, now: float) -> None:
        """Fold one event in."""
        if isinstance(event, Finished):
            by_outcome = self.counts.setdefault(event.task_name, {})
            by_outcome[event.outcome] = by_outcome.get(event.outcome, 0) + event.n
            self.window.append((now, event.outcome, event.n))
            run_counts = self.run_counts
            for run_s in event.runs:
                run_counts[bisect.bisect_left(BUCKETS, run_s)] += 1
            self.run_sum += sum(event.runs)
        elif isinstance(event, Started):
            wait_counts = self.wait_counts
            for wait_s in event.waits:
                wait_counts[bisect.bisect_left(BUCKETS, wait_s)] += 1
            self.wait_sum += sum(event.waits)
        elif isinstance(event, Enqueued):
            self.enqueued[event.task_name] = self.enqueued.get(event.task_name, 0) + event.n
        elif isinstance(event, Depth):
            self._shard_depth[event.shard] = (event.by_state, event.ready_by_priority)
            self._sum_depth()
        elif isinstance(event, FailedAttempt):
            self.failures.append(FailureInfo(
                at=event.at, task_id=event.task_id, task=event.task_name,
                outcome=event.outcome, state=event.state, error_type=event.error_type,
                message=event.message, attempt=event.attempt))
        elif isinstance(event, JournalHealth):
            self.journal[event.shard] = (event.failing, event.full)
        elif isinstance(event, Calls):
            counts = self.calls.setdefault(event.kind, [0, 0])
            counts[0] += event.calls
            counts[1] += event.items
        elif isinstance(event, Workers):
            self.pools, self.workers = list(event.pools), list(event.workers)
            for pool in self.pools:
                last = next((h for h in reversed(self.history) if h[1] == pool.name), None)
                if last is None or last[2] != pool.workers:
                    self.history.append((now, pool.name, pool.workers))
        self._trim(now)

    def _sum_depth(self) -> None:
        parts = self._shard_depth.values()
        self.depth = sum_counts(p[0] for p in parts)
        self.ready = sum_ready(p[1] for p in parts)

    def _trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self.window and self.window[0][0] < cutoff:
            self.window.popleft()

    def ready_by_priority_all(self) -> dict[str, dict[int, int]]:
        """Ready tasks by pool and priority, as last reported."""
        return self.ready

    def workers_by_state(self) -> dict[str, dict[str, int]]:
        """Worker counts by pool and state (every pool present, zero included)."""
        out: dict[str, dict[str, int]] = {
            p.name: {"starting": 0, "running": 0, "draining": 0} for p in self.pools
        }
        for w in self.workers:
            out.setdefault(w.pool, {})[w.state] = out.get(w.pool, {}).get(w.state, 0) + 1
        return out

    def snapshot(self, now: float) -> MetricsSnapshot:
        """A structured copy of everything, with rates over the window."""
        self._trim(now)
        per: dict[str, int] = {}
        for _, outcome, n in self.window:
            per[outcome] = per.get(outcome, 0) + n
        finished = per.get("succeeded", 0) + per.get("retried", 0) + per.get("dead", 0)
        return MetricsSnapshot(
            queue=self.queue,
            taken_at=now,
            counts={k: dict(v) for k, v in self.counts.items()},
            enqueued=dict(self.enqueued),
            rates={k: v / self.window_s for k, v in per.items()},
            window_s=self.window_s,
            success_ratio=per.get("succeeded", 0) / finished if finished else None,
            wait_buckets=list(BUCKETS),
            wait_counts=list(self.wait_counts),
            run_counts=list(self.run_counts),
            wait_sum=self.wait_sum,
            run_sum=self.run_sum,
            depth=dict(self.depth),
            ready_by_priority={p: dict(v) for p, v in self.ready.items()},
            pools=list(self.pools),
            workers=list(self.workers),
            worker_history=list(self.history),
            recent_failures=list(reversed(self.failures)),
            calls={k: (v[0], v[1]) for k, v in self.calls.items()},
            journal_failing=any(failing for failing, _ in self.journal.values()),
            storage_full=any(full for _, full in self.journal.values()),
        )
