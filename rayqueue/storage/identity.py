"""What a SQLite journal is and whether it is whole, checked before it is opened for writing.

A journal knows itself: its ``meta`` table holds an identity (a random ``journal_id``,
the queue name, the shard index and count, the schema version) and ``seq``, the number
of the last committed batch, bumped inside every commit's transaction. A small side
file ``<journal>.id`` mirrors them (written atomically, updated when the journal is
opened, at each regular checkpoint and on a clean close), so the loss of a part the
main file cannot see (its ``-wal``), or of the main file itself, shows on the next open.

:func:`verify` reads the files without changing a byte of them: the main file alone is
opened ``immutable`` (no locks, no ``-shm``); a main file with a write-ahead log is
copied, log and all, into a temporary directory and inspected there, because even a
read-only SQLite connection rewrites the ``-shm`` of a WAL database.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rayqueue.errors import JournalCorruptError, JournalNotFoundError, StorageError

#: Version of the table layout; a journal with another version is refused.
SCHEMA_VERSION = 1
#: The first bytes of every SQLite database file.
_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class JournalIdentity:
    """Whose journal a file is: the queue (None: not known yet, e.g. a resharded
    journal before its queue first opens it), the shard index and the shard count."""

    queue: str | None
    shard: int = 0
    shards: int = 1


@dataclass(frozen=True)
class SideFile:
    """The contents of ``<journal>.id``."""

    journal_id: str
    queue: str | None
    shard: int
    shards: int
    schema: int
    #: the last committed batch known when the file was written
    seq: int
    #: True while a process has the journal open (False after a clean close)
    open: bool


@dataclass(frozen=True)
class Inspection:
    """What a read-only look at a journal found."""

    #: the ``meta`` table (empty for a database without one)
    meta: dict[str, str]
    #: task rows by state, and schedule rows
    by_state: dict[str, int]
    schedules: int

    @property
    def seq(self) -> int:
        """The last committed batch the journal holds (0 for one without a sequence)."""
        return int(self.meta.get("seq", "0"))


def side_path(path: str | os.PathLike[str]) -> Path:
    """The side file of the journal at ``path``."""
    return Path(f"{os.fspath(path)}.id")


def parts(path: str | os.PathLike[str]) -> list[Path]:
    """The files that make up the journal at ``path``: main, ``-wal``, ``-shm``, side."""
    base = os.fspath(path)
    return [Path(base), Path(base + "-wal"), Path(base + "-shm"), side_path(base)]


def read_side(path: str | os.PathLike[str]) -> SideFile | None:
    """The side file of the journal at ``path``, or None if there is none.

    Raises:
        JournalCorruptError: the side file exists but cannot be read.
    """
    side = side_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        return SideFile(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise JournalCorruptError(os.fspath(path), f"its side file {str(side)!r} cannot be "
                                  f"read ({type(err).__name__}: {err})") from err


def write_side(path: str | os.PathLike[str], side: SideFile) -> None:
    """Replace the side file of ``path`` atomically and durably (temp, fsync, rename,
    directory fsync), so a crash leaves the old or the new file, never half of one."""
    target = side_path(path)
    temp = target.with_name(target.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(asdict(side), sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, target)
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Make the renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inspect(path: str | os.PathLike[str]) -> Inspection:
    """Read a journal (main file and write-ahead log) without changing any of its files.

    Raises:
        JournalCorruptError: not a database, a truncated file, or an integrity check
            that fails.
    """
    main = Path(path)
    wal = Path(f"{main}-wal")
    _check_header(main, wal)
    for _ in range(3):
        if not (wal.exists() and wal.stat().st_size > 0):
            break
        # The log must be replayed to see the newest commits; that needs a writable
        # wal-index, so it happens on a copy. A log that vanishes meanwhile was folded
        # into the main file by a closing owner: read both again.
        with tempfile.TemporaryDirectory(prefix=".rayqueue-check-", dir=main.parent) as tmp:
            copy = Path(tmp) / "journal"
            shutil.copyfile(main, copy)
            try:
                shutil.copyfile(wal, f"{copy}-wal")
            except FileNotFoundError:
                continue
            return _read(main, sqlite3.connect(copy, isolation_level=None))
    uri = f"{main.resolve().as_uri()}?mode=ro&immutable=1"
    return _read(main, sqlite3.connect(uri, uri=True, isolation_level=None))


def _check_header(main: Path, wal: Path) -> None:
    """Refuse a file that is not a SQLite database, or shorter than its header says
    where the write-ahead log cannot make up the difference.

    A checkpoint copies the log's pages into the main file in page order, the header
    page first: a process killed during one leaves a main file shorter than its new
    header says, and the log (not reset until a checkpoint completes) holds every page
    past the end. SQLite replays it on the next open; that is no damage.
    """
    with open(main, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(_MAGIC):
        raise JournalCorruptError(str(main), "the main file is not a SQLite database "
                                  "(garbage over it, or another kind of file)")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    # The header's page count is valid only when its "version valid for" matches the
    # change counter (SQLite file format, section 1.3.7).
    valid = head[92:96] == head[24:28]
    size = main.stat().st_size
    if not valid or size >= pages * page:
        return
    missing = set(range(size // page + 1, pages + 1)) - _logged_pages(wal, page)
    if missing:
        raise JournalCorruptError(str(main), f"the main file is truncated: {size} bytes "
                                  f"where its header says {pages * page}")


def _logged_pages(wal: Path, page: int) -> set[int]:
    """The page numbers of the frames of the current log generation in ``wal`` (empty
    if there is no log). SQLite file format, section 4.1: a 32-byte log header, then
    frames of a 24-byte header and a page; a frame whose salts differ from the log's
    is left from before the log was restarted."""
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
            if len(head) < 32 or int.from_bytes(head[8:12], "big") != page:
                return set()
            salts = head[16:24]
            found = set()
            while len(frame := f.read(24)) == 24 and frame[8:16] == salts:
                found.add(int.from_bytes(frame[0:4], "big"))
                f.seek(page, os.SEEK_CUR)
            return found
    except FileNotFoundError:
        return set()


def _read(main: Path, conn: sqlite3.Connection) -> Inspection:
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise JournalCorruptError(str(main), "SQLite's integrity check fails: "
                                      + "; ".join(problems[:3]))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type = 'table'")}
        meta: dict[str, str] = {}
        by_state: dict[str, int] = {}
        schedules = 0
        if "meta" in tables:
            meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        if "tasks" in tables:
            by_state = {str(s): int(n) for s, n in conn.execute(
                "SELECT state, COUNT(*) FROM tasks GROUP BY state")}
        if "schedules" in tables:
            (schedules,) = conn.execute("SELECT COUNT(*) FROM schedules").fetchone()
        if tables and "meta" not in tables:
            raise JournalCorruptError(str(main), "the file is a SQLite database but not a "
                                      f"rayqueue journal (tables: {', '.join(sorted(tables))})")
        return Inspection(meta=meta, by_state=by_state, schedules=int(schedules))
    except sqlite3.DatabaseError as err:
        raise JournalCorruptError(str(main), f"SQLite cannot read it ({err})") from err
    finally:
        conn.close()


def verify(path: str | os.PathLike[str], identity: JournalIdentity | None,
           create: bool) -> Inspection | None:
    """Check the journal at ``path`` before it is opened for writing, changing nothing.

    Returns None when there is no journal yet (a new one may be created), else what
    :func:`inspect` found.

    Raises:
        JournalNotFoundError: no journal at all and ``create`` is false.
        JournalCorruptError: a part is missing, the sequence went backwards, the files
            are damaged, or they are another queue's or shard's.
        StorageError: a journal of another schema version.
    """
    main, wal, shm, side_file = parts(path)
    side = read_side(main)
    wal_size = wal.stat().st_size if wal.exists() else 0
    if not main.exists():
        left = [p.name for p in (wal, shm, side_file) if p.exists()]
        if left:
            raise JournalCorruptError(str(main), "the main file is missing, but "
                                      f"{', '.join(left)} beside it are not: it was deleted "
                                      "or moved")
        if not create:
            raise JournalNotFoundError(str(main))
        return None
    if main.stat().st_size == 0:
        if wal_size or side is not None:
            raise JournalCorruptError(str(main), "the main file is empty, but its "
                                      "write-ahead log or side file says it held commits")
        return None  # a crash while it was being created: nothing was ever committed
    found = inspect(main)
    version = found.meta.get("schema_version", str(SCHEMA_VERSION))
    if version != str(SCHEMA_VERSION):
        raise StorageError(f"the journal at {str(main)!r} has schema version {version}, this "
                           f"rayqueue reads version {SCHEMA_VERSION}: use a matching rayqueue "
                           "version")
    _check_side(main, found, side, wal.exists())
    if identity is not None:
        _check_identity(main, found.meta, identity)
    return found


def _check_side(main: Path, found: Inspection, side: SideFile | None, wal: bool) -> None:
    journal_id = found.meta.get("journal_id")
    if side is None:
        return  # a journal from before side files (adopted), or its side file was lost
    if side.open and not wal:
        raise JournalCorruptError(str(main), "the queue that had it open stopped without "
                                  "closing it, and its write-ahead log (-wal) is gone: the "
                                  "commits it held are lost, unless another SQLite program "
                                  "opened the journal since (the sqlite3 shell, say: closing "
                                  "it folds the log into the main file and deletes it, and "
                                  "then nothing was lost). If you know it held none, delete "
                                  "the side file to accept the journal as it is")
    if journal_id is None:
        raise JournalCorruptError(str(main), f"its side file names journal {side.journal_id} "
                                  "but the main file carries no identity: the main file was "
                                  "replaced by another file")
    if side.journal_id != journal_id:
        raise JournalCorruptError(str(main), f"the main file is journal {journal_id} but its "
                                  f"side file names journal {side.journal_id}: files of two "
                                  "journals are mixed")
    if side.seq > found.seq:
        raise JournalCorruptError(str(main), f"commits are missing: the side file records "
                                  f"commit #{side.seq} but the journal holds only up to "
                                  f"#{found.seq}; its write-ahead log (-wal) was deleted or "
                                  "replaced, or the main file is an older copy")


def _check_identity(main: Path, meta: dict[str, Any], identity: JournalIdentity) -> None:
    expected = {"queue": identity.queue, "shard": str(identity.shard),
                "shards": str(identity.shards)}
    wrong = {k: meta[k] for k, v in expected.items() if v is not None and k in meta
             and meta[k] != v}
    if wrong:
        owner = (f"queue {meta.get('queue', '?')!r}, shard {meta.get('shard', '?')} of "
                 f"{meta.get('shards', '?')}")
        raise JournalCorruptError(str(main), f"it is the journal of {owner}, not of queue "
                                  f"{identity.queue!r}, shard {identity.shard} of "
                                  f"{identity.shards}: give each queue (and shard) its own "
                                  "journal path")
