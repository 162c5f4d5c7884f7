"""MetricsAggregate: counters, sliding-window rates and histograms of task lifecycle events.

Pure: events and ``now`` come in as arguments. Events are tuples, cheap to batch:

- ``("enqueued", task_name, n)``
- ``("started", task_name, wait_seconds)``
- ``("outcome", task_name, outcome, run_seconds | None)`` with outcome ``succeeded``,
  ``retried``, ``dead``, ``lost`` or ``timed_out``
- ``("depth", by_state, ready_by_priority[, shard])``: one shard's counts (a sharded
  queue's are summed over its shards)
- ``("workers", [PoolInfo], [WorkerInfo])``
- ``("failure", at, task_id, task_name, outcome, state, error_type, message, attempt)``
- ``("journal", shard, failing, full)``: whether one shard's journal commits fail, and
  whether because its disk is full (a sharded queue's is failing if any shard's is)
- ``("calls", kind, calls, items)``: actor calls a queue actor served (``enqueue``,
  ``claim``, ``report``) and the tasks they carried, since its last event
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from rayqueue.core.shards import sum_counts, sum_ready
from rayqueue.info import FailureInfo, MetricsSnapshot, PoolInfo, WorkerInfo

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
        self.window: deque[tuple[float, str]] = deque()
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

    def add(self, event: tuple[Any, ...], now: float) -> None:
        """Fold one event in."""
        kind = event[0]
        if kind == "enqueued":
            self.enqueued[event[1]] = self.enqueued.get(event[1], 0) + event[2]
        elif kind == "started":
            self.wait_counts[bisect.bisect_left(BUCKETS, event[2])] += 1
            self.wait_sum += event[2]
        elif kind == "outcome":
            by_outcome = self.counts.setdefault(event[1], {})
            by_outcome[event[2]] = by_outcome.get(event[2], 0) + 1
            self.window.append((now, event[2]))
            if event[3] is not None:
                self.run_counts[bisect.bisect_left(BUCKETS, event[3])] += 1
                self.run_sum += event[3]
        elif kind == "depth":
            shard = event[3] if len(event) > 3 else 0
            self._shard_depth[shard] = (event[1], event[2])
            self._sum_depth()
        elif kind == "failure":
            self.failures.append(FailureInfo(
                at=event[1], task_id=event[2], task=event[3], outcome=event[4],
                state=event[5], error_type=event[6], message=event[7], attempt=event[8]))
        elif kind == "journal":
            self.journal[event[1]] = (bool(event[2]), bool(event[3]))
        elif kind == "calls":
            counts = self.calls.setdefault(event[1], [0, 0])
            counts[0] += event[2]
            counts[1] += event[3]
        elif kind == "workers":
            self.pools, self.workers = list(event[1]), list(event[2])
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
        for _, outcome in self.window:
            per[outcome] = per.get(outcome, 0) + 1
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
