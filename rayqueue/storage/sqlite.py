"""SQLiteStorage: the Storage protocol as a local SQLite file in WAL mode."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN, Priority
from rayqueue.core.record import ErrorInfo, ScheduleRecord, TaskRecord, TaskState, dumps
from rayqueue.errors import JournalNotFoundError, StorageBusyError, StorageError, StorageFullError
from rayqueue.storage.base import StoredState

#: Version of the table layout below; a journal with another version is refused.
SCHEMA_VERSION = 1

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

    Raises:
        JournalNotFoundError: ``create`` is false and there is no file at ``path``.
        StorageError: the file cannot be opened as a journal (permissions, not a
            database, WAL unsupported, another schema version).
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
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'process', got {durability!r}")
        self._path = Path(path)
        self._lock = threading.Lock()
        if not create and not self._path.exists():
            raise JournalNotFoundError(str(self._path))
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
            self._connection.text_factory = _text
        except (sqlite3.Error, OSError) as err:
            raise StorageError(f"cannot open the journal at {str(self._path)!r}: {err}") from err
        try:
            self._setup(_SYNCHRONOUS[durability], busy_timeout_ms, exclusive)
        except BaseException:
            self._connection.close()
            raise

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _setup(self, synchronous: str, busy_timeout_ms: int, exclusive: bool) -> None:
        conn = self._connection
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if exclusive:  # before WAL is first used: then no shared memory, one owner
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except sqlite3.Error as err:
            raise _translate(err, f"opening the journal at {str(self._path)!r}") from err
        if str(mode).lower() != "wal":
            raise StorageError(f"cannot use WAL mode for the journal at {str(self._path)!r} "
                               f"(got {mode!r}): put it on a local file system")
        with self._transaction("setup", begin="BEGIN EXCLUSIVE" if exclusive
                               else "BEGIN IMMEDIATE") as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
            tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
            query = "SELECT value FROM meta WHERE key = 'schema_version'"
            (version,) = tx.execute(query).fetchone()
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
        tasks = [rec for rec in map(_task_of_row, task_rows) if rec is not None]
        schedules = [s for s in map(_schedule_of_row, schedule_rows) if s is not None]
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
        with self._transaction("write") as tx:
            # Rows are encoded inside the transaction, so one that fails half-way rolls
            # back the rows already written, like any other error.
            tx.executemany(_UPSERT_TASK, map(_row_of_task, tasks))
            tx.executemany(_UPSERT_SCHEDULE, ((s.id, dumps(s.to_json())) for s in schedules))
            tx.executemany("DELETE FROM tasks WHERE id = ?", ((i,) for i in delete_tasks))
            tx.executemany("DELETE FROM schedules WHERE id = ?", ((i,) for i in delete_schedules))

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
        """Close the connection; further calls raise :class:`StorageError`."""
        with self._lock:
            self._connection.close()

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


def _text(raw: bytes) -> str | bytes:
    # Text that is not UTF-8 comes back as bytes, so one bad row cannot fail a whole load.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _row_of_task(rec: TaskRecord) -> tuple[str, str, str, str, str]:
    data = rec.to_json()
    del data["payload"]
    return rec.id, rec.task_name, rec.state.value, rec.payload, dumps(data)


def _task_of_row(row: tuple[Any, ...]) -> TaskRecord | None:
    task_id, task_name, payload, record = row
    readable = all(isinstance(v, str) for v in (task_id, task_name, payload))
    data: Any = None
    try:
        data = json.loads(record)
        if not readable or data["id"] != task_id:
            raise ValueError("the id, task_name or payload column is not valid text")
        return TaskRecord.from_json({**data, "payload": payload})
    except Exception as err:  # any decoding problem: recovery goes on without the row
        logger.bind(action="journal_row_invalid", table="tasks", task_id=task_id).warning(
            "undecodable journal row {!r} ({}: {}); {}", task_id, type(err).__name__, err,
            "loaded as dead (corrupt_record)" if readable else "skipped",
        )
        if not readable:
            return None
        return _corrupt(task_id, task_name, payload, data if isinstance(data, dict) else {}, err)


def _corrupt(
    task_id: str, task_name: str, payload: str, data: dict[str, Any], err: Exception
) -> TaskRecord:
    """A dead record for a row that does not decode, with what fields still can be read."""

    def get(key: str, kind: type[Any], default: Any) -> Any:
        value = data.get(key)
        return value if type(value) is kind else default

    priority = get("priority", int, Priority.NORMAL)
    updated = get("updated_at", float, 0.0)
    return TaskRecord(
        id=task_id,
        task_name=task_name,
        payload=payload,
        priority=priority if PRIORITY_MIN <= priority <= PRIORITY_MAX else Priority.NORMAL,
        pool=get("pool", str, "default"),
        state=TaskState.DEAD,
        seq=get("seq", int, 0),
        created_at=get("created_at", float, 0.0),
        due_at=get("due_at", float, 0.0),
        updated_at=updated,
        finished_at=updated,
        error=ErrorInfo.of("CorruptRecord", f"journal row could not be decoded: {err!r}"),
        reason="corrupt_record",
    )


def _schedule_of_row(row: tuple[Any, ...]) -> ScheduleRecord | None:
    schedule_id, record = row
    try:
        return ScheduleRecord.from_json(json.loads(record))
    except Exception as err:  # no dead state for schedules: skip it, loudly
        log = logger.bind(action="journal_row_invalid", table="schedules", schedule_id=schedule_id)
        log.warning("undecodable schedule row {!r} skipped ({!r})", schedule_id, err)
        return None

