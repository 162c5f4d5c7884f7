"""The Storage contract, run against every backend, plus SQLite and fault-injection specifics."""

from __future__ import annotations

import json
import os
import pickle
import random
import sqlite3
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from loguru import logger

from rayqueue import (
    CronSpec,
    ErrorInfo,
    Failure,
    IntervalSpec,
    JournalNotFoundError,
    MisfirePolicy,
    QueueCore,
    RetryPolicy,
    ScheduleRecord,
    Storage,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TaskRecord,
    TaskState,
)
from rayqueue.storage import FaultyStorage, InMemoryStorage, SQLiteStorage
from rayqueue.storage.faulty import FAULT_KINDS
from rayqueue.storage.identity import JournalIdentity
from tests.pg import unique_queue
from tests.unit.conftest import T0, new

R = TypeVar("R")
UNICODE = '{"name":"Zoë 日本語 🚀","rtl":"שלום","esc":"\\u0000\\n\\"q\\""}'
POLICY = RetryPolicy(max_attempts=7, backoff="fixed", base_delay=0.25, factor=1.5,
                     max_delay=12.5, jitter=False, max_lost_attempts=2)


def rec(task_id: str, **changes: Any) -> TaskRecord:
    base = TaskRecord(id=task_id, task_name="t", payload='{"x":1}', priority=50, pool="default",
                      state=TaskState.READY, seq=1, created_at=T0, due_at=T0, updated_at=T0)
    return replace(base, **changes)


def sched(schedule_id: str, spec: IntervalSpec | CronSpec) -> ScheduleRecord:
    return ScheduleRecord(id=schedule_id, task_name="t", payload=UNICODE, priority=75, pool="p",
                          spec=spec, misfire=MisfirePolicy.SKIP, next_due=T0 + 60.125,
                          created_at=T0, retry=POLICY, timeout=None, runs=3)


def by_id(records: list[R]) -> dict[str, R]:
    return {r.id: r for r in records}  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    storage: Storage
    if request.param == "postgres":  # a real server (tests/pg.py), a schema per test
        from rayqueue.storage.postgres import PostgresStorage

        url = request.getfixturevalue("pg_url")
        storage = PostgresStorage(url, identity=JournalIdentity(queue=unique_queue()))
    else:
        storage = InMemoryStorage() if request.param == "memory" else SQLiteStorage(
            tmp_path / "j.sqlite", durability="process")
    yield storage
    storage.close()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "j.sqlite", durability="process", busy_timeout_ms=50)
    yield storage
    storage.close()


# ------------------------------------------------------------------ the contract
def test_empty_storage_loads_nothing(backend: Storage) -> None:
    state = backend.load()
    assert state.tasks == [] and state.schedules == []


def test_records_round_trip_unchanged(backend: Storage) -> None:
    written = [
        rec("plain"),
        rec("dead", payload=UNICODE, state=TaskState.DEAD, retry=POLICY, timeout=2.5,
            attempts=3, lost_attempts=1, lease_token=4, finished_at=T0 + 0.1,
            error=ErrorInfo("ValueError", "bad ✗ input", "Traceback (most recent call last)\n"),
            reason="max_attempts", schedule_id="s1"),
        rec("leased", state=TaskState.LEASED, worker="w-1", lease_expires_at=T0 + 30.5,
            deadline=T0 + 1e-3, started_at=T0, priority=0, pool="gpu", seq=2),
        rec("done", state=TaskState.SUCCEEDED, result='{"ok":true,"s":"ü"}', priority=100),
    ]
    backend.write(tasks=written)
    assert by_id(backend.load().tasks) == by_id(written)


def test_upsert_overwrites_and_delete_removes(backend: Storage) -> None:
    backend.write(tasks=[rec("a"), rec("b"), rec("c")], schedules=[sched("s", IntervalSpec(5))])
    newer = rec("a", state=TaskState.LEASED, payload='{"x":2}', task_name="u", lease_token=1)
    backend.write(tasks=[newer], delete_tasks=["b", "missing"], delete_schedules=["s", "nope"])
    state = backend.load()
    assert by_id(state.tasks) == {"a": newer, "c": rec("c")} and state.schedules == []


