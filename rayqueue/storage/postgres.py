"""PostgresStorage: the Storage protocol in a PostgreSQL schema, fenced by an owner epoch.

A journal is one schema per queue shard (``rayqueue_<queue>``, or
``rayqueue_<queue>_shard_<i>_of_<n>``) holding the same ``tasks`` and ``schedules`` rows
as the SQLite journal (same codec), a ``meta`` table with its identity (queue, shard,
shard count, schema version, a random journal id), a one-row ``queue_owner`` table (the
owner epoch and the commit sequence) and ``migrations`` (see
:mod:`rayqueue.storage.pg_migrations`).

Fencing: every opener bumps the epoch and keeps the value it got; every commit begins
with ``UPDATE queue_owner SET seq = seq + 1 WHERE epoch = <mine>``, which takes the
row's lock for the rest of the transaction. An old incarnation still alive (frozen,
behind a partition) finds no row to update once a new one opened the journal, and gets
:class:`~rayqueue.errors.JournalFencedError` with nothing written; from then on it
refuses every call. The row lock also orders an opener after a commit in flight.

A lost connection (a server restart, a killed backend) is reconnected within
``reconnect_s``; the commit sequence then tells whether the batch in flight landed (the
commit is acknowledged) or not (it is written once more), so nothing acknowledged is
lost and nothing is applied twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import psycopg
from loguru import logger
from psycopg import errors as pgerr
from psycopg import pq, sql

from rayqueue.core.record import ScheduleRecord, TaskRecord, dumps
from rayqueue.errors import (
    JournalCorruptError,
    JournalFencedError,
    JournalNotFoundError,
    StorageBusyError,
    StorageError,
    StorageFullError,
)
from rayqueue.storage.base import StoredState
from rayqueue.storage.codec import row_of_task, schedule_of_row, task_of_row
from rayqueue.storage.identity import JournalIdentity
from rayqueue.storage.pg_migrations import MIGRATIONS, PG_SCHEMA_VERSION
from rayqueue.storage.url import is_postgres_url, redact

#: PostgreSQL truncates identifiers past this many bytes.
_MAX_IDENT = 63
_SYNCHRONOUS = {"full": "on", "process": "off"}


def schema_name(identity: JournalIdentity) -> str:
    """The schema of a queue shard's journal; a name PostgreSQL would truncate is
    shortened with a hash, so two queues never share a schema."""
    base = f"rayqueue_{identity.queue}"
    if identity.shards > 1:
        base += f"_shard_{identity.shard}_of_{identity.shards}"
    if len(base.encode()) <= _MAX_IDENT:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{base.encode()[:_MAX_IDENT - 13].decode(errors='ignore')}_{digest}"


class PostgresStorage:
    """A queue shard's journal in a PostgreSQL schema: one transaction per batch.

    Args:
        url: a libpq URL, ``postgresql://user@host:port/db``. Give the password through
            ``PGPASSWORD`` or a ``.pgpass`` file rather than in the URL; one in the URL
            is never logged (:func:`redact`).
        identity: whose journal this is: its queue names the schema, and an existing
            schema of another queue or shard is refused.
        durability: ``"full"`` (``synchronous_commit = on``: a commit is on the server's
            disk) or ``"process"`` (``off``: a crash of the PostgreSQL server may undo
            the last fraction of a second of commits).
        create: start an empty journal if the schema is missing. A restarted queue
            passes ``False``: a missing schema is an error, not an empty queue.
        statement_timeout_ms: a statement running longer is cancelled, and its batch
            refused with :class:`~rayqueue.errors.StorageError`.
        reconnect_s: how long a lost connection is retried before a commit or load
            fails with :class:`~rayqueue.errors.StorageError`.
        connect_timeout_s: the timeout of one connection attempt.

    Raises:
        JournalNotFoundError: ``create`` is false and the schema does not exist.
        JournalCorruptError: the schema is not a rayqueue journal, or another queue's.
        StorageError: the server cannot be reached, or the schema has a newer version.
        ValueError: an unknown ``durability`` or a URL that is not ``postgresql://``.
    """

    def __init__(
        self,
        url: str,
        *,
        identity: JournalIdentity,
        durability: Literal["full", "process"] = "full",
        create: bool = True,
        statement_timeout_ms: int = 30_000,
        reconnect_s: float = 15.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'process', got {durability!r}")
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}")
        if identity.queue is None:
            raise ValueError("a PostgreSQL journal needs its queue's name (identity.queue)")
        self._url = url
        self._schema = schema_name(identity)
        self._s = sql.Identifier(self._schema)
        #: what errors and logs call this journal (no password)
        self.name = f"{redact(url)} (schema {self._schema})"
        self._synchronous = _SYNCHRONOUS[durability]
        self._statement_timeout_ms = int(statement_timeout_ms)
        self._reconnect_s = float(reconnect_s)
        self._connect_timeout_s = max(1, int(connect_timeout_s))
        self._lock = threading.Lock()
        self._closed = False
        self._fenced: JournalFencedError | None = None
        #: whether ``_seq`` is the journal's sequence for sure (not after a commit whose
        #: outcome was lost with its connection); the sequence a commit in progress got,
        #: and the one the last load read
        self._seq_known = True
        self._committing = self._loaded_seq = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._conn = self._connect()
        try:
            self._epoch, self._seq, self._meta = self._open(identity, create)
        except BaseException:
            self._conn.close()
            raise
        logger.bind(action="journal_opened", epoch=self._epoch).debug(
            "journal {} opened at epoch {}, commit #{}", self.name, self._epoch, self._seq)

    # ------------------------------------------------------------------ properties
    @property
    def schema(self) -> str:
        """The schema that holds this journal."""
        return self._schema

    @property
    def epoch(self) -> int:
        """The owner epoch this opener took."""
        return self._epoch

    @property
    def seq(self) -> int:
        """The number of the last committed batch."""
        return self._seq

    @property
    def journal_id(self) -> str:
        """The journal's random identity, kept for its whole life."""
        return self._meta["journal_id"]

    # ------------------------------------------------------------------ opening
    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection, retried until ``reconnect_s`` has passed."""
        deadline = time.monotonic() + self._reconnect_s
        pause = threading.Event()
        while True:
            try:
                # The server ends a session left idle inside a transaction (its client
                # gone mid-commit), so the owner row it holds is not held for long; both
                # ends probe a silent peer with TCP keepalives.
                timeout = self._statement_timeout_ms
                conn = psycopg.connect(
                    self._url, autocommit=False, connect_timeout=self._connect_timeout_s,
                    application_name="rayqueue", keepalives=1, keepalives_idle=10,
                    keepalives_interval=5, keepalives_count=3,
                    options=f"-c statement_timeout={timeout}"
                            f" -c idle_in_transaction_session_timeout={timeout}"
                            f" -c synchronous_commit={self._synchronous}"
                            " -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5"
                            " -c tcp_keepalives_count=3")
                return conn
            except psycopg.OperationalError as err:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"cannot reach the PostgreSQL journal {self.name}: "
                        f"{_scrub(err, self._url)}; nothing was changed, try again once the "
                        "server is up") from None
                pause.wait(0.2)

    def _open(self, identity: JournalIdentity,
              create: bool) -> tuple[int, int, dict[str, str]]:
        conn = self._connection()
        s = self._s
        try:
            with conn.transaction():
                # One opener at a time creates or migrates a schema.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"rayqueue:{self._schema}",))
                exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                      (self._schema,)).fetchone() is not None
                tables = {r[0] for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (self._schema,))}
                if not tables and not create:
                    raise JournalNotFoundError(self.name, hint=(
                        "there is no such schema, or it is empty: the queue refuses to start "
                        "with an empty queue. Check the URL (the database) and the queue "
                        "name, or restore the schema from a backup"))
                if tables and "migrations" not in tables:
                    raise JournalCorruptError(self.name, "the schema exists but is not a "
                                              "rayqueue journal (tables: "
                                              f"{', '.join(sorted(tables))})")
                if not tables and identity.shard == 0:
                    self._check_layout(conn, identity)
                if not exists:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
                if not tables:
                    conn.execute(sql.SQL(
                        "CREATE TABLE {}.migrations (version INT PRIMARY KEY, name TEXT NOT "
                        "NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(s))
                row = conn.execute(sql.SQL("SELECT max(version) FROM {}.migrations")
                                   .format(s)).fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
                if version > PG_SCHEMA_VERSION:
                    raise StorageError(
                        f"the journal {self.name} has schema version {version}, this rayqueue "
                        f"reads version {PG_SCHEMA_VERSION}: use a matching rayqueue version")
                for number, title, statements in MIGRATIONS:
                    if number > version:
                        for statement in statements:
                            conn.execute(sql.SQL(statement).format(s=s))
                        conn.execute(sql.SQL("INSERT INTO {}.migrations (version, name) "
                                             "VALUES (%s, %s)").format(s), (number, title))
                defaults = {"schema_version": str(PG_SCHEMA_VERSION),
                            "journal_id": uuid.uuid4().hex, "queue": identity.queue,
                            "shard": str(identity.shard), "shards": str(identity.shards)}
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL("INSERT INTO {}.meta (key, value) VALUES (%s, %s) "
                                            "ON CONFLICT (key) DO NOTHING").format(s),
                                    list(defaults.items()))
                meta = {str(k): str(v) for k, v in conn.execute(
                    sql.SQL("SELECT key, value FROM {}.meta").format(s))}
                conn.execute(sql.SQL("UPDATE {}.meta SET value = %s WHERE key = "
                                     "'schema_version'").format(s), (str(PG_SCHEMA_VERSION),))
                wrong = {k: meta.get(k) for k in ("queue", "shard", "shards")
                         if meta.get(k) != defaults[k]}
                if wrong:
                    raise JournalCorruptError(self.name, (
                        f"it is the journal of queue {meta.get('queue')!r}, shard "
                        f"{meta.get('shard')} of {meta.get('shards')}, not of queue "
                        f"{identity.queue!r}, shard {identity.shard} of {identity.shards}"))
                me = f"pid {os.getpid()} on {socket.gethostname()}"
                owned = conn.execute(sql.SQL(
                    "UPDATE {}.queue_owner SET epoch = epoch + 1, owner = %s, since = now() "
                    "RETURNING epoch, seq").format(s), (me,)).fetchone()
                if owned is None:
                    raise JournalCorruptError(self.name, "its queue_owner row is missing")
        except psycopg.Error as err:
            raise self._translate(err, "open") from None
        return int(owned[0]), int(owned[1]), meta

    def _check_layout(self, conn: psycopg.Connection[Any], identity: JournalIdentity) -> None:
        """Before a queue's first shard is created: refuse if its journals exist with
        another shard count (their tasks hash to other shards; starting fresh beside
        them would hide them)."""
        queue = str(identity.queue)
        rows = conn.execute(
            "SELECT n.nspname FROM pg_namespace n JOIN information_schema.tables t ON "
            "t.table_schema = n.nspname AND t.table_name = 'migrations' WHERE n.nspname = "
            "%s OR n.nspname LIKE %s", (f"rayqueue_{queue}", f"rayqueue_{_like(queue)}%"))
        shard = re.compile(rf"rayqueue_{re.escape(queue)}_shard_\d+_of_(\d+)")

        def count(name: str) -> int | None:
            if name == f"rayqueue_{queue}":
                return 1
            m = shard.fullmatch(name)
            return int(m[1]) if m else None

        others = [name for (name,) in rows if count(name) not in (None, identity.shards)]
        if others:
            raise ValueError(
                f"journals of queue {queue!r} for another shard count exist in "
                f"{redact(self._url)}: schemas {', '.join(sorted(others))}. Start the queue "
                "with the shard count they were written with")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StorageError(f"the journal {self.name} is closed")
        if self._fenced is not None:
            raise self._fenced
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    # ------------------------------------------------------------------ protocol
    def load(self) -> StoredState:
        """Every stored task and schedule, as the SQLite journal loads them (an
        undecodable task row comes back dead, reason ``corrupt_record``).

        Raises:
            JournalFencedError: a newer owner opened the journal.
            StorageError: the server cannot be reached or the read fails.
        """
        s = self._s

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
            self._check_epoch(conn, lock=False)
            tasks = conn.execute(sql.SQL("SELECT id, task_name, payload, record FROM {}.tasks")
                                 .format(s)).fetchall()
            schedules = conn.execute(sql.SQL("SELECT id, record FROM {}.schedules")
                                     .format(s)).fetchall()
            return tasks, schedules

        task_rows, schedule_rows = self._retrying("load", read)
        self._seq, self._seq_known = self._loaded_seq, True
        tasks = [rec for rec in map(task_of_row, task_rows) if rec is not None]
        schedules = [sch for sch in map(schedule_of_row, schedule_rows) if sch is not None]
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
            JournalFencedError: a newer owner opened the journal; nothing was written.
            StorageFullError: the server's disk is full.
            StorageBusyError: a lock was not granted in time.
            StorageError: the server could not be reached within ``reconnect_s``, a
                statement timed out, or any other database error. Other exceptions (a
                record that fails to encode) roll the batch back and propagate unchanged.
        """
        if not (tasks or schedules or delete_tasks or delete_schedules):
            return
        s = self._s

        def commit(conn: psycopg.Connection[Any]) -> None:
            self._check_epoch(conn, lock=True)
            with conn.cursor() as cur:
                if tasks:
                    cur.executemany(sql.SQL(
                        "INSERT INTO {}.tasks (id, task_name, state, payload, record) VALUES "
                        "(%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET task_name = "
                        "excluded.task_name, state = excluded.state, payload = "
                        "excluded.payload, record = excluded.record").format(s),
                        [row_of_task(t) for t in tasks])
                if schedules:
                    cur.executemany(sql.SQL(
                        "INSERT INTO {}.schedules (id, record) VALUES (%s, %s) ON CONFLICT "
                        "(id) DO UPDATE SET record = excluded.record").format(s),
                        [(sch.id, dumps(sch.to_json())) for sch in schedules])
                if delete_tasks:
                    cur.execute(sql.SQL("DELETE FROM {}.tasks WHERE id = ANY(%s)").format(s),
                                (list(delete_tasks),))
                if delete_schedules:
                    cur.execute(sql.SQL("DELETE FROM {}.schedules WHERE id = ANY(%s)")
                                .format(s), (list(delete_schedules),))

        self._retrying("write", commit, writes=True)
        self._seq, self._seq_known = self._committing, True

    def _check_epoch(self, conn: psycopg.Connection[Any], *, lock: bool) -> None:
        """In a write (``lock``): bump the commit sequence if the epoch is still mine,
        holding the owner row to the end of the transaction. In a read: check it."""
        s = self._s
        if lock:
            row = conn.execute(sql.SQL("UPDATE {}.queue_owner SET seq = seq + 1 WHERE epoch "
                                       "= %s RETURNING seq").format(s),
                               (self._epoch,)).fetchone()
            if row is not None and (int(row[0]) == self._seq + 1 or not self._seq_known):
                self._committing = int(row[0])
                return
        else:
            # FOR SHARE waits for a commit still in flight on a lost connection, so the
            # sequence read is final.
            row = conn.execute(sql.SQL("SELECT seq FROM {}.queue_owner WHERE epoch = %s "
                                       "FOR SHARE").format(s), (self._epoch,)).fetchone()
            if row is not None:
                self._loaded_seq = int(row[0])
                return
        # Not mine any more, or someone else committed under my epoch (cannot happen
        # unless the row was edited by hand): never write again.
        current = conn.execute(sql.SQL("SELECT epoch FROM {}.queue_owner").format(s)).fetchone()
        self._fence(None if current is None else int(current[0]))

    def _fence(self, current: int | None) -> NoReturn:
        self._fenced = JournalFencedError(self.name, self._epoch, current)
        logger.bind(action="journal_fenced", epoch=self._epoch, current=current).error(
            "{}", self._fenced)
        raise self._fenced

    def _retrying(self, what: str, body: Any, *, writes: bool = False) -> Any:
        """Run ``body(conn)`` in one transaction. On a lost connection, reconnect and:
        for a write, ask the commit sequence whether the batch landed (then it is
        done), else run it once more; for a read, run it once more."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.transaction():
                        return body(conn)
                except JournalFencedError:
                    raise
                except psycopg.Error as err:
                    # A connection the error left unusable counts as lost, broken or not:
                    # a server shutting down mid-``executemany`` can abort its pipeline so
                    # that the rollback fails and every later statement would be refused
                    # ("not allowed in pipeline mode") on a socket never seen to close.
                    lost = not _reusable(conn)
                    if not lost or attempt == 2:
                        if lost:
                            with suppress(Exception):
                                conn.close()
                            self._conn = None
                            if writes:
                                self._seq_known = False  # its commit may have landed
                        raise self._translate(err, what) from None
                    logger.bind(action="journal_reconnect").warning(
                        "journal {} lost its connection during {} ({}); reconnecting",
                        self.name, what, _scrub(err, self._url))
                    with suppress(Exception):
                        conn.close()
                    self._conn = None
                    if writes and self._landed(err):
                        return None
            raise AssertionError("unreachable")

    def _landed(self, lost: psycopg.Error) -> bool:
        """After a lost connection mid-commit: whether that commit is in the journal.
        ``FOR UPDATE`` waits for the old session's transaction to end either way (the
        server may still be committing it), so the answer is final.

        Raises:
            StorageError: the server is still unreachable, or the sequence before this
                commit is not known (an earlier commit's outcome was not learnt): the
                batch may or may not be in; a :meth:`load` shows which.
        """
        unknown = StorageError(
            f"journal write at {self.name}: the connection was lost during the commit "
            f"({_scrub(lost, self._url)}) and whether it landed cannot be told; reload the "
            "journal to see (nothing else was changed)")
        if not self._seq_known:
            raise unknown
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(sql.SQL("SELECT epoch, seq FROM {}.queue_owner FOR UPDATE")
                                   .format(self._s)).fetchone()
        except (psycopg.Error, StorageError) as err:
            if isinstance(err, JournalFencedError):
                raise
            self._seq_known = False
            raise unknown from None
        epoch, seq = (None, None) if row is None else (int(row[0]), int(row[1]))
        if epoch != self._epoch:
            self._fence(epoch)
        if seq == self._seq + 1:
            self._committing = seq
            return True
        if seq != self._seq:
            self._fence(epoch)
        return False

    def count(self, table: Literal["tasks", "schedules"] = "tasks") -> int:
        """Number of task (or schedule) rows in the journal, readable or not."""
        if table not in ("tasks", "schedules"):
            raise ValueError(f"no table {table!r}")

        def read(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                self._s, sql.Identifier(table))).fetchone()
            return int(row[0]) if row else 0

        return int(self._retrying("read", read))

    def close(self) -> None:
        """Close the connection; further calls raise :class:`StorageError`. Idempotent.
        The epoch stays: the next opener takes a newer one."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None:
                with suppress(Exception):
                    self._conn.close()

    @contextmanager
    def raw(self) -> Iterator[psycopg.Connection[Any]]:
        """The open connection, for tests and tools (in its own transaction)."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield conn

    def _translate(self, err: psycopg.Error, what: str) -> StorageError:
        where = f"journal {what} at {self.name}"
        text = _scrub(err, self._url)
        if isinstance(err, pgerr.DiskFull | pgerr.OutOfMemory | pgerr.InsufficientResources):
            return StorageFullError(f"{where} failed: {text}; nothing was changed: free disk "
                                    "space on the database server, then try again")
        if isinstance(err, pgerr.QueryCanceled):
            return StorageError(f"{where} failed: a statement ran past the statement "
                                f"timeout ({self._statement_timeout_ms} ms): {text}; nothing "
                                "was changed, try again")
        if isinstance(err, pgerr.LockNotAvailable | pgerr.DeadlockDetected
                      | pgerr.SerializationFailure):
            return StorageBusyError(f"{where} failed: {text}; nothing was changed: try again")
        if isinstance(err, pgerr.InsufficientPrivilege):
            return StorageError(f"{where} failed: {text}; grant the journal's role CREATE on "
                                "the database (or create the schema for it)")
        return StorageError(f"{where} failed ({type(err).__name__}: {text}); nothing was "
                            "changed, try again")


def _reusable(conn: psycopg.Connection[Any]) -> bool:
    """Whether a connection is fit for the next transaction after an error: open, idle
    outside any transaction, and out of pipeline mode."""
    info = conn.info
    return (not conn.broken and not conn.closed
            and info.transaction_status == pq.TransactionStatus.IDLE
            and info.pipeline_status == pq.PipelineStatus.OFF)


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def _scrub(err: BaseException, url: str) -> str:
    """An error's text without the URL's password, should libpq quote it."""
    text = str(err).strip()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


@dataclass(frozen=True)
class PgInspection:
    """What a read-only look at one shard's journal schema found."""

    schema: str
    meta: dict[str, str]
    epoch: int
    seq: int
    owner: str
    by_state: dict[str, int]
    schedules: int
    version: int


def inspect(url: str, queue: str) -> list[PgInspection]:
    """Read every journal schema of queue ``queue`` without changing a row (no epoch is
    taken: a running queue is not fenced by it).

    Raises:
        JournalNotFoundError: the queue has no journal schema in this database.
        StorageError: the server cannot be reached or a schema cannot be read.
    """
    name = redact(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5,
                             application_name="rayqueue-check") as conn:
            rows = conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = "
                "'queue_owner' AND (table_schema = %s OR table_schema LIKE %s) ORDER BY 1",
                (f"rayqueue_{queue}", f"rayqueue_{_like(queue)}\\_shard\\_%")).fetchall()
            found = []
            for (schema,) in rows:
                s = sql.Identifier(schema)
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                meta = {str(k): str(v) for k, v in conn.execute(
                    sql.SQL("SELECT key, value FROM {}.meta").format(s))}
                owner = conn.execute(sql.SQL("SELECT epoch, seq, owner FROM {}.queue_owner")
                                     .format(s)).fetchone()
                by_state = {str(k): int(v) for k, v in conn.execute(sql.SQL(
                    "SELECT state, count(*) FROM {}.tasks GROUP BY state").format(s))}
                count = conn.execute(sql.SQL("SELECT count(*) FROM {}.schedules").format(s)
                                     ).fetchone()
                version = conn.execute(sql.SQL("SELECT max(version) FROM {}.migrations")
                                       .format(s)).fetchone()
                conn.execute("COMMIT")
                if owner is None:
                    raise JournalCorruptError(f"{name} (schema {schema})",
                                              "its queue_owner row is missing")
                found.append(PgInspection(
                    schema=schema, meta=meta, epoch=int(owner[0]), seq=int(owner[1]),
                    owner=str(owner[2]), by_state=by_state,
                    schedules=int(count[0]) if count else 0,
                    version=int(version[0]) if version and version[0] is not None else 0))
    except psycopg.Error as err:
        raise StorageError(f"cannot read the journal of queue {queue!r} at {name}: "
                           f"{_scrub(err, url)}") from None
    if not found:
        raise JournalNotFoundError(name, hint=f"no journal schema of queue {queue!r} "
                                   f"(rayqueue_{queue}) in this database")
    return found
