"""The execution ledger and history checker of RELIABILITY.md section 6.0.

Test tasks append one row per attempt to a side SQLite file (``synchronous=FULL``),
outside rayqueue, with the value the attempt returned; after quiescence the checker
compares it with the queue's records:

- *lost*: an acknowledged task not SUCCEEDED or DEAD, or SUCCEEDED with no attempt that
  finished in the ledger;
- *wrongly dead*: DEAD although the test did not allow it to die (a task the queue gave
  up on is as good as lost to its sender);
- *undercounted*: fewer attempts recorded by the queue than the ledger saw start;
- *wrong results*: the stored result is not what the task should have returned;
- *late overwrites*: the stored result is not the one of the attempt the queue leased
  last (a fenced, zombie attempt's late ack overwrote it);
- *handed out after the end*: an attempt started after the task had reached its terminal
  state (a terminal task must never be handed out again);
- *terminal changed*: a terminal record read again later differs from the first read
  (terminal uniqueness: a task reaches its terminal state once).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT, pid INTEGER,
    start_ts REAL NOT NULL, end_ts REAL, outcome TEXT NOT NULL DEFAULT 'started',
    result TEXT
)
"""


def create(path: str) -> str:
    """Make the ledger file (WAL, schema) before any process opens it; returns ``path``.

    Switching a fresh file to WAL takes an exclusive lock, and SQLite answers "database
    is locked" at once, without waiting, to a connection that would deadlock on it: a
    worker's first :func:`start` and the test's first :func:`starts` racing to switch
    it failed a fault test in CI. Done once here, no two connections ever switch it.
    """
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
    finally:
        conn.close()
    return path


def _connect(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise FileNotFoundError(f"ledger {path} was not made by ledger.create()")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def start(path: str, task_id: str, attempt: int, worker: str) -> int:
    """Record an attempt's start; returns its row id."""
    with _connect(path) as conn:
        cur = conn.execute(
            "INSERT INTO attempts (task_id, attempt, worker, pid, start_ts) VALUES (?,?,?,?,?)",
            (task_id, attempt, worker, os.getpid(), time.time()))
        return int(cur.lastrowid or 0)


def end(path: str, row: int, outcome: str, result: Any = None) -> None:
    """Record an attempt's end (``ok`` with the value it returns, or ``error``)."""
    with _connect(path) as conn:
        conn.execute("UPDATE attempts SET end_ts=?, outcome=?, result=? WHERE rowid=?",
                     (time.time(), outcome, None if result is None else json.dumps(result),
                      row))


def rows(path: str) -> list[dict[str, Any]]:
    """Every ledger row."""
    with _connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM attempts ORDER BY rowid")]


def starts(path: str, task_id: str) -> int:
    """How many attempts of ``task_id`` started."""
    with _connect(path) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM attempts WHERE task_id=?",
                            (task_id,)).fetchone()
        return int(n)


@dataclass
class History:
    """What the checker found: L lost ids, E executions, D duplicates, R violations."""

    lost: list[str]
    executions: Counter[str]
    duplicates: int
    undercounted: list[str]
    states: Counter[str]
    wrongly_dead: list[str] = field(default_factory=list)
    wrong_results: list[tuple[str, Any, Any]] = field(default_factory=list)
    late_overwrites: list[tuple[str, int, Any]] = field(default_factory=list)
    after_end: list[tuple[str, int]] = field(default_factory=list)
    terminal_changed: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[Any]]:
        """Every violated invariant, by name (empty when the history is clean)."""
        found: dict[str, list[Any]] = {
            "lost": self.lost, "undercounted": self.undercounted,
            "wrongly_dead": self.wrongly_dead, "wrong_results": self.wrong_results,
            "late_overwrites": self.late_overwrites, "after_end": self.after_end,
            "terminal_changed": self.terminal_changed}
        return {k: v for k, v in found.items() if v}


Expected = Mapping[str, Any] | Callable[[Any], Any]


def check(path: str, infos: Iterable[Any], *, expected: Expected | None = None,
          may_die: Iterable[str] = (), later: Iterable[Any] | None = None) -> History:
    """Compare the queue's records (TaskInfo) of the acked ids with the ledger.

    Args:
        expected: what each SUCCEEDED task should have returned: a mapping id -> value,
            or a function of the TaskInfo (for values that depend on the attempt).
            Without it, the result must be one that a finished attempt returned.
        may_die: ids the test expects (or allows) to end DEAD; any other DEAD task is
            a failure.
        later: the same tasks read again after the fault's late effects (a zombie's
            late ack): every terminal record must be unchanged.
    """
    ledger = rows(path)
    infos = list(infos)
    allowed_dead = set(may_die)
    ok = Counter(r["task_id"] for r in ledger if r["outcome"] == "ok")
    started = Counter(r["task_id"] for r in ledger)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in ledger:
        by_task.setdefault(r["task_id"], []).append(r)
    history = History(lost=[], executions=ok, undercounted=[], states=Counter(),
                      duplicates=sum(max(0, n - 1) for n in ok.values()))
    for info in infos:
        history.states[info.state] += 1
        attempts = by_task.get(info.id, [])
        if info.state not in ("succeeded", "dead"):
            history.lost.append(info.id)
        if info.state == "dead" and info.id not in allowed_dead:
            history.wrongly_dead.append(info.id)
        if info.attempts < started[info.id]:
            history.undercounted.append(info.id)
        if info.state in ("succeeded", "dead", "cancelled") and info.finished_at is not None:
            history.after_end += [(info.id, r["attempt"]) for r in attempts
                                  if r["start_ts"] > info.finished_at]
        if info.state != "succeeded":
            continue
        if ok[info.id] < 1:
            history.lost.append(info.id)
            continue
        result = json.loads(info.result_json) if info.result_json is not None else None
        if expected is not None:
            want = expected(info) if callable(expected) else expected[info.id]
            if result != want:
                history.wrong_results.append((info.id, result, want))
        # The stored result must be the one of the attempt the queue leased last: an
        # earlier, fenced attempt whose late ack went through would show here.
        last = [json.loads(r["result"]) for r in attempts if r["outcome"] == "ok"
                and r["attempt"] == info.attempts and r["result"] is not None]
        if result not in last:
            history.late_overwrites.append((info.id, info.attempts, result))
    if later is not None:
        first = {i.id: i for i in infos if i.terminal}
        for again in later:
            before = first.get(again.id)
            if before is not None and _terminal(before) != _terminal(again):
                history.terminal_changed.append(again.id)
    return history


def _terminal(info: Any) -> tuple[Any, ...]:
    return (info.state, info.attempts, info.result_json, info.finished_at, info.reason)
