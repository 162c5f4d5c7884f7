"""Where a queue's journals live, and changing its shard count offline.

An unsharded queue journals to one file (``shop.sqlite``); a queue of N shards to N
files beside it, ``shop.shard-<i>-of-<N>.sqlite``. Tasks are routed to shards by a hash
of their id (:func:`rayqueue.core.shards.shard_of`), so journals written with one shard
count mean nothing under another: :func:`check_layout` refuses to start a queue beside
them, and :func:`reshard` rewrites them for a new count, with the queue shut down.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shlex
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rayqueue import settings
from rayqueue.config import check_queue_name
from rayqueue.core.record import ScheduleRecord, TaskRecord
from rayqueue.core.shards import check_shards, shard_of
from rayqueue.errors import InvalidNameError, JournalNotFoundError, StorageError
from rayqueue.storage.identity import JournalIdentity, fsync_dir
from rayqueue.storage.sqlite import SQLiteStorage

#: How many records :func:`reshard` writes per transaction.
BATCH = 5_000


def default_journal(name: str) -> str:
    """The default journal of queue ``name``: ``<name>.sqlite`` in ``$RAYQUEUE_HOME``
    (absolute, on this node). The name is checked first, so the file is always directly
    in that directory.

    Raises:
        InvalidNameError: ``name`` is not a valid queue name.
    """
    home = Path(settings.home()).resolve()
    path = home / f"{check_queue_name(name)}.sqlite"
    if path.parent != home:  # cannot happen for a valid name; never write elsewhere
        raise InvalidNameError("name", f"queue name {name!r} leaves the journal directory")
    return str(path)


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
            f"queue shut down: rayqueue reshard --journal {shlex.quote(str(p))} --shards "
            f"{shards}")


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
    corrupt: int = 0
    """Unreadable task rows carried over as dead letters (reason ``corrupt_record``), as
    a restarted queue shows them; the old journals keep the rows as they were."""


def reshard(journal: str, shards: int, *, durability: Literal["full", "process"] = "full",
            busy_s: float = 5.0) -> Resharded:
    """Rewrite the journals of the queue whose base journal is ``journal`` for
    ``shards`` shards; every task (finished ones and dead letters too) and schedule
    moves to the shard its id now hashes to.

    The queue must be shut down: each old journal is opened exclusively and stays locked
    to the end, and one that a process still holds after ``busy_s`` seconds (a running
    queue actor) is refused with :class:`~rayqueue.errors.StorageBusyError`. The new
    journals are written under temporary names, read back, and renamed into place only
    when complete; the old ones are then moved aside (``<file>.pre-reshard-<time>``),
    not deleted. If this stops half-way the old set is whole; if it stops while
    renaming, both sets lie side by side and a queue refuses to start until one is moved
    away. Leased tasks stay leased; their leases expire as usual once the queue runs
    again, as after any restart.

    Raises:
        JournalNotFoundError: no journal at ``journal`` nor shard journals beside it.
        ValueError: a bad shard count, the journals already have it, journals of several
            shard counts lie side by side, or a shard's journal is missing.
        StorageBusyError: a journal is open in another process (the queue still runs).
        StorageError: a journal holds rows that cannot be read (nothing is changed), or
            a new journal did not read back whole.
    """
    shards = check_shards(shards)
    found = layouts(journal)
    if not found:
        raise JournalNotFoundError(journal)
    if len(found) > 1:
        raise ValueError(_mixed(journal, found))
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
    directory = Path(journal).parent
    with ExitStack() as stack:
        olds = []
        for f in files:  # locked until the end: no queue starts on them meanwhile
            olds.append(SQLiteStorage(f, create=False, exclusive=True,
                                      busy_timeout_ms=int(busy_s * 1000)))
            stack.callback(olds[-1].close)
        _remove(temps)  # left by an earlier run that stopped half-way
        tasks: list[list[TaskRecord]] = [[] for _ in range(shards)]
        schedules: list[list[ScheduleRecord]] = [[] for _ in range(shards)]
        for old in olds:
            state = old.load()
            rows = (old.count("tasks"), old.count("schedules"))
            if rows != (len(state.tasks), len(state.schedules)):
                raise StorageError(
                    f"{old.path} holds {rows[0]} task and {rows[1]} schedule rows, but only "
                    f"{len(state.tasks)} and {len(state.schedules)} can be read (see the "
                    "journal_row_invalid log lines): nothing was changed")
            old.checkpoint()  # the file alone is whole when it is moved aside
            for rec in state.tasks:
                tasks[shard_of(rec.id, shards)].append(rec)
            for sched in state.schedules:
                schedules[shard_of(sched.id, shards)].append(sched)
        for i, (temp, its_tasks, its_schedules) in enumerate(zip(temps, tasks, schedules,
                                                                 strict=True)):
            # The queue's name is not known here: its first open writes it in.
            identity = JournalIdentity(queue=None, shard=i, shards=shards)
            _write(SQLiteStorage(temp, durability=durability, exclusive=True,
                                 identity=identity), its_tasks, its_schedules)
            _read_back(temp, len(its_tasks), len(its_schedules))
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
            os.replace(temp + ".id", target + ".id")  # a main file alone is still opened
            Path(temp + ".lock").unlink(missing_ok=True)  # closed: nobody holds it
        fsync_dir(directory)  # the new set is in place before the old one moves
        kept = _aside(files)
        for f, aside in zip(files, kept, strict=True):
            # The side file first (a main file without one is still opened), then
            # SQLite's files (a crash leaves them), the main file last.
            for suffix in (".id", "-wal", "-shm", ""):
                if os.path.exists(f + suffix):
                    os.replace(f + suffix, aside + suffix)
        fsync_dir(directory)
    return Resharded(journal=journal, was=was, now=shards, tasks=[len(t) for t in tasks],
                     schedules=[len(s) for s in schedules], kept=kept,
                     corrupt=sum(r.reason == "corrupt_record" for t in tasks for r in t))


def _write(storage: SQLiteStorage, tasks: Sequence[TaskRecord],
           schedules: Sequence[ScheduleRecord]) -> None:
    """Fill a new journal, fold its log into the file, and close it."""
    try:
        for start in range(0, len(tasks), BATCH):
            storage.write(tasks=tasks[start:start + BATCH])
        storage.write(schedules=schedules)
        storage.checkpoint()
    finally:
        storage.close()


def _read_back(path: str, tasks: int, schedules: int) -> None:
    """Check a closed new journal on its own: no log beside it, every row in it."""
    if os.path.exists(path + "-wal"):
        raise StorageError(f"{path}: its write-ahead log was not folded in; nothing was "
                           "changed")
    check = SQLiteStorage(path, create=False, exclusive=True)
    try:
        found = (check.count("tasks"), check.count("schedules"))
    finally:
        check.close()
    if found != (tasks, schedules):
        raise StorageError(f"{path}: wrote {tasks} tasks and {schedules} schedules, reads "
                           f"back {found[0]} and {found[1]}; nothing was changed")


def _mixed(journal: str, found: dict[int, list[str]]) -> str:
    sets = "; ".join(
        f"{n} shard(s), {'complete' if len(fs) == n else f'only {len(fs)} of {n} files'}: "
        f"{', '.join(fs)}" for n, fs in sorted(found.items()))
    return (f"journals of several shard counts lie beside {journal!r} (a reshard that "
            f"stopped while renaming?): {sets}. A complete set holds every record: move "
            "the other set away, then start the queue with its shard count")


def _aside(files: Sequence[str]) -> list[str]:
    """Names to move old journals to, taken by no file yet."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in itertools.count():
        names = [f"{f}.pre-reshard-{stamp}{f'-{n}' if n else ''}" for f in files]
        if not any(os.path.exists(name + suffix) for name in names
                   for suffix in ("", "-wal", "-shm", ".id")):
            return names
    raise AssertionError("unreachable")


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        for suffix in ("", "-wal", "-shm", ".id", ".lock"):
            Path(path + suffix).unlink(missing_ok=True)


def remove_journals(path: str, queue: str) -> list[str]:
    """Delete the journal ``path`` of queue ``queue`` with every shard journal beside it
    (any shard count), each with its ``-wal``, ``-shm``, side and lock files; returns
    the files removed (none: there was no journal here). Each journal's lock is taken
    first and held while its files go, so a journal that a live queue owns is left
    whole.

    Raises:
        JournalInUseError: a live process (a queue running somewhere) owns one of them;
            nothing was removed.
    """
    from rayqueue.storage.identity import parts
    from rayqueue.storage.owner import JournalOwner, lock_path

    journals = sorted(f for files in layouts(path).values() for f in files)
    removed: list[str] = []
    with ExitStack() as owners:
        for journal in journals:  # every lock before the first file goes
            owners.callback(JournalOwner(journal, queue=queue, wait_s=1.0).release)
        for journal in journals:
            for part in [*parts(journal), lock_path(journal)]:
                if part.exists():
                    part.unlink()
                    removed.append(str(part))
    if removed:
        fsync_dir(Path(path).parent)
    return removed
