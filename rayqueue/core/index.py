"""Indexes of the queue core: ready tasks by priority (with aging) and tasks by time.

Both are heaps with lazy deletion: removing an entry only forgets its reference, and a
stale entry is dropped when it reaches the top. That keeps every operation O(log n).
"""

from __future__ import annotations

import heapq
import itertools
import math


class ReadyIndex:
    """Ready tasks of one pool, best first.

    Order: higher priority first, then earlier due time, then enqueue order. With
    ``aging_rate`` > 0 a task gains ``aging_rate`` priority levels for each second it
    has been due, so low priorities cannot starve. The effective priority at time t is
    ``priority + rate * (t - due_at)``; comparing two tasks, t cancels out, so the order
    is fixed by the static key ``rate * due_at - priority`` and the heap stays valid as
    time passes.
    """

    def __init__(self, aging_rate: float = 0.0) -> None:
        if isinstance(aging_rate, bool) or not math.isfinite(aging_rate) or aging_rate < 0:
            raise ValueError(f"aging_rate must be a finite number >= 0, got {aging_rate!r}")
        self._rate = aging_rate
        self._heap: list[tuple[float, float, int, int, str]] = []
        self._live: dict[str, int] = {}
        self._refs = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live

    def push(self, task_id: str, priority: int, due_at: float, seq: int) -> None:
        """Add a task (replacing any earlier entry of the same id)."""
        ref = next(self._refs)
        self._live[task_id] = ref
        key = self._rate * due_at - priority if self._rate else float(-priority)
        heapq.heappush(self._heap, (key, due_at, seq, ref, task_id))

    def discard(self, task_id: str) -> None:
        """Forget a task, if present."""
        self._live.pop(task_id, None)

    def _clean_top(self) -> None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][4]) != heap[0][3]:
            heapq.heappop(heap)

    def peek(self) -> str | None:
        """The id of the best task, without removing it."""
        self._clean_top()
        return self._heap[0][4] if self._heap else None

    def top_rank(self) -> float | None:
        """The best task's rank (lower goes first; None when empty).

        Ranks of indexes with the same ``aging_rate`` compare across indexes (and across
        the shards of a queue): the task with the lowest rank anywhere is the one a
        single queue would hand out first.
        """
        self._clean_top()
        return self._heap[0][0] if self._heap else None

    def pop(self) -> str | None:
        """Remove and return the id of the best task."""
        self._clean_top()
        if not self._heap:
            return None
        task_id = heapq.heappop(self._heap)[4]
        del self._live[task_id]
        return task_id


class TimerIndex:
    """Ids keyed by a time: tasks due later, lease expiries, deadlines, purges."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, tuple[float, int]] = {}
        self._refs = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, key: str, when: float) -> None:
        """Arm (or re-arm) ``key`` for time ``when``."""
        ref = next(self._refs)
        self._live[key] = (when, ref)
        heapq.heappush(self._heap, (when, ref, key))

    def discard(self, key: str) -> None:
        """Disarm ``key``, if armed."""
        self._live.pop(key, None)

    def _clean_top(self) -> None:
        heap, live = self._heap, self._live
        while heap:
            _, ref, key = heap[0]
            entry = live.get(key)
            if entry is not None and entry[1] == ref:
                return
            heapq.heappop(heap)

    def next_time(self) -> float | None:
        """The earliest armed time."""
        self._clean_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """Disarm and return every key due at or before ``now``, earliest first."""
        due: list[str] = []
        while True:
            self._clean_top()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            due.append(key)
