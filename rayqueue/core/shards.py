"""Sharding rules: which shard owns a task, and how shard answers combine.

A sharded queue is N queue actors, each the whole owner (core, journal, timers) of the
tasks whose id hashes to it. Nothing here is global state: every rule is a pure
function of task ids and of the shards' own answers, so producers, workers and readers
route and merge without asking anyone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rayqueue.core.stats import QueueStats
from rayqueue.errors import InvalidArgumentError, InvalidArgumentTypeError

T = TypeVar("T")
K = TypeVar("K")

#: Longest a worker leaves a failing shard alone before trying it again.
MAX_BACKOFF_S = 1.0
#: Most shards a queue may have (each is an actor with its own journal file).
MAX_SHARDS = 256


def check_shards(n: object) -> int:
    """``n`` as a shard count, or an :class:`InvalidArgumentError` (a ValueError) that
    says what is allowed."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidArgumentTypeError(
            "shards", f"must be an int from 1 to {MAX_SHARDS}, got {type(n).__name__}")
    if not 1 <= n <= MAX_SHARDS:
        raise InvalidArgumentError("shards", f"must be an int from 1 to {MAX_SHARDS}, got {n!r}")
    return n


def shard_key(task_id: str) -> str:
    """The part of an id that routes it: a schedule's runs (``<schedule>@<ms>``) live
    in the shard of their schedule, which creates them."""
    return task_id.split("@", 1)[0]


def shard_of(task_id: str, n: int) -> int:
    """The shard owning ``task_id`` among ``n`` (stable across processes and versions:
    CRC-32 of the id, not Python's salted ``hash``)."""
    if n == 1:
        return 0
    return zlib.crc32(shard_key(task_id).encode()) % n


def split(items: Sequence[T], ids: Sequence[str], n: int) -> dict[int, list[tuple[int, T]]]:
    """Group ``items`` by the shard of their ``ids``, each with its position, so answers
    can be put back in the callers' order with :func:`unsplit`."""
    out: dict[int, list[tuple[int, T]]] = {}
    for pos, (item, task_id) in enumerate(zip(items, ids, strict=True)):
        out.setdefault(shard_of(task_id, n), []).append((pos, item))
    return out


def unsplit(size: int, parts: Iterable[Sequence[tuple[int, Any]]],
            answers: Iterable[Sequence[T]]) -> list[T]:
    """Answers per part of :func:`split` (one value per item) back in one list of
    ``size``, in the callers' order."""
    out: list[Any] = [None] * size
    for part, values in zip(parts, answers, strict=True):
        for (pos, _), value in zip(part, values, strict=True):
            out[pos] = value
    return out


def sum_counts(parts: Iterable[dict[K, int]]) -> dict[K, int]:
    """Counts added key by key."""
    out: dict[K, int] = {}
    for part in parts:
        for key, n in part.items():
            out[key] = out.get(key, 0) + n
    return out


def sum_ready(parts: Iterable[dict[str, dict[int, int]]]) -> dict[str, dict[int, int]]:
    """Ready counts by pool and priority, added."""
    by_pool: dict[str, list[dict[int, int]]] = {}
    for part in parts:
        for pool, by_prio in part.items():
            by_pool.setdefault(pool, []).append(by_prio)
    return {pool: sum_counts(prios) for pool, prios in by_pool.items()}


def merge_stats(parts: Sequence[QueueStats]) -> QueueStats:
    """One queue's stats from its shards' stats."""
    if len(parts) == 1:
        return parts[0]
    caps = [p.max_size for p in parts]
    return QueueStats(
        by_state=sum_counts(p.by_state for p in parts),
        ready_by_priority=sum_ready(p.ready_by_priority for p in parts),
        size=sum(p.size for p in parts), schedules=sum(p.schedules for p in parts),
        max_size=None if None in caps else sum(c for c in caps if c is not None),
        closed=any(p.closed for p in parts), paused=any(p.paused for p in parts),
        journal_failing=any(p.journal_failing for p in parts),
        storage_full=any(p.storage_full for p in parts),
        throttled=sum(p.throttled for p in parts),
        throttled_by_task=sum_counts(p.throttled_by_task for p in parts))


