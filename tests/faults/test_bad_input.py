"""RELIABILITY.md scenarios 21-24, 26, 27 and 29: bad input, misbehaving code, floods."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import PoolConfig, QueueConfig, testing
from rayqueue.bootstrap import security_warnings
from rayqueue.calls import _translate
from tests.faults import ledger
from tests.faults.ledger_tasks import Anything, AsyncGenExit, SchemaV1, Strict, Work, schema_v2
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
ONE = PoolConfig(min_workers=1, max_workers=1, concurrency=1)
#: the queue of the tests that only enqueue and read their own tasks (module_queue)
MODULE_QUEUE = {"pools": [ONE]}
Queue = rayqueue.TaskQueue[Any]


def _rows(q: rayqueue.TaskQueue[Any]) -> int:
    return len(testing.task_ids(q))


def test_21_unserializable_payloads_fail_before_any_call(make_queue: MakeQueue) -> None:
    # Nothing runs here: its tasks' pool has no workers.
    q = make_queue(pools=[PoolConfig(name="elsewhere")],
                   config=QueueConfig(max_payload_bytes=10_000))
    sock = socket.socket()
    try:
        for bad in (threading.Lock(), sock, lambda: 1, object()):
            with pytest.raises(rayqueue.InvalidPayloadError, match="field 'data'"):
                q.enqueue(Anything(data=bad))
    finally:
        sock.close()
    with pytest.raises(rayqueue.PayloadTooLargeError) as err:
        q.enqueue(Anything(data="x" * 20_000))
    assert err.value.limit == 10_000
    assert _rows(q) == 0
    # pydantic's JSON mode turns an iterable in an untyped field into a list: that is
    # data, so it is accepted (declare the field's type to refuse it).
    assert q.enqueue(Anything(data=(i for i in range(3)))).info().payload_json == \
        '{"data":[0,1,2]}'


@pytest.mark.parametrize(("payload", "field"), [
    ({"count": "1"}, "count"), ({"count": 1.5}, "count"), ({}, "count"),
    ({"count": 1, "extra": True}, "extra"), ({"count": 1, "ratio": "nan"}, "ratio"),
    ({"count": 1, "tags": ["t"] * 1_000_001}, "tags"),
])
def test_22_validation_errors_name_the_field_and_journal_nothing(
        module_queue: Queue, payload: dict[str, Any], field: str) -> None:
    q = module_queue
    before = sorted(testing.task_ids(q))
    with pytest.raises(rayqueue.InvalidPayloadError) as err:
        q.enqueue_payload(Strict.task_name, payload)
    assert f"\n{field}\n" in err.value.detail  # pydantic's error names the field path
    assert sorted(testing.task_ids(q)) == before  # nothing journaled


def test_22_schema_change_under_a_queued_task_is_dead_without_retries(
        make_queue: MakeQueue) -> None:
    q = make_queue(pools=[PoolConfig(name="schema", max_workers=1)],
                   clock=rayqueue.OffsetClock())
    handle = q.enqueue(SchemaV1(amount=5), delay=3_600)
    v2 = schema_v2()
    testing.ship(q, v2)  # the new code is deployed while the v1 payload waits
    testing.advance_clock(q, 3_601)
    with pytest.raises(rayqueue.TaskFailedError):
        handle.result(timeout=60)
    info = q.get(handle.id)
    assert (info.reason, info.attempts) == ("schema_mismatch", 1)
    assert q.enqueue(v2(cents=7)).result(timeout=30) == 7  # the worker is unharmed


def test_23_priority_and_schedule_parameters(make_queue: MakeQueue, ledger_path: str) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=1)])
    for bad in (True, 1.5, "high", math.nan, -(2**31) - 1, 2**31):
        with pytest.raises(rayqueue.InvalidPriorityError):
            q.enqueue(Work(ledger=ledger_path), priority=bad)
    with pytest.raises(rayqueue.NaiveDatetimeError):
        q.enqueue(Work(ledger=ledger_path), run_at=dt.datetime(2030, 1, 1))
    for bad_delay in (-5, math.nan, dt.timedelta(seconds=-1)):
        with pytest.raises(rayqueue.InvalidScheduleError):
            q.enqueue(Work(ledger=ledger_path), delay=bad_delay)
    assert _rows(q) == 0
    far = q.enqueue(Work(ledger=ledger_path),
                    run_at=dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc))
    assert q.get(far.id).state == "scheduled"
    past = q.enqueue(Work(ledger=ledger_path, value=1),
                     run_at=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    assert past.result(timeout=30) == 1  # a past time runs as soon as possible
    q.cancel(far.id)

    import random

    rng = random.Random(5)
    prios = [rng.randint(0, 100) for _ in range(1_000)]
    handles = q.enqueue_many([Work(ledger=ledger_path, value=p) for p in prios])
    infos = [i for i in q.wait([h.id for h in handles], 120) if i]
    infos.sort(key=lambda i: (i.started_at or 0.0))
    started = [i.priority for i in infos]
    inversions = sum(1 for a, b in itertools.pairwise(started) if b > a)
    assert inversions <= 2  # at most one in-flight inversion per worker


@pytest.mark.parametrize("how", ["base_exc", "bad_reduce", "lock_exc", "huge_msg"])
def test_24_misbehaving_exceptions_are_recorded_and_retried(module_queue: Queue,
                                                          ledger_path: str,
                                                          how: str) -> None:
    q = module_queue
    worker = wait_for(q.workers, what="a worker")[0].id
    handle = q.enqueue(Work(ledger=ledger_path, value=9, how=how, how_times=1))
    assert handle.result(timeout=60) == 9  # the retry policy applied
    info = q.get(handle.id)
    assert info.attempts == 2 and info.error_type in (
        "CustomBase", "BadReduce", "HoldsLock", "ValueError")
    assert len(info.error_message or "") <= 2_000 and len(info.traceback or "") <= 8_000
    assert "Traceback" in (info.traceback or "")
    assert [w.id for w in q.workers()] == [worker]  # the worker survived


def test_24_generator_exit_from_an_async_task(module_queue: Queue) -> None:
    q = module_queue
    with pytest.raises(rayqueue.TaskFailedError) as err:
        q.enqueue(AsyncGenExit()).result(timeout=30)
    assert err.value.error_type == "GeneratorExit"


def test_26_duplicate_task_ids(module_queue: Queue, ledger_path: str) -> None:
    q = module_queue
    task = Work(ledger=ledger_path, value=26)
    handles: list[rayqueue.TaskHandle[int]] = []

    def producer() -> None:
        for _ in range(100):
            handles.append(q.enqueue(task, task_id="order-26"))

    threads = [threading.Thread(target=producer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(handles) == 200 and {h.id for h in handles} == {"order-26"}
    assert handles[0].result(timeout=30) == 26
    # enqueue() is pipelined: the queue's refusal comes with the handle's sent()
    with pytest.raises(rayqueue.DuplicateTaskError):
        q.enqueue(Work(ledger=ledger_path, value=27), task_id="order-26").sent(timeout=30)
    with pytest.raises(rayqueue.DuplicateTaskError):
        q.enqueue(Work(ledger=ledger_path, value=27), task_id="order-26", wait=True)
    again = q.enqueue(task, task_id="order-26")  # within retention: the finished task
    assert again.status() == "succeeded"
    history = ledger.check(ledger_path, [q.get("order-26")])
    assert history.executions["order-26"] == 1
    assert testing.task_ids(q).count("order-26") == 1  # one row for the id


def test_27_backpressure(make_queue: MakeQueue, ledger_path: str) -> None:
    # No worker serves the default pool here, so the queue stays full until we act.
    q = make_queue(pools=[PoolConfig(name="elsewhere")], config=QueueConfig(max_size=200))
    with pytest.raises(rayqueue.QueueFullError):
        for i in range(2_000):
            q.enqueue(Work(ledger=ledger_path, value=i), wait=True)
    assert q.size() == 200
    # Pipelined: every call returns a handle; each refused one says so, the rest are in.
    q2 = make_queue(pools=[PoolConfig(name="elsewhere")], config=QueueConfig(max_size=200))
    handles = [q2.enqueue(Work(ledger=ledger_path, value=i)) for i in range(2_000)]
    with pytest.raises(rayqueue.QueueFullError):
        q2.flush()
    accepted = []
    for h in handles:
        try:
            h.sent()
            accepted.append(h)
        except rayqueue.QueueFullError:
            pass
    assert len(accepted) == 200 and q2.size() == 200
    q = q2
    with pytest.raises(rayqueue.QueueFullError):
        q.enqueue(Work(ledger=ledger_path), block=True, timeout=0.5)
    q.cancel(accepted[0].id)
    accepted.append(q.enqueue(Work(ledger=ledger_path), block=True, timeout=5))
    # A flood of calls on one handle meets a typed error, not an unbounded backlog.
    refs = []
    with pytest.raises(ray.exceptions.PendingCallsLimitExceeded) as flood:
        for _ in range(2_000):
            refs.append(testing.actors(q).queue.join.remote(0.5))
    assert isinstance(_translate(flood.value), rayqueue.QueueBusyError)
    ray.get(refs)  # the flood drains; the queue answers normally again
    states = {i.state for i in q.get_many([h.id for h in accepted[1:]]) if i}
    assert states == {"ready"} and q.size() == 200  # every accepted task is kept


def test_29_security_defaults(make_queue: MakeQueue, ledger_path: str,
                              tmp_path: Path) -> None:
    journal = tmp_path / "q.sqlite"
    q = make_queue(pools=[ONE], journal=str(journal))
    done = q.enqueue(Work(ledger=ledger_path, value=1))
    assert done.result(timeout=30) == 1
    assert journal.stat().st_mode & 0o777 == 0o600
    name = q.name
    q.retry_timeout = 1.0  # the fixture's second shutdown at teardown would retry 30 s
    q.shutdown(timeout=1)
    # Rows written behind rayqueue's back: a pickled payload, and an unknown task name.
    conn = sqlite3.connect(journal)
    (record,) = conn.execute("SELECT record FROM tasks").fetchone()
    base = json.loads(record)
    base.update(state="ready", attempts=0, result=None, finished_at=None,
                retry={**base["retry"], "max_attempts": 1})
    evil = {**base, "id": "evil-pickle", "seq": 90}
    unknown = {**base, "id": "evil-name", "task_name": "evil_module:Boom", "seq": 91}
    with conn:
        conn.execute("INSERT INTO tasks VALUES (?,?,?,?,?)",
                     ("evil-pickle", base["task_name"], "ready",
                      "\x80\x04\x95cos\nsystem\n", json.dumps(evil)))
        conn.execute("INSERT INTO tasks VALUES (?,?,?,?,?)",
                     ("evil-name", "evil_module:Boom", "ready", "{}", json.dumps(unknown)))
    conn.close()
    again = make_queue(name=name, pools=[ONE], journal=str(journal))
    infos = wait_for(lambda: (i := again.get_many(["evil-pickle", "evil-name"]))
                     and all(x and x.state == "dead" for x in i) and i, what="both dead")
    assert [(i.reason) for i in infos if i] == ["invalid_payload", "unknown_task"]
    assert ledger.rows(ledger_path)[-1]["task_id"] == done.id  # neither ever ran
    assert security_warnings(3, "disabled", "2.60.0")
    assert security_warnings(1, None, "2.60.0") == []
    assert security_warnings(1, "token", "2.50.1")
