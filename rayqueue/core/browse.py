"""Listing tasks a page at a time, newest first, with bounded work per page.

The queue keeps its records in a dict by id; a dashboard that refreshes a list of
tasks every second must not copy or sort all of them each time. :class:`Order` keeps
the ids in enqueue order (``seq``, which never changes on a record) in two flat lists,
so a page starts at its cursor by bisection and walks back from there, examining at
most ``max_scan`` records: a filter that matches little returns a short (even empty)
page and a cursor to go on from, never a scan of the whole queue.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rayqueue.core.record import TaskRecord, TaskState

T = TypeVar("T")

#: Records one page examines at most (a page with a rare filter may come back short).
MAX_SCAN = 20_000
#: Largest page.
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing shows; ``None`` (or empty) fields match everything."""

    states: frozenset[TaskState] | None = None
    task_name: str | None = None
    priority: int | None = None
    id_prefix: str | None = None

    def matches(self, rec: TaskRecord) -> bool:
        """Whether ``rec`` passes every given condition."""
        return ((not self.states or rec.state in self.states)
                and (self.task_name is None or rec.task_name == self.task_name)
                and (self.priority is None or rec.priority == self.priority)
                and (not self.id_prefix or rec.id.startswith(self.id_prefix)))


@dataclass(frozen=True, slots=True)
class Page:
    """Matching records, newest first; ``next`` is the cursor of the page after it
    (``None``: nothing older is left to examine)."""

    records: list[TaskRecord]
    next: int | None
    #: how many records the page examined
    scanned: int


class Order:
    """Task ids in enqueue order, for paging. Removed tasks stay in the lists until a
    compaction (when over half are stale), so adding and removing cost O(1) amortised."""

    __slots__ = ("_ids", "_seqs")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._seqs: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str, seq: int, tasks: Mapping[str, TaskRecord]) -> None:
        """Note a task new to ``tasks`` (its record is or will be ``tasks[task_id]``)."""
        if self._seqs and seq < self._seqs[-1]:  # not in order (cannot happen today)
            at = bisect.bisect_right(self._seqs, seq)
            self._seqs.insert(at, seq)
            self._ids.insert(at, task_id)
        else:
            self._seqs.append(seq)
            self._ids.append(task_id)
        if len(self._ids) > 2 * len(tasks) + 1024:
            self.compact(tasks)

    def compact(self, tasks: Mapping[str, TaskRecord]) -> None:
        """Drop the entries of tasks no longer in ``tasks`` (or re-created since)."""
        keep = [(i, s) for i, s in zip(self._ids, self._seqs, strict=True)
                if (r := tasks.get(i)) is not None and r.seq == s]
        self._ids = [i for i, _ in keep]
        self._seqs = [s for _, s in keep]

    def page(self, tasks: Mapping[str, TaskRecord], where: TaskFilter, limit: int,
             before: int | None = None, max_scan: int = MAX_SCAN) -> Page:
        """Up to ``limit`` records that match ``where``, newest first, among those
        enqueued before cursor ``before`` (``None``: from the newest); examines at most
        ``max_scan`` entries. An ``id_prefix`` that is a whole task id is looked up
        directly (one record, no scan)."""
        if where.id_prefix and before is None and (rec := tasks.get(where.id_prefix)):
            return Page([rec] if where.matches(rec) else [], None, 1)
        end = len(self._seqs) if before is None else bisect.bisect_left(self._seqs, before)
        found: list[TaskRecord] = []
        at = end
        stop = max(0, end - max(1, max_scan))
        while at > stop and len(found) < limit:
            at -= 1
            rec = tasks.get(self._ids[at])
            if rec is not None and rec.seq == self._seqs[at] and where.matches(rec):
                found.append(rec)
        return Page(found, self._seqs[at] if at > 0 else None, end - at)


#: A shard's place in a listing: ``None`` (from its newest task), or the ``seq`` its
#: next page starts below (``0``: none of its tasks is left).
Cursor = int | None


def encode_cursor(cursors: Sequence[Cursor]) -> str | None:
    """The text form of the shards' places (``None`` once every shard is done)."""
    if all(c == 0 for c in cursors):
        return None
    return ",".join("" if c is None else str(c) for c in cursors)


def decode_cursor(text: str | None, shards: int) -> list[Cursor]:
    """The shards' places written by :func:`encode_cursor`.

    Raises:
        ValueError: ``text`` is not such a cursor for ``shards`` shards.
    """
    if text is None:
        return [None] * shards
    parts = text.split(",")
    if len(parts) != shards or not all(p == "" or (p.isascii() and p.isdigit() and len(p) < 20)
                                       for p in parts):
        raise ValueError(f"not a listing cursor of this queue: {text[:40]!r}")
    return [None if p == "" else int(p) for p in parts]


def merge_pages(pages: Sequence[tuple[Sequence[tuple[int, T]], Cursor]],
                cursors: Sequence[Cursor], limit: int,
                key: Callable[[T], Any]) -> tuple[list[T], list[Cursor]]:
    """One page out of the shards' pages (each ``(rows as (seq, row), next)``, newest
    first, ``cursors`` the places they were asked from): the newest ``limit`` rows by
    ``key`` over all shards, and each shard's place after the rows taken from it (a
    shard whose rows were not all taken goes on from the last one taken)."""
    streams = [[(key(row), s, seq, row) for seq, row in rows]
               for s, (rows, _) in enumerate(pages)]
    taken = list(itertools.islice(heapq.merge(*streams, key=lambda t: t[0], reverse=True),
                                  limit))
    last: dict[int, int] = {}
    for _, s, seq, _ in taken:
        last[s] = seq
    counts = Counter(s for _, s, _, _ in taken)
    after: list[Cursor] = []
    for s, (rows, nxt) in enumerate(pages):
        if counts[s] == len(rows):
            after.append(0 if nxt is None else nxt)
        else:
            after.append(last.get(s, cursors[s]))
    return [row for _, _, _, row in taken], after
