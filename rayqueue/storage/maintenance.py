"""Operator tools for a SQLite journal: check it, back it up while it runs, restore it."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from rayqueue.errors import JournalCorruptError, JournalNotFoundError, StorageBusyError
from rayqueue.storage.identity import (
    SCHEMA_VERSION,
    SideFile,
    fsync_dir,
    inspect,
    parts,
    read_side,
    verify,
    write_side,
)

#: SQLite's POSIX lock bytes (os_unix.c): every connection to a WAL database holds a
#: read lock in the SHARED range while it is open.
_SHARED_FIRST, _SHARED_SIZE = 0x40000000 + 2, 510


@dataclass(frozen=True)
class JournalReport:
    """What a journal holds, as :func:`check` found it."""

    path: str
    journal_id: str | None
    queue: str | None
    shard: int
    shards: int
    #: the last committed batch the journal holds
    seq: int
    #: the sequence its side file records (None: no side file)
    side_seq: int | None
    #: task rows by state
    by_state: dict[str, int]
    schedules: int
    #: bytes of each file present (main, -wal, -shm, side file)
    files: dict[str, int]


def check(path: str | os.PathLike[str]) -> JournalReport:
    """Check the journal at ``path`` as a queue would on open, changing nothing.

    Works on a stopped queue's journal (and on a running one's, as of its last commit).

    Raises:
        JournalNotFoundError: no journal at ``path``.
        JournalCorruptError: what a queue would refuse (see the message).
    """
    found = verify(path, None, create=False)
    if found is None:  # an empty file: nothing was ever committed
        raise JournalNotFoundError(os.fspath(path))
    side = read_side(path)
    meta = found.meta
    return JournalReport(
        path=os.fspath(path), journal_id=meta.get("journal_id"), queue=meta.get("queue"),
        shard=int(meta.get("shard", "0")), shards=int(meta.get("shards", "1")),
        seq=found.seq, side_seq=None if side is None else side.seq,
        by_state=found.by_state, schedules=found.schedules,
        files={p.name: p.stat().st_size for p in parts(path) if p.exists()})


def backup(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> JournalReport:
    """Copy the journal at ``path`` to ``dest`` with SQLite's online backup API: a
    consistent snapshot even while a queue commits to it. ``dest`` is one self-contained
    file, written under a temporary name and renamed into place when complete.

    Raises:
        JournalNotFoundError: no journal at ``path``.
        FileExistsError: ``dest`` exists already.
        FileNotFoundError: ``dest``'s directory does not exist.
        JournalCorruptError: the journal is not a database (or not a file), or the copy
            does not check whole.
    """
    source, target = Path(path), Path(dest)
    if not source.exists():
        raise JournalNotFoundError(str(source))
    if not source.is_file():  # (SQLite would say only "disk I/O error")
        raise JournalCorruptError(str(source), "it is not a file (a directory?)")
    if target.exists():
        raise FileExistsError(f"{target} exists already: choose a new name for the backup")
    if not target.parent.is_dir():  # (SQLite would say only "unable to open database file")
        raise FileNotFoundError(f"{target.parent} is not a directory: the backup goes in "
                                "an existing one")
    # Without a log no process has the journal open: read the file alone, immutable (a
    # read-only connection would create a -shm). With one, join it read-only.
    wal = Path(f"{source}-wal").exists()
    uri = f"{source.resolve().as_uri()}?mode=ro{'' if wal else '&immutable=1'}"
    temp = target.with_name(f".{target.name}.backup")
    temp.unlink(missing_ok=True)
    src = sqlite3.connect(uri, uri=True)
    try:
        dst = sqlite3.connect(temp, isolation_level=None)
        try:
            src.backup(dst)  # all pages in one step: one read transaction, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # the backup is one file
        finally:
            dst.close()
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError):
            raise  # (busy, I/O: not about what the file holds)
        temp.unlink(missing_ok=True)
        raise JournalCorruptError(str(source), f"it is not an SQLite database ({err})") from None
    finally:
        src.close()
    os.chmod(temp, 0o600)
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)
    return check(target)


def restore(backup_path: str | os.PathLike[str], path: str | os.PathLike[str]) -> list[str]:
    """Put the backup at ``backup_path`` in place as the journal at ``path``, with a side
    file for it; the files it replaces are moved aside, never deleted.

    The queue must be stopped: a journal that a process has open is refused.

    Returns:
        The names the replaced files were moved to.

    Raises:
        JournalCorruptError: the backup does not check whole or is not a journal.
        StorageBusyError: a process (a running queue) has the journal open.
    """
    source, target = Path(backup_path), Path(path)
    found = inspect(source)
    journal_id = found.meta.get("journal_id")
    if journal_id is None:
        raise JournalCorruptError(str(source), "it is not a backup of a rayqueue journal "
                                  "(no journal identity)")
    temp = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(source, temp)
    os.chmod(temp, 0o600)
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    lock = _lock_out(target)
    try:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept = []
        for part in (Path(f"{target}.id"), Path(f"{target}-wal"), Path(f"{target}-shm"),
                     target):  # the side file first, the main file last
            if part.exists():
                aside = part.with_name(f"{target.name}.pre-restore-{stamp}"
                                       f"{part.name[len(target.name):]}")
                # The main file is linked aside and then replaced: at no moment is there
                # no main file (a queue would take the empty path for a new journal).
                (os.link if part == target else os.replace)(part, aside)
                kept.append(str(aside))
        os.replace(temp, target)
        meta = found.meta
        write_side(target, SideFile(
            journal_id=journal_id, queue=meta.get("queue"), shard=int(meta.get("shard", "0")),
            shards=int(meta.get("shards", "1")), schema=SCHEMA_VERSION, seq=found.seq,
            open=False))
    finally:
        if lock is not None:
            os.close(lock)
    return kept


def _lock_out(path: Path) -> int | None:
    """Take SQLite's lock bytes of ``path`` so no queue opens it meanwhile; refuse if a
    process has it open now. Returns the descriptor that holds the lock (None: no file)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
    except OSError:
        os.close(fd)
        raise StorageBusyError(f"the journal at {str(path)!r} is open in another process (a "
                               "running queue?): shut the queue down, then restore") from None
    return fd