def test_schedules_round_trip_unchanged(backend: Storage) -> None:
    written = [sched("every", IntervalSpec(60)),
               sched("cron", CronSpec("0 9 * * 1-5", "Asia/Tokyo"))]
    backend.write(schedules=written)
    assert by_id(backend.load().schedules) == by_id(written)


def drive(core: QueueCore) -> None:
    """Every kind of transition: enqueue, schedule, claim, ack, retry, death, tick."""
    core.enqueue_many([new(task_id=f"t{i}", priority=(i * 37) % 101, payload=f'{{"i":{i}}}')
                       for i in range(12)], T0)
    core.enqueue(new(task_id="later", run_at=T0 + 30, payload=UNICODE), T0)
    core.add_schedule(schedule_id="tick", task_name="t", payload="{}", spec=IntervalSpec(10),
                      now=T0, priority=60)
    ok, retried, dead, _ = core.claim("w1", 4, T0)
    core.ack(ok.task_id, ok.token, '"done"', T0 + 1)
    core.fail(retried.task_id, retried.token, Failure(ErrorInfo("OSError", "flaky")), T0 + 1)
    core.fail(dead.task_id, dead.token, Failure(ErrorInfo("E", "x"), retryable=False), T0 + 1)
    core.tick(T0 + 31)
    core.claim("w2", 1, T0 + 31)


def test_recovered_core_equals_the_original(backend: Storage) -> None:
    core = QueueCore(storage=backend, rng=random.Random(7))
    drive(core)
    again = QueueCore.recover(backend, core.config, rng=random.Random(7))
    assert again.stats() == core.stats()
    assert {i: again.get(i) for i in again.task_ids()} == {i: core.get(i) for i in core.task_ids()}
    assert again.next_wakeup() == core.next_wakeup()
    # Both hand out the same leases in the same order (w1's expired leases come back as
    # suspects, each leased alone): claims until nothing is left.
    def drain(c: QueueCore) -> list[list[Any]]:
        return list(iter(lambda: c.claim("w3", 100, T0 + 32), []))

    expected = drain(core)
    assert sum(len(x) for x in expected) > 10 and drain(again) == expected


def test_a_recovered_core_goes_on_mid_workflow(backend: Storage) -> None:
    """Pending steps, their parents and fed inputs survive every backend."""
    from rayqueue.core.record import Step

    def st(task_id: str, *parents: str, feed: str | None = None, gather: bool = False) -> Any:
        return replace(new(task_id=task_id), step=Step("wf", parents, feed, gather))

    core = QueueCore(storage=backend, rng=random.Random(7))
    core.enqueue_many([st("a"), st("b", "a", feed="x"), st("m"),
                       st("cb", "b", "m", feed="r", gather=True)], T0)
    a, _ = core.claim("w", 2, T0)
    core.ack(a.task_id, a.token, '{"n":1}', T0 + 1)
    again = QueueCore.recover(backend, core.config, rng=random.Random(7))
    assert {i: again.get(i) for i in again.task_ids()} == {i: core.get(i) for i in core.task_ids()}
    (b,) = again.claim("w2", 5, T0 + 2)
    assert b.feed == ("x", '{"n":1}')
    again.ack(b.task_id, b.token, "2", T0 + 2)
    assert again.get("cb").state.value == "pending"  # still waits for m


# ------------------------------------------------------------------ SQLite only
class _Unencodable(ScheduleRecord):
    def to_json(self) -> dict[str, Any]:
        raise RuntimeError("cannot encode")


def test_failure_mid_batch_rolls_back_the_whole_batch(journal: SQLiteStorage) -> None:
    journal.write(tasks=[rec("a"), rec("old")])
    before = journal.load()
    good = sched("s1", IntervalSpec(5))
    poison = _Unencodable(**{f.name: getattr(good, f.name) for f in fields(good)})
    with pytest.raises(RuntimeError, match="cannot encode"):
        journal.write(tasks=[rec("a", state=TaskState.DEAD), rec("b")], schedules=[good, poison],
                      delete_tasks=["old"])
    assert journal.load() == before
    journal.write(tasks=[rec("b")])  # no transaction was left open
    assert journal.count() == 3


