"""SQLiteStorage: the Storage protocol as a local SQLite file in WAL mode."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from loguru import logger

from rayqueue.core.record import ScheduleRecord, TaskRecord, dumps
from rayqueue.errors import StorageBusyError, StorageError, StorageFullError
from rayqueue.storage.base import StoredState
from rayqueue.storage.codec import row_of_task, schedule_of_row, task_of_row, text_of
from rayqueue.storage.identity import (
    SCHEMA_VERSION,
    JournalIdentity,
    SideFile,
    verify,
    write_side,
)
from rayqueue.storage.owner import JournalOwner

#: A regular checkpoint folds the write-ahead log into the main file after a commit once
#: this many seconds have passed since the last one, or the log file has grown past
#: CHECKPOINT_WAL_BYTES. SQLite cuts the file back to half of that when it starts the log
#: over: cut back to the bound itself, the file would stay at the bound and every commit
#: would checkpoint (and rewrite the side file, with two fsyncs).
CHECKPOINT_EVERY_S = 5.0
CHECKPOINT_WAL_BYTES = 4 << 20

_SYNCHRONOUS = {"full": "FULL", "process": "NORMAL"}
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13  # result codes; sqlite3 names them >= 3.11
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, task_name TEXT NOT NULL,"
    " state TEXT NOT NULL, payload TEXT NOT NULL, record TEXT NOT NULL)",
    # No index on state: nothing queries by it (recovery reads every row), and keeping
    # one cost each state change an index update. Journals made earlier lose theirs.
    "DROP INDEX IF EXISTS tasks_state",
    "CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
)
_UPSERT_TASK = (
    "INSERT INTO tasks (id, task_name, state, payload, record) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(id) DO UPDATE SET task_name = excluded.task_name,"
    " state = excluded.state, payload = excluded.payload, record = excluded.record"
)
_UPSERT_SCHEDULE = ("INSERT INTO schedules (id, record) VALUES (?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET record = excluded.record")


class SQLiteStorage:
    """A journal in one SQLite file: WAL mode, one transaction per batch.

    Tasks are rows of ``tasks`` (the payload in its own column, the rest of the record
    as JSON), schedules rows of ``schedules``; all of it is JSON text, never pickles. The
    file (and SQLite's ``-wal``/``-shm`` files, which copy its mode) is private to its
    owner (0600). One caller at a time uses it; a lock makes calls from a thread pool safe.

    Args:
        path: the database file; its parent directory is created if missing.
        durability: ``"full"`` (``synchronous=FULL``) fsyncs every commit, so a committed
            batch survives power loss and OS crashes. ``"process"``
            (``synchronous=NORMAL``) survives a crash of the process but not power loss or
            an OS crash, which may undo the last commits (the file stays consistent).
        busy_timeout_ms: how long a write waits for another connection's lock before
            :class:`~rayqueue.errors.StorageBusyError`.
        create: start an empty journal if the file is missing. A restarted queue passes
            ``False`` so that a missing journal is an error, not an empty queue.
        exclusive: hold the file's lock until :meth:`close`, so no other process (a
            queue actor, say) has it open meanwhile; refused with
            :class:`~rayqueue.errors.StorageBusyError` if one has it open now.
            For offline tools such as :func:`rayqueue.storage.layout.reshard`.
        identity: whose journal this must be (queue, shard, shard count); None checks
            only that the files are whole and consistent (tools).

    Before anything is opened for writing, :func:`~rayqueue.storage.identity.verify`
    checks the files without changing them; a refused journal is left byte for byte as
    it was. Every commit bumps the journal's sequence in its own transaction; the side
    file ``<path>.id`` mirrors it after regular checkpoints and on :meth:`close`.

    Raises:
        JournalNotFoundError: ``create`` is false and there is no file at ``path``.
        JournalCorruptError: a part of the journal is missing, it is damaged, or it is
            another queue's or shard's.
        StorageError: the file cannot be opened as a journal (permissions, WAL
            unsupported, another schema version).
        ValueError: an unknown ``durability``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["full", "process"] = "full",
        busy_timeout_ms: int = 5000,
        create: bool = True,
        exclusive: bool = False,
        identity: JournalIdentity | None = None,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'process', got {durability!r}")
        self._path = Path(path)
        self._wal = Path(f"{self._path}-wal")
        self._lock = threading.Lock()
        self._closed = False
        self._seq = 0
        self._journal_id = ""
        self._meta: dict[str, str] = {}
        self._next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        # One owner at a time, before a byte is read: a second queue (or a stale copy
        # of this one) sharing the journal would hand the same tasks out twice.
        # (A journal that is not there and may not be created is refused by verify,
        # which leaves no lock file, or directory, behind.)
        self._owner = JournalOwner(self._path, queue=None if identity is None else
                                   identity.queue, wait_s=busy_timeout_ms / 1000) if (
            create or self._path.exists()) else None
        try:
            self._open(identity, durability, busy_timeout_ms, create, exclusive)
        except BaseException:
            self._release_owner()
            raise

    def _release_owner(self) -> None:
        if self._owner is not None:
            self._owner.release()

    def _open(self, identity: JournalIdentity | None, durability: Literal["full", "process"],
              busy_timeout_ms: int, create: bool, exclusive: bool) -> None:
        verify(self._path, identity, create)  # raises before any file is touched
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600))
            # An existing journal (and its WAL files) may have been created wider.
            for suffix in ("", "-wal", "-shm"):
                name = self._path.with_name(self._path.name + suffix)
                if name.exists():
                    os.chmod(name, 0o600)
            #: The open connection; tests use it to set limits such as max_page_count.
            self._connection = sqlite3.connect(self._path, isolation_level=None,
                                               check_same_thread=False)
            self._connection.text_factory = text_of
        except (sqlite3.Error, OSError) as err:
            raise StorageError(f"cannot open the journal at {str(self._path)!r}: {err}") from err
        try:
            self._setup(_SYNCHRONOUS[durability], busy_timeout_ms, exclusive, identity)
            self._write_side(open=True)
        except OSError as err:
            self._connection.close()
            raise StorageError(f"cannot write the side file of the journal at "
                               f"{str(self._path)!r}: {err}") from err
        except BaseException:
            self._connection.close()
            raise

    @property
    def seq(self) -> int:
        """The number of the last committed batch."""
        return self._seq

    @property
    def journal_id(self) -> str:
        """The journal's random identity, kept for its whole life (backups included)."""
        return self._journal_id

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _setup(self, synchronous: str, busy_timeout_ms: int, exclusive: bool,
               identity: JournalIdentity | None) -> None:
        conn = self._connection
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if exclusive:  # before WAL is first used: then no shared memory, one owner
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            # A checkpointed log is cut back to this size, not left at its largest.
            conn.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_WAL_BYTES // 2}")
        except sqlite3.Error as err:
            raise _translate(err, f"opening the journal at {str(self._path)!r}") from err
        if str(mode).lower() != "wal":
            raise StorageError(f"cannot use WAL mode for the journal at {str(self._path)!r} "
                               f"(got {mode!r}): put it on a local file system")
        with self._transaction("setup", begin="BEGIN EXCLUSIVE" if exclusive
                               else "BEGIN IMMEDIATE") as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
            # A journal written before journals carried an identity (same schema) is
            # adopted, not refused: its identity and sequence are written here, on its
            # first open, and from then on it is checked like any other.
            known = {"queue": None, "shard": None, "shards": None} if identity is None else {
                "queue": identity.queue, "shard": str(identity.shard),
                "shards": str(identity.shards)}
            defaults = {"schema_version": str(SCHEMA_VERSION), "journal_id": uuid.uuid4().hex,
                        "seq": "0", **known}
            tx.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                           [(k, v) for k, v in defaults.items() if v is not None])
            meta = {str(k): str(v) for k, v in tx.execute("SELECT key, value FROM meta")}
        self._meta = meta
        self._seq = int(meta["seq"])
        self._journal_id = meta["journal_id"]
        version = meta["schema_version"]
        if version != str(SCHEMA_VERSION):
            raise StorageError(
                f"the journal at {str(self._path)!r} has schema version {version}, this "
                f"rayqueue reads version {SCHEMA_VERSION}: use a matching rayqueue version"
            )

    # ------------------------------------------------------------------ protocol
    def load(self) -> StoredState:
        """Return every stored task and schedule.

        A task row that cannot be decoded (bad JSON, unknown state, missing fields) does
        not stop recovery: it is logged (``action="journal_row_invalid"``) and, when its
        id, task name and payload are readable, comes back as a ``dead`` record with
        reason ``"corrupt_record"`` (so an operator sees it and can retry it); otherwise,
        like an undecodable schedule row, it is skipped. The row on disk is left as is
        until the queue writes that task again.

        Raises:
            StorageError: the file cannot be read.
        """
        with self._transaction("read", begin="BEGIN") as tx:
            task_rows = tx.execute("SELECT id, task_name, payload, record FROM tasks").fetchall()
            schedule_rows = tx.execute("SELECT id, record FROM schedules").fetchall()
        tasks = [rec for rec in map(task_of_row, task_rows) if rec is not None]
        schedules = [s for s in map(schedule_of_row, schedule_rows) if s is not None]
        return StoredState(tasks=tasks, schedules=schedules)

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Apply one batch in one transaction: all of it, or (on an error) none of it.

        Raises:
            StorageBusyError: another connection held the lock past the busy timeout.
            StorageFullError: the disk or the page limit is full.
            StorageError: any other SQLite or OS error. Other exceptions (say, a record
                that fails to encode) roll the batch back and propagate unchanged.
        """
        if not (tasks or schedules or delete_tasks or delete_schedules):
            return
        seq = self._seq + 1
        with self._transaction("write") as tx:
            # Rows are encoded inside the transaction, so one that fails half-way rolls
            # back the rows already written, like any other error.
            tx.executemany(_UPSERT_TASK, map(row_of_task, tasks))
            tx.executemany(_UPSERT_SCHEDULE, ((s.id, dumps(s.to_json())) for s in schedules))
            tx.executemany("DELETE FROM tasks WHERE id = ?", ((i,) for i in delete_tasks))
            tx.executemany("DELETE FROM schedules WHERE id = ?", ((i,) for i in delete_schedules))
            tx.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (str(seq),))
        self._seq = seq
        self._maintain()

    def _maintain(self) -> None:
        """After a commit (in the caller's thread: the queue's journal IO thread), now
        and then: fold the log into the main file and record the sequence in the side
        file. A failure here loses nothing (the commit is in the log): it is logged."""
        now = time.monotonic()
        if now < self._next_checkpoint and (
                not self._wal.exists() or self._wal.stat().st_size < CHECKPOINT_WAL_BYTES):
            return
        self._next_checkpoint = now + CHECKPOINT_EVERY_S
        try:
            self._write_side(open=True)
            with self._lock:
                # PASSIVE: never waits for a reader (a backup), never blocks commits.
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except (sqlite3.Error, OSError) as err:
            logger.bind(action="journal_checkpoint_failed").warning(
                "journal checkpoint at {} failed ({}); the log keeps every commit",
                self._path, err)

    def _write_side(self, *, open: bool) -> None:
        meta = self._meta
        write_side(self._path, SideFile(
            journal_id=self._journal_id, queue=meta.get("queue"),
            shard=int(meta.get("shard", "0")), shards=int(meta.get("shards", "1")),
            schema=SCHEMA_VERSION, seq=self._seq, open=open))

    def count(self, table: Literal["tasks", "schedules"] = "tasks") -> int:
        """Number of task (or schedule) rows in the journal, readable or not."""
        if table not in ("tasks", "schedules"):
            raise ValueError(f"no table {table!r}")
        with self._transaction("read", begin="BEGIN") as tx:
            (n,) = tx.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(n)

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file and empty it, so the file
        alone holds every committed batch (before it is copied or moved).

        Raises:
            StorageBusyError: another connection kept the log from being emptied.
        """
        with self._lock:
            try:
                busy, _, _ = self._connection.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as err:
                raise _translate(err, f"journal checkpoint at {str(self._path)!r}") from err
        if busy:
            raise StorageBusyError(f"journal checkpoint at {str(self._path)!r}: another "
                                   "connection is reading or writing it")

    def close(self) -> None:
        """Fold the log into the main file (a cleanly closed journal is one file), mark
        the side file closed, and close the connection; further calls raise
        :class:`StorageError`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as err:  # the log keeps the commits; the side file says so
                logger.bind(action="journal_checkpoint_failed").warning(
                    "journal checkpoint at {} on close failed: {}", self._path, err)
            try:
                self._write_side(open=False)
            except OSError as err:
                logger.bind(action="journal_side_file_failed").warning(
                    "side file of the journal at {} not written on close: {}", self._path, err)
            self._connection.close()
            self._release_owner()  # only now: the journal is closed

    @contextmanager
    def _transaction(
        self, what: str, begin: str = "BEGIN IMMEDIATE"
    ) -> Iterator[sqlite3.Connection]:
        """Hold the lock for one transaction: commit on success, else roll back.

        SQLite and OS errors come out as the :class:`StorageError` family.
        """
        conn = self._connection
        with self._lock:
            try:
                conn.execute(begin)
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself after some FULL and IOERR errors; the
                    # first error is the one to report, not a failed second ROLLBACK.
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as err:
                raise _translate(err, f"journal {what} at {str(self._path)!r}") from err


def _translate(err: sqlite3.Error | OSError, where: str) -> StorageError:
    # Python >= 3.11 gives the result code; older ones only the message.
    code = getattr(err, "sqlite_errorcode", -1) & 0xFF
    text = str(err).lower() if isinstance(err, sqlite3.OperationalError) else ""
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text or "busy" in text:
        return StorageBusyError(f"{where} failed: another connection holds the lock ({err}); "
                                "nothing was changed: try again, and make sure only one "
                                "queue actor uses this file")
    if code == _SQLITE_FULL or "full" in text or getattr(err, "errno", 0) == errno.ENOSPC:
        return StorageFullError(f"{where} failed: {err}; nothing was changed: free disk "
                                "space, then try again")
    return StorageError(f"{where} failed ({type(err).__name__}: {err}); nothing was changed, "
                        "try again")
