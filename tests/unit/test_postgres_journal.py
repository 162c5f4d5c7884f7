"""The PostgreSQL journal against a real server (tests/pg.py): fencing, refusal of
missing, foreign and newer schemas, and faults (a killed backend, a statement timeout,
the server restarting mid-run). The Storage contract itself runs in
test_storage_contract.py over every backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import fields, replace
from typing import Any

import pytest
from loguru import logger

from rayqueue import (
    IntervalSpec,
    JournalCorruptError,
    JournalFencedError,
    JournalNotFoundError,
    QueueCore,
    StorageError,
    StorageFullError,
    TaskState,
)
from rayqueue.storage.identity import JournalIdentity
from tests.pg import PgServer, unique_queue
from tests.unit.test_storage_contract import _Unencodable, rec, sched

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install "
                              "'rayqueue[postgres]'")

from rayqueue.storage.postgres import PostgresStorage, redact, schema_name  # noqa: E402


@pytest.fixture
def queue() -> str:
    return unique_queue()


@pytest.fixture
def opened(pg_url: str, queue: str) -> Iterator[list[PostgresStorage]]:
    """Every journal a test opens, closed at its end."""
    stores: list[PostgresStorage] = []
    yield stores
    for store in stores:
        store.close()


def open_journal(url: str, queue: str, opened: list[PostgresStorage],
                 **options: Any) -> PostgresStorage:
    store = PostgresStorage(url, identity=JournalIdentity(queue=queue), **options)
    opened.append(store)
    return store


def admin(url: str) -> Any:
    return psycopg.connect(url, autocommit=True)


def ids(store: PostgresStorage) -> set[str]:
    return {r.id for r in store.load().tasks}


# ------------------------------------------------------------------ fencing
def test_a_second_opener_fences_the_first(pg_url: str, queue: str,
                                          opened: list[PostgresStorage]) -> None:
    first = open_journal(pg_url, queue, opened)
    first.write(tasks=[rec("a")])
    second = open_journal(pg_url, queue, opened)
    assert second.epoch == first.epoch + 1 and ids(second) == {"a"}
    with pytest.raises(JournalFencedError) as info:
        first.write(tasks=[rec("zombie")], delete_tasks=["a"],
                    schedules=[sched("s", IntervalSpec(5))])
    assert (info.value.epoch, info.value.current) == (first.epoch, second.epoch)
    # Nothing of the fenced batch is stored, and the fenced journal stays fenced:
    # no later call reads or writes, even one the database would accept.
    assert ids(second) == {"a"} and second.load().schedules == [] and second.seq == 1
    for call in (first.load, lambda: first.write(tasks=[rec("b")]), first.count):
        with pytest.raises(JournalFencedError):
            call()
    second.write(tasks=[rec("c")])
    assert ids(second) == {"a", "c"}


def test_an_opener_waits_for_a_commit_in_flight_then_fences_it(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    first = open_journal(pg_url, queue, opened)
    first.write(tasks=[rec("a")])
    # Hold the owner row as a commit in flight does: the new opener must wait for it.
    blocker = admin(pg_url)
    blocker.execute("BEGIN")
    blocker.execute(f'SELECT * FROM "{first.schema}".queue_owner FOR UPDATE')
    started: list[PostgresStorage] = []
    opener = threading.Thread(target=lambda: started.append(
        open_journal(pg_url, queue, opened)))
    opener.start()
    opener.join(timeout=0.5)
    assert opener.is_alive() and not started  # waiting on the row lock
    blocker.execute("COMMIT")
    opener.join(timeout=30)
    assert started and started[0].epoch == first.epoch + 1
    blocker.close()
    with pytest.raises(JournalFencedError):
        first.write(tasks=[rec("b")])


def test_reopening_recovers_everything_at_a_newer_epoch(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    first = open_journal(pg_url, queue, opened)
    core = QueueCore(storage=first)
    from tests.unit.test_storage_contract import drive
    drive(core)
    first.close()
    again = open_journal(pg_url, queue, opened, create=False)
    assert again.epoch == first.epoch + 1 and again.seq == first.seq
    recovered = QueueCore.recover(again, core.config)
    assert recovered.stats() == core.stats()
    with pytest.raises(StorageError, match="closed"):
        first.write(tasks=[rec("x")])


# ------------------------------------------------------------------ refusals
def test_a_missing_journal_is_refused_unless_create(pg_url: str, queue: str,
                                                     opened: list[PostgresStorage]) -> None:
    with pytest.raises(JournalNotFoundError, match="refuses to start with an empty queue"):
        open_journal(pg_url, queue, opened, create=False)
    with admin(pg_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (f"rayqueue_{queue}",)).fetchone() is None


def test_a_foreign_schema_is_refused_and_left_as_it_was(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    with admin(pg_url) as conn:
        conn.execute(f'CREATE SCHEMA "rayqueue_{queue}"')
        conn.execute(f'CREATE TABLE "rayqueue_{queue}".orders (id INT)')
        conn.execute(f'INSERT INTO "rayqueue_{queue}".orders VALUES (7)')
    with pytest.raises(JournalCorruptError, match=r"not a rayqueue journal \(tables: orders"):
        open_journal(pg_url, queue, opened)
    with admin(pg_url) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                              "table_schema = %s", (f"rayqueue_{queue}",)).fetchall()
        assert tables == [("orders",)]


def test_another_queues_journal_is_refused(pg_url: str, queue: str,
                                            opened: list[PostgresStorage]) -> None:
    first = open_journal(pg_url, queue, opened)
    first.write(tasks=[rec("a")])
    with admin(pg_url) as conn:
        conn.execute(f'UPDATE "{first.schema}".meta SET value = %s WHERE key = %s',
                     ("billing", "queue"))
    with pytest.raises(JournalCorruptError, match="journal of queue 'billing'"):
        open_journal(pg_url, queue, opened)
    assert first.seq == 1 and ids(first) == {"a"}  # the refused opener took no epoch


def test_a_newer_schema_version_is_refused(pg_url: str, queue: str,
                                            opened: list[PostgresStorage]) -> None:
    first = open_journal(pg_url, queue, opened)
    with admin(pg_url) as conn:
        conn.execute(f'INSERT INTO "{first.schema}".migrations (version, name) '
                     "VALUES (99, 'from the future')")
    with pytest.raises(StorageError, match="schema version 99"):
        open_journal(pg_url, queue, opened)


def test_shards_are_schemas_of_their_own_and_long_names_stay_distinct() -> None:
    names = {schema_name(JournalIdentity(queue="q", shard=i, shards=n))
             for n in (1, 2, 4) for i in range(n)}
    assert len(names) == 7 and "rayqueue_q" in names and "rayqueue_q_shard_3_of_4" in names
    long = ["a" * 60 + "x", "a" * 60 + "y"]
    shortened = [schema_name(JournalIdentity(queue=q)) for q in long]
    assert shortened[0] != shortened[1] and all(len(s) <= 63 for s in shortened)


def test_the_password_never_shows(pg_server: PgServer) -> None:
    url = f"postgresql://rq:s3cret-pw@127.0.0.1:{pg_server.port}/postgres"
    assert "s3cret" not in redact(url) and redact(url).startswith("postgresql://rq:***@")
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    try:
        store = PostgresStorage(url, identity=JournalIdentity(queue=unique_queue()))
        store.write(tasks=[rec("a")])
        store.close()
        closed = f"postgresql://rq:s3cret-pw@127.0.0.1:{_closed_port()}/postgres"
        with pytest.raises(StorageError) as info:
            PostgresStorage(closed, identity=JournalIdentity(queue="q"), reconnect_s=0)
    finally:
        logger.remove(sink)
    assert "cannot reach" in str(info.value) and lines
    assert not any("s3cret" in text for text in [str(info.value), *lines])


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ batches and rows
def test_failure_mid_batch_rolls_back_the_whole_batch(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    journal = open_journal(pg_url, queue, opened)
    journal.write(tasks=[rec("a"), rec("old")])
    before = journal.load()
    good = sched("s1", IntervalSpec(5))
    poison = _Unencodable(**{f.name: getattr(good, f.name) for f in fields(good)})
    with pytest.raises(RuntimeError, match="cannot encode"):
        journal.write(tasks=[rec("a", state=TaskState.DEAD), rec("b")], schedules=[good, poison],
                      delete_tasks=["old"])
    assert journal.load() == before and journal.seq == 1
    journal.write(tasks=[rec("b")])
    assert journal.count() == 3 and journal.seq == 2


def test_corrupt_rows_load_dead_or_are_skipped(pg_url: str, queue: str,
                                                opened: list[PostgresStorage]) -> None:
    journal = open_journal(pg_url, queue, opened)
    journal.write(tasks=[rec("a"), rec("b", priority=80)], schedules=[sched("s", IntervalSpec(5))])
    with journal.raw() as conn:
        conn.execute(f'UPDATE "{journal.schema}".tasks SET record = %s WHERE id = %s',
                     ("{not json", "a"))
        conn.execute(f'UPDATE "{journal.schema}".schedules SET record = %s', ("[]",))
    state = journal.load()
    tasks = {r.id: r for r in state.tasks}
    assert tasks["a"].state is TaskState.DEAD and tasks["a"].reason == "corrupt_record"
    assert tasks["b"] == rec("b", priority=80) and state.schedules == []


def test_disk_full_and_other_server_errors_map_to_the_tree(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    # A real full disk needs a server on a tiny file system; the mapping is checked
    # here on the error classes psycopg raises for those SQLSTATEs.
    journal = open_journal(pg_url, queue, opened)
    assert isinstance(journal._translate(psycopg.errors.DiskFull("no space"), "write"),
                      StorageFullError)
    err = journal._translate(psycopg.errors.QueryCanceled("canceling"), "write")
    assert type(err) is StorageError and "statement timeout" in str(err)


# ------------------------------------------------------------------ faults
def test_a_killed_backend_is_reconnected_and_nothing_is_lost(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    journal = open_journal(pg_url, queue, opened)
    journal.write(tasks=[rec("a")])
    with journal.raw() as conn:
        pid = conn.info.backend_pid
    with admin(pg_url) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    journal.write(tasks=[rec("b")])
    with journal.raw() as conn:
        assert conn.info.backend_pid != pid  # the fault happened: a new connection wrote
    assert ids(journal) == {"a", "b"} and journal.seq == 2


def test_a_statement_timeout_refuses_the_batch_whole(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    # 2 s, not less: opening runs its own statements under the same timeout (schema,
    # tables, owner row), and on a loaded 2-core machine one ran past 300 ms.
    journal = open_journal(pg_url, queue, opened, statement_timeout_ms=2000)
    journal.write(tasks=[rec("a")])
    blocker = admin(pg_url)
    blocker.execute("BEGIN")
    blocker.execute(f'LOCK TABLE "{journal.schema}".tasks IN ACCESS EXCLUSIVE MODE')
    with pytest.raises(StorageError, match="statement timeout") as info:
        journal.write(tasks=[rec("b"), rec("a", state=TaskState.DEAD)])
    assert type(info.value) is StorageError
    blocker.execute("ROLLBACK")
    blocker.close()
    assert journal.load().tasks == [rec("a")] and journal.seq == 1
    journal.write(tasks=[rec("c")])
    assert ids(journal) == {"a", "c"} and journal.seq == 2


def test_a_connection_left_unusable_by_an_error_is_replaced(
        pg_server: PgServer, queue: str, opened: list[PostgresStorage]) -> None:
    """A server shutting down mid-``executemany`` can leave the connection in an aborted
    pipeline that refuses every later statement while its socket looks open (CI saw a
    journal refuse every write after a restart). Put it in that state through libpq: the
    next write must replace the connection, not fail forever."""
    journal = open_journal(pg_server.url, queue, opened)
    journal.write(tasks=[rec("a")])
    with journal.raw() as conn:
        held = conn
    held.pgconn.enter_pipeline_mode()  # behind psycopg's back, as the aborted pipeline is
    # The state is the real one: psycopg itself can no longer open a transaction on it.
    with pytest.raises(psycopg.Error, match="pipeline mode"), held.transaction():
        pass
    journal.write(tasks=[rec("b")])
    journal.write(tasks=[rec("c")])
    assert held.closed  # the unusable connection was dropped
    journal.close()
    again = open_journal(pg_server.url, queue, opened)
    assert {t.id for t in again.load().tasks} == {"a", "b", "c"}


def test_the_server_restarting_mid_run_loses_nothing_acknowledged(
        pg_server: PgServer, queue: str, opened: list[PostgresStorage]) -> None:
    journal = open_journal(pg_server.url, queue, opened, reconnect_s=30)
    with journal.raw() as conn:
        pid = conn.info.backend_pid
    acked: list[str] = []
    refused: list[StorageError] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            task_id = f"t{n}"
            n += 1
            try:
                journal.write(tasks=[rec(task_id)])
                acked.append(task_id)
            except StorageError as err:  # allowed: typed, and nothing acknowledged
                refused.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _wait(lambda: len(acked) >= 20)
        pg_server.ctl("restart")
        at_restart = len(acked)
        _wait(lambda: len(acked) >= at_restart + 20)
    finally:
        stop.set()
        thread.join(timeout=60)
    with journal.raw() as conn:
        assert conn.info.backend_pid != pid  # the fault happened: the server restarted
    journal.close()
    again = open_journal(pg_server.url, queue, opened, create=False)
    stored = ids(again)
    assert set(acked) <= stored and again.seq == len(stored)
    assert all(not isinstance(err, JournalFencedError) for err in refused)


def _wait(done: Any, timeout: float = 60.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if done():
            return
        event.wait(0.05)
    raise AssertionError("condition not reached in time")


def test_records_keep_every_field(pg_url: str, queue: str,
                                  opened: list[PostgresStorage]) -> None:
    journal = open_journal(pg_url, queue, opened, durability="process")
    written = [replace(rec("u"), payload='{"s":"Zoë 🚀 \\u0000"}', result='"ü"')]
    journal.write(tasks=written)
    assert journal.load().tasks == written


def test_a_queue_with_journals_of_another_shard_count_is_refused(
        pg_url: str, queue: str, opened: list[PostgresStorage]) -> None:
    for i in range(2):
        PostgresStorage(pg_url, identity=JournalIdentity(queue=queue, shard=i, shards=2)).close()
    with pytest.raises(ValueError, match=f"schemas rayqueue_{queue}_shard_0_of_2, "
                                         f"rayqueue_{queue}_shard_1_of_2"):
        open_journal(pg_url, queue, opened)
    with admin(pg_url) as conn:  # nothing was created for the refused count
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (f"rayqueue_{queue}",)).fetchone() is None
    again = PostgresStorage(pg_url, identity=JournalIdentity(queue=queue, shard=0, shards=2))
    opened.append(again)


def test_cli_check_reads_every_shard_without_fencing_the_owner(
        pg_server: PgServer, queue: str, opened: list[PostgresStorage],
        capsys: pytest.CaptureFixture[str]) -> None:
    from rayqueue.cli import main as cli

    url = f"postgresql://rq:s3cret@127.0.0.1:{pg_server.port}/postgres"
    shards = [PostgresStorage(url, identity=JournalIdentity(queue=queue, shard=i, shards=2))
              for i in range(2)]
    opened.extend(shards)
    shards[1].write(tasks=[rec("a"), rec("b", state=TaskState.DEAD)])
    assert cli(["--queue", queue, "journal", "check", "--journal", url]) == 0
    out = capsys.readouterr().out
    assert f"rayqueue_{queue}_shard_0_of_2" in out and f"rayqueue_{queue}_shard_1_of_2" in out
    assert "tasks dead" in out and "epoch 1" in out and "s3cret" not in out
    shards[1].write(tasks=[rec("c")])  # the check took no epoch: the owner still writes
    assert cli(["--queue", "nosuchqueue", "journal", "check", "--journal", url]) == 3
    assert cli(["--queue", queue, "journal", "backup", "x", "--journal", url]) == 2
    assert cli(["--queue", queue, "reshard", "--shards", "3", "--journal", url]) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "s3cret" not in err


@pytest.mark.parametrize("cut", ["before", "after"])
def test_a_connection_cut_mid_commit_is_resolved_by_the_sequence(
        pg_server: PgServer, queue: str, opened: list[PostgresStorage], cut: str) -> None:
    """Cut before the server got COMMIT: the batch rolled back and is written once
    more. Cut after it committed: the batch is in, and is not written again. Either
    way the write returns, the batch is there once, and the sequence counts it once."""
    from tests.pg import CutProxy

    proxy = CutProxy(pg_server.port)
    try:
        journal = open_journal(proxy.url(), queue, opened)
        journal.write(tasks=[rec("a")])
        proxy.armed = cut
        journal.write(tasks=[rec("b")], delete_tasks=["a"])
        assert proxy.cuts == 1  # the fault happened
        assert journal.seq == 2 and ids(journal) == {"b"}
        with admin(pg_server.url) as conn:
            assert conn.execute(f'SELECT seq FROM "{journal.schema}".queue_owner'
                                ).fetchone() == (2,)
        journal.write(tasks=[rec("c")])
        assert ids(journal) == {"b", "c"} and journal.seq == 3
    finally:
        proxy.close()


def test_a_commit_whose_outcome_was_lost_is_settled_by_the_next_load(
        pg_server: PgServer, queue: str, opened: list[PostgresStorage]) -> None:
    """The connection drops after the server committed, and the server stays out of
    reach past reconnect_s: the write fails typed (it cannot tell), the reload that
    follows (the queue reloads after every failed commit) shows the batch, and the
    journal writes on, not mistaking its own commit for another owner's."""
    from tests.pg import CutProxy

    proxy = CutProxy(pg_server.port)
    try:
        journal = open_journal(proxy.url(), queue, opened, reconnect_s=0.5)
        journal.write(tasks=[rec("a")])
        proxy.armed, proxy.down_after_cut = "after", True
        with pytest.raises(StorageError, match="whether it landed cannot be told") as info:
            journal.write(tasks=[rec("b")])
        assert type(info.value) is StorageError and proxy.cuts == 1
        proxy.down = False
        assert ids(journal) == {"a", "b"} and journal.seq == 2
        journal.write(tasks=[rec("c")])
        assert ids(journal) == {"a", "b", "c"} and journal.seq == 3
    finally:
        proxy.close()