def test_rows_keep_the_payload_in_its_own_column(journal: SQLiteStorage) -> None:
    journal.write(tasks=[rec("a", payload=UNICODE, state=TaskState.LEASED)])
    conn = journal._connection
    name, state, payload, record = conn.execute("SELECT task_name, state, payload, record "
                                                "FROM tasks").fetchone()
    assert (name, state, payload) == ("t", "leased", UNICODE)
    assert "payload" not in json.loads(record) and json.loads(record)["id"] == "a"
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)


def test_journal_and_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "j.sqlite"
    old_umask = os.umask(0)
    try:
        storage = SQLiteStorage(path)
        storage.write(tasks=[rec("a")])
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600, suffix
        storage.close()
        os.chmod(path, 0o644)
        SQLiteStorage(path).close()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("process", 1)])
def test_durability_sets_its_pragmas(tmp_path: Path, durability: Any, synchronous: int) -> None:
    storage = SQLiteStorage(tmp_path / "j.sqlite", durability=durability, busy_timeout_ms=1234)
    conn = storage._connection
    assert conn.execute("PRAGMA synchronous").fetchone() == (synchronous,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (1234,)
    storage.close()


def test_missing_journal_is_an_error_unless_create(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "j.sqlite"
    with pytest.raises(JournalNotFoundError, match="node that holds it") as info:
        SQLiteStorage(path, create=False)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).path == str(path)
    assert not path.parent.exists()
    first = SQLiteStorage(path)
    first.write(tasks=[rec("a")])
    first.close()  # one owner at a time (left to the GC, its close raced the reopen)
    reopened = SQLiteStorage(path, create=False)
    assert reopened.load().tasks == [rec("a")]
    reopened.close()


def test_another_schema_version_is_refused(journal: SQLiteStorage) -> None:
    journal._connection.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    journal.close()  # one owner at a time: the next open is the queue's restart
    with pytest.raises(StorageError, match="schema version 2"):
        SQLiteStorage(journal.path)


def test_a_held_lock_makes_writes_busy_until_released(journal: SQLiteStorage) -> None:
    other = sqlite3.connect(journal.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageBusyError, match="lock"):
        journal.write(tasks=[rec("a")])
    assert journal.count() == 0  # WAL readers are not blocked
    other.execute("COMMIT")
    journal.write(tasks=[rec("a")])
    assert journal.count() == 1
    other.close()


def test_a_full_disk_fails_whole_batches_until_space_returns(journal: SQLiteStorage) -> None:
    conn = journal._connection
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 8}")
    payload = json.dumps({"blob": "x" * 3000})

    def batch(n: int) -> list[TaskRecord]:
        return [rec(f"{n}-{i}", payload=payload) for i in range(4)]

    written = 0
    with pytest.raises(StorageFullError, match="full"):
        for written in range(100):
            journal.write(tasks=batch(written))
    assert written > 0 and journal.count() == 4 * written
    conn.execute("PRAGMA max_page_count = 1073741823")
    journal.write(tasks=batch(written))
    assert journal.count() == 4 * (written + 1)


@pytest.fixture
def invalid_rows() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    sink = logger.add(lambda m: seen.append(m.record["extra"]), level="WARNING",
                      filter=lambda r: r["extra"].get("action") == "journal_row_invalid")
    yield seen
    logger.remove(sink)


def test_corrupt_rows_do_not_stop_load(journal: SQLiteStorage,
                                       invalid_rows: list[dict[str, Any]]) -> None:
    journal.write(tasks=[rec(i, priority=80, seq=9) for i in "abcd"],
                  schedules=[sched("s", IntervalSpec(5))])
    raw = sqlite3.connect(journal.path, isolation_level=None)
    raw.execute("UPDATE tasks SET record = '{not json' WHERE id = 'a'")
    raw.execute("UPDATE tasks SET record = json_set(record, '$.state', 'exploded') WHERE id = 'b'")
    raw.execute("UPDATE tasks SET payload = CAST(X'00ff' AS TEXT) WHERE id = 'c'")
    raw.execute("UPDATE schedules SET record = '[]'")
    raw.close()
    state = journal.load()
    tasks = by_id(state.tasks)
    assert set(tasks) == {"a", "b", "d"} and state.schedules == []
    assert tasks["d"] == rec("d", priority=80, seq=9)
    for task_id, priority in (("a", 50), ("b", 80)):
        assert tasks[task_id].state is TaskState.DEAD and tasks[task_id].reason == "corrupt_record"
        assert tasks[task_id].priority == priority and tasks[task_id].payload == '{"x":1}'
    logged = sorted(str(r.get("task_id") or r.get("schedule_id")) for r in invalid_rows)
    assert logged == list("abcs")
    core = QueueCore.recover(journal)
    assert {r.id for r in core.dead_letters()} == {"a", "b"}


