"""The execution ledger and history checker of RELIABILITY.md section 6.0.

Test tasks append one row per attempt to a side SQLite file (``synchronous=FULL``),
outside rayqueue; after quiescence the checker compares it with the queue's records.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT, pid INTEGER,
    start_ts REAL NOT NULL, end_ts REAL, outcome TEXT NOT NULL DEFAULT 'started'
)
"""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    return conn


def start(path: str, task_id: str, attempt: int, worker: str) -> int:
    """Record an attempt's start; returns its row id."""
    with _connect(path) as conn:
        cur = conn.execute(
            "INSERT INTO attempts (task_id, attempt, worker, pid, start_ts) VALUES (?,?,?,?,?)",
            (task_id, attempt, worker, os.getpid(), time.time()))
        return int(cur.lastrowid or 0)


def end(path: str, row: int, outcome: str) -> None:
    """Record an attempt's end (``ok`` or ``error``)."""
    with _connect(path) as conn:
        conn.execute("UPDATE attempts SET end_ts=?, outcome=? WHERE rowid=?",
                     (time.time(), outcome, row))


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


def check(path: str, infos: Iterable[Any]) -> History:
    """Compare the queue's records (TaskInfo) of the acked ids with the ledger."""
    ledger = rows(path)
    ok = Counter(r["task_id"] for r in ledger if r["outcome"] == "ok")
    started = Counter(r["task_id"] for r in ledger)
    lost: list[str] = []
    under: list[str] = []
    states: Counter[str] = Counter()
    for info in infos:
        states[info.state] += 1
        if info.state not in ("succeeded", "dead"):
            lost.append(info.id)
        if info.state == "succeeded" and ok[info.id] < 1:
            lost.append(info.id)
        if info.attempts < started[info.id]:
            under.append(info.id)
    dup = sum(max(0, n - 1) for n in ok.values())
    return History(lost=lost, executions=ok, duplicates=dup, undercounted=under, states=states)
