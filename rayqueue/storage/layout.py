"""Where a queue's journals live, and changing its shard count offline.

An unsharded queue journals to one file (``shop.sqlite``); a queue of N shards to N
files beside it, ``shop.shard-<i>-of-<N>.sqlite``. Tasks are routed to shards by a hash
of their id (:func:`rayqueue.core.shards.shard_of`), so journals written with one shard
count mean nothing under another: :func:`check_layout` refuses to start a queue beside
them, and :func:`reshard` rewrites them for a new count, with the queue shut down.
"""

from __future__ import annotations

import glob
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rayqueue.core.record import ScheduleRecord, TaskRecord
from rayqueue.core.shards import check_shards, shard_of
from rayqueue.errors import JournalNotFoundError

#: How many records :func:`reshard` writes per transaction.
BATCH = 5_000


def shard_journals(path: str, shards: int) -> list[str]:
    """The journal file of each shard: ``path`` itself for an unsharded queue, else
    ``<stem>.shard-<i>-of-<n><suffix>`` beside it."""
    if shards == 1:
        return [path]
    p = Path(path)
    return [str(p.with_name(f"{p.stem}.shard-{i}-of-{shards}{p.suffix}")) for i in range(shards)]


def layouts(path: str) -> dict[int, list[str]]:
    """The journal files beside the base journal ``path``, by the shard count they
    were written with (1 for ``path`` itself)."""
    p = Path(path)
    shard_file = re.compile(rf"{re.escape(p.stem)}\.shard-(\d+)-of-(\d+){re.escape(p.suffix)}")
    found: dict[int, list[str]] = {1: [path]} if p.exists() else {}
    for f in sorted(p.parent.glob(f"{glob.escape(p.stem)}.shard-*-of-*{glob.escape(p.suffix)}")):
        if (m := shard_file.fullmatch(f.name)) and int(m[1]) < int(m[2]):
            found.setdefault(int(m[2]), []).append(str(f))
    return found


def check_layout(journal: str, shards: int) -> None:
    """Refuse to start shard 0 (journal ``journal``) beside journals written with another
    shard count: their tasks hash to other shards, and starting fresh beside them would
    hide them. Runs in the queue actor, on the node that holds the files."""
    p = Path(journal)
    if shards > 1:  # back to the queue's base name: <stem>.shard-0-of-<n><suffix>
        p = p.with_name(p.name.replace(f".shard-0-of-{shards}", "", 1))
    found = sorted(f for n, files in layouts(str(p)).items() if n != shards for f in files)
    if found:
        raise ValueError(
            f"queue journals for another shard count exist: {', '.join(found)}. Start the "
            "queue with the shard count they were written with, or change it with the "
            f"queue shut down: rayqueue reshard --journal {str(p)!r} --shards {shards}")


@dataclass(frozen=True)
class Resharded:
    """What :func:`reshard` did."""

    journal: str
    was: int
    now: int
    tasks: list[int]
    """Task records in each new shard's journal."""
    schedules: list[int]
    """Periodic schedules in each new shard's journal."""
    kept: list[str]
    """Where the old journals were moved (delete them once the queue runs well)."""


def reshard(journal: str, shards: int, *, durability: Literal["full", "process"] = "full",
            busy_s: float = 5.0) -> Resharded:
    """Rewrite the journals of the queue whose base journal is ``journal`` for
    ``shards`` shards; every task (finished ones and dead letters too) and schedule
    moves to the shard its id now hashes to.

    The queue must be shut down: each old journal is opened exclusively, and one that
    a process still holds after ``busy_s`` seconds (a running queue actor) is refused
    with :class:`~rayqueue.errors.StorageBusyError`.
    Nothing is lost if this stops half-way: the new journals are written under temporary
    names and renamed into place only when complete; the old ones are then moved aside
    (``<file>.pre-reshard-<time>``), not deleted. Leased tasks stay leased; their leases expire
    as usual once the queue runs again, as after any restart.

    Raises:
        JournalNotFoundError: no journal at ``journal`` nor shard journals beside it.
        ValueError: a bad shard count, the journals already have it, journals of several
            shard counts lie side by side, or a shard's journal is missing.
        StorageBusyError: a journal is open in another process (the queue still runs).
    """
    from rayqueue.storage.sqlite import SQLiteStorage

    shards = check_shards(shards)
    found = layouts(journal)
    if not found:
        raise JournalNotFoundError(journal)
    if len(found) > 1:
        raise ValueError(
            f"journals of several shard counts ({', '.join(map(str, sorted(found)))}) lie "
            f"beside {journal!r} (an interrupted reshard?): keep the set you trust, move "
            "the others away, then run again")
    (was,) = found
    files = shard_journals(journal, was)
    missing = sorted(set(files) - set(found[was]))
    if missing:
        raise ValueError(f"the queue has {was} shards but these journals are missing: "
                         f"{', '.join(missing)}")
    if was == shards:
        raise ValueError(f"the journals at {journal!r} are already written for {shards} "
                         "shard(s)")
    targets = shard_journals(journal, shards)
    temps = [f"{t}.resharding" for t in targets]
    for temp in temps:  # left by an earlier run that stopped half-way
        for suffix in ("", "-wal", "-shm"):
            Path(temp + suffix).unlink(missing_ok=True)
    with ExitStack() as stack:
        def opened(storage: SQLiteStorage) -> SQLiteStorage:
            stack.callback(storage.close)
            return storage

        olds = [opened(SQLiteStorage(f, create=False, exclusive=True,
                                    busy_timeout_ms=int(busy_s * 1000)))
                for f in files]
        news = [opened(SQLiteStorage(t, durability=durability, exclusive=True))
                for t in temps]
        tasks: list[list[TaskRecord]] = [[] for _ in range(shards)]
        schedules: list[list[ScheduleRecord]] = [[] for _ in range(shards)]
        for old in olds:
            state = old.load()
            for rec in state.tasks:
                tasks[shard_of(rec.id, shards)].append(rec)
            for sched in state.schedules:
                schedules[shard_of(sched.id, shards)].append(sched)
        for new, its_tasks, its_schedules in zip(news, tasks, schedules, strict=True):
            for start in range(0, len(its_tasks), BATCH):
                new.write(tasks=its_tasks[start:start + BATCH])
            new.write(schedules=its_schedules)
            if new.count() != len(its_tasks):
                raise AssertionError(f"{new.path}: wrote {len(its_tasks)} tasks, "
                                     f"reads back {new.count()}")
    # Complete and closed: now in place. Until the old files move aside, both sets
    # exist, and a queue refuses to start (check_layout) rather than pick one.
    for temp, target in zip(temps, targets, strict=True):
        os.replace(temp, target)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = [f"{f}.pre-reshard-{stamp}" for f in files]
    for f, aside in zip(files, kept, strict=True):
        for suffix in ("-wal", "-shm", ""):  # SQLite's side files (a crash leaves them)
            if os.path.exists(f + suffix):
                os.replace(f + suffix, aside + suffix)
    _fsync_dir(Path(journal).parent)
    return Resharded(journal=journal, was=was, now=shards, tasks=[len(t) for t in tasks],
                     schedules=[len(s) for s in schedules], kept=kept)


def _fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