def test_closed_journal_raises_storage_error(journal: SQLiteStorage) -> None:
    journal.close()
    with pytest.raises(StorageError, match="closed"):
        journal.write(tasks=[rec("a")])


# ------------------------------------------------------------- fault injection
@pytest.mark.parametrize(("kind", "error"), [("busy", StorageBusyError),
                                             ("full", StorageFullError),
                                             ("ioerr", StorageError), ("timeout", StorageError)])
def test_each_fault_raises_its_error_and_writes_nothing(kind: str, error: type[Exception]) -> None:
    inner = InMemoryStorage()
    faulty = FaultyStorage(inner, rng=random.Random(0), faults={kind: 1.0})
    with pytest.raises(error) as info:
        faulty.write(tasks=[rec("a")])
    assert type(info.value) is error and inner.writes == 0
    assert faulty.injected == Counter({kind: 1})


def test_execute_and_timeout_writes_then_raises() -> None:
    inner = InMemoryStorage()
    faulty = FaultyStorage(inner, rng=random.Random(0), faults={"execute_and_timeout": 1.0})
    with pytest.raises(StorageError, match="timed out"):
        faulty.write(tasks=[rec("a")])
    assert faulty.load().tasks == [rec("a")]


def test_max_faults_caps_and_disarming_stops_injection() -> None:
    faulty = FaultyStorage(InMemoryStorage(), rng=random.Random(0), faults={"busy": 1.0},
                           max_faults=2)
    outcomes = []
    for _ in range(4):
        try:
            faulty.write(tasks=[rec("a")])
            outcomes.append("ok")
        except StorageBusyError:
            outcomes.append("busy")
    assert outcomes == ["busy", "busy", "ok", "ok"] and faulty.injected["busy"] == 2
    always = FaultyStorage(InMemoryStorage(), rng=random.Random(0), faults={"ioerr": 1.0})
    always.armed = False
    always.write(tasks=[rec("a")])
    with pytest.raises(ValueError, match="unknown"):
        FaultyStorage(InMemoryStorage(), rng=random.Random(0), faults={"flood": 0.1})
    with pytest.raises(ValueError, match="sum"):
        FaultyStorage(InMemoryStorage(), rng=random.Random(0), faults={"busy": 0.6, "full": 0.6})


def until_ok(call: Callable[..., R], *args: Any) -> R:
    for _ in range(50):
        try:
            return call(*args)
        except StorageError:
            continue
    raise AssertionError("a call kept failing")


def test_core_over_faulty_journal_runs_every_task_exactly_once(tmp_path: Path) -> None:
    journal = SQLiteStorage(tmp_path / "j.sqlite", durability="process")
    rates = dict.fromkeys(FAULT_KINDS, 0.01)
    faulty = FaultyStorage(journal, rng=random.Random(2024), faults=rates)
    core = QueueCore(storage=faulty, rng=random.Random(7))
    ids = [f"task-{i}" for i in range(5_000)]
    for start in range(0, len(ids), 25):
        batch = [new(task_id=i, payload=json.dumps({"id": i})) for i in ids[start:start + 25]]
        until_ok(core.enqueue_many, batch, T0)
    while leases := until_ok(core.claim, "w", 25, T0):
        acks = [(lease.task_id, lease.token, '"ok"') for lease in leases]
        assert until_ok(core.ack_many, acks, T0) == [True] * len(leases)
    assert set(faulty.injected) == set(FAULT_KINDS)
    assert core.stats().by_state["succeeded"] == len(ids)
    journal.close()
    stored = SQLiteStorage(tmp_path / "j.sqlite", create=False).load().tasks
    assert sorted(r.id for r in stored) == sorted(ids)
    assert {(r.state, r.attempts, r.lease_token, r.result) for r in stored} == {
        (TaskState.SUCCEEDED, 1, 1, '"ok"')}