def by_head(heads: Sequence[tuple[float, float] | None], turn: int = 0) -> list[int]:
    """The shards that have a ready task, in the order one queue would hand their heads
    out, from each shard's ``(rank, due_at)`` of its head (None: nothing ready).

    Ranks (:meth:`rayqueue.core.queue.QueueCore.top_rank`, lower first) compare across
    shards with aging included; then the earlier due goes first, as within one shard;
    exact ties go to the shards in turn, starting at ``turn``.
    """
    n = len(heads)
    return [s for *_, s in sorted((*head, (s - turn) % n, s)
                                  for s, head in enumerate(heads) if head is not None)]


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """What the pool manager asks each queue shard every cycle (``pool_status``)."""

    #: ready tasks per pool
    ready: dict[str, int] = field(default_factory=dict)
    #: leased tasks per pool
    leased: dict[str, int] = field(default_factory=dict)
    #: (task id, worker id) of attempts that overran their timeout (handed over once)
    timed_out: list[tuple[str, str]] = field(default_factory=list)
    #: leased tasks per worker
    by_worker: dict[str, int] = field(default_factory=dict)
    #: seconds until the next run of an active periodic schedule, per pool
    schedule_in: dict[str, float] = field(default_factory=dict)
    #: ready tasks per pool that a claim could take now: none while the shard is paused
    #: (its backlog is no demand for workers, who could only wait beside it)
    claimable: dict[str, int] = field(default_factory=dict)


def merge_pool_status(parts: Sequence[PoolStatus]) -> PoolStatus:
    """The pool manager's view over every shard."""
    soonest: dict[str, float] = {}
    for p in parts:
        for pool, left in p.schedule_in.items():
            soonest[pool] = min(left, soonest.get(pool, left))
    return PoolStatus(sum_counts(p.ready for p in parts), sum_counts(p.leased for p in parts),
                      [entry for p in parts for entry in p.timed_out],
                      sum_counts(p.by_worker for p in parts), soonest,
                      sum_counts(p.claimable for p in parts))


class ShardChooser:
    """Where one worker of a sharded queue claims next.

    Each claim's answer carries the rank of the best task left in that shard (lower goes
    first; see ``QueueCore.top_rank``). The worker claims first from shards it has not
    looked at for ``refresh_s`` (so new urgent work anywhere is seen within that time),
    then from the shard with the best rank it knows of, and each claim on a shard asks
    for nothing worse than the best rank known elsewhere (:meth:`bound`). Ties go round
    robin from the worker's own start, so workers spread over equal shards.
    """

    def __init__(self, n: int, start: int = 0, refresh_s: float = 0.05) -> None:
        self.n = n
        self.refresh_s = refresh_s
        self._ranks: list[float | None] = [None] * n
        self._seen = [-math.inf] * n
        self._blocked_until = [-math.inf] * n
        self._failures = [0] * n
        self._next = start % n

    def order(self, now: float) -> list[int]:
        """The shards to try, best first (shards backing off after a failure left out)."""
        turn = [(self._next + i) % self.n for i in range(self.n)]
        live = [s for s in turn if self._blocked_until[s] <= now]
        stale = [s for s in live if now - self._seen[s] >= self.refresh_s]
        fresh = [s for s in live if now - self._seen[s] < self.refresh_s]
        fresh.sort(key=self._rank_or_inf)
        return stale + fresh

    def _rank_or_inf(self, shard: int) -> float:
        rank = self._ranks[shard]
        return math.inf if rank is None else rank

    def bound(self, shard: int) -> float | None:
        """The worst rank worth taking from ``shard``: the best known in the others."""
        others = [r for s, r in enumerate(self._ranks) if s != shard and r is not None]
        return min(others) if others else None

    def saw(self, shard: int, rank: float | None, now: float) -> None:
        """A claim on ``shard`` answered; ``rank`` is its best task left (None: none)."""
        self._ranks[shard] = rank
        self._seen[shard] = now
        self._failures[shard] = 0
        self._next = (shard + 1) % self.n

    def failed(self, shard: int, now: float) -> float:
        """A claim on ``shard`` failed: leave it out for a backoff that doubles with its
        failures in a row (0.1 s up to 1 s); returns the backoff."""
        self._failures[shard] += 1
        backoff = min(0.05 * 2.0 ** self._failures[shard], MAX_BACKOFF_S)
        self._blocked_until[shard] = now + backoff
        self._ranks[shard] = None
        return backoff

    def wait_s(self, now: float) -> float:
        """How long until some shard may be tried again (0 if one may now)."""
        return max(0.0, min(self._blocked_until) - now)
