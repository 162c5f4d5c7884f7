"""A full disk, seen through the queue actor's own code without Ray (issue 13, build 3).

The actor class runs here as a plain object on one event loop: its Ray runtime context
is a stand-in, and its journal an in-memory one under :class:`FaultyStorage`, whose
``full`` fault is switched on and off. What is checked: every answer given while
commits fail is what the journal holds (the original report saw ``get_many`` say
``failed`` for tasks that ``stats()`` counted as ``leased``), one ERROR line per episode
plus rate-limited reminders, and recovery within a second of space coming back, with
no call needed to notice it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from loguru import logger

from rayqueue.actors import queue as queue_module
from rayqueue.actors.queue import QueueActor
from rayqueue.aggregate import MetricsAggregate
from rayqueue.core.clock import FakeClock
from rayqueue.core.lease import Failure, Outcome
from rayqueue.core.queue import QueueConfig
from rayqueue.core.record import ErrorInfo, NewTask, TaskState
from rayqueue.core.retry import RetryPolicy
from rayqueue.errors import StorageFullError
from rayqueue.protocol import ClaimRequest, pack_news, pack_outcomes, unpack_leases
from rayqueue.storage.faulty import FaultyStorage
from rayqueue.storage.memory import InMemoryStorage

N = 24  # as many tasks as the original report saw answered wrongly


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> FaultyStorage:
    """The journal the actor gets: in memory, failing every write while armed."""
    storage = FaultyStorage(InMemoryStorage(), rng=random.Random(0), faults={"full": 1.0})
    storage.armed = False
    _outside_ray(monkeypatch)
    monkeypatch.setattr(queue_module, "open_storage", lambda *args, **kwargs: storage)
    return storage


def _outside_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the queue actor asks of Ray at its start, answered without Ray: a first
    incarnation, and a start call to itself that goes nowhere."""
    context = SimpleNamespace(
        was_current_actor_reconstructed=False,
        current_actor=SimpleNamespace(start=SimpleNamespace(remote=lambda: None)))
    monkeypatch.setattr(queue_module.ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(queue_module, "restarted", lambda: False)
    monkeypatch.setattr(queue_module, "configure", lambda *args, **kwargs: None)


@pytest.fixture
def actions() -> Iterator[list[str]]:
    """The ``action`` of every line the actor logs."""
    seen: list[str] = []
    sink = logger.add(lambda msg: seen.append(msg.record["extra"].get("action", "")),
                      level="DEBUG")
    yield seen
    logger.remove(sink)


def _actor() -> QueueActor:
    return QueueActor("full")


async def _leased(actor: QueueActor) -> list[Any]:
    """N tasks enqueued and leased to one worker, all committed."""
    news = [NewTask("t", f'{{"n": {i}}}', 5) for i in range(N)]
    await actor.enqueue_many(pack_news(news))
    leases = unpack_leases((await actor.claim(ClaimRequest("w1", max_n=N, wait=0.0))).leases)
    assert len(leases) == N
    return leases


def _failures(leases: list[Any]) -> bytes:
    return pack_outcomes([Outcome(lease.task_id, lease.token, failure=Failure(
        ErrorInfo("Boom", "boom"), retryable=True)) for lease in leases])


def _journal_states(storage: FaultyStorage) -> dict[str, str]:
    return {rec.id: rec.state.value for rec in storage.inner.load().tasks}


def test_reads_during_a_failing_commit_answer_what_the_journal_holds(
        faulty: FaultyStorage) -> None:
    async def run() -> None:
        actor = _actor()
        leases = await _leased(actor)
        ids = [lease.task_id for lease in leases]
        faulty.armed = True
        # The worker reports every attempt failed; the commit of that fails (disk full).
        report = asyncio.ensure_future(actor.report("w1", _failures(leases)))
        await asyncio.sleep(0)  # the report has changed the core; its commit is pending
        during = await actor.wait_results(ids, 0.0)  # what get_many asks
        one = await actor.get(ids[0])
        stats_during = await actor.stats()
        with pytest.raises(StorageFullError):
            await report
        assert faulty.injected["full"] >= 1  # the fault happened
        stats_after = await actor.stats()
        journal = _journal_states(faulty)
        # Every answer, before and after the rollback, is what the journal holds.
        assert set(journal.values()) == {"leased"}
        assert [info.state if info else None for info in during] == [journal[i] for i in ids]
        assert one is not None and one.state == journal[ids[0]]
        assert stats_during.by_state["leased"] == stats_after.by_state["leased"] == N
        assert stats_during.by_state["failed"] == stats_after.by_state["failed"] == 0
        assert stats_after.storage_full and stats_after.journal_failing
        actor._io.shutdown()

    asyncio.run(run())


def test_stats_and_reads_agree_while_a_commit_is_in_flight(faulty: FaultyStorage) -> None:
    """With a healthy journal too: until its commit, a change is in no answer."""
    async def run() -> None:
        actor = _actor()
        leases = await _leased(actor)
        report = asyncio.ensure_future(actor.report("w1", _failures(leases[:5])))
        await asyncio.sleep(0)
        stats = await actor.stats()
        infos = await actor.wait_results([lease.task_id for lease in leases], 0.0)
        assert stats.by_state["leased"] == N and stats.by_state["failed"] == 0
        assert {i.state for i in infos if i} == {"leased"}
        assert await report == [True] * 5
        stats = await actor.stats()
        infos = await actor.wait_results([lease.task_id for lease in leases], 0.0)
        assert stats.by_state["failed"] == 5 and stats.by_state["leased"] == N - 5
        assert [i.state for i in infos if i].count("failed") == 5
        actor._io.shutdown()

    asyncio.run(run())


def test_one_error_per_episode_and_reminders_at_most_every_interval(
        faulty: FaultyStorage, actions: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    reminder_s = 0.2
    monkeypatch.setattr(queue_module, "FAILING_REMINDER_S", reminder_s)

    async def run() -> None:
        actor = _actor()
        await _leased(actor)
        faulty.armed = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        calls = 0
        deadline = began + 10.0
        # Fail commits, many a second, until a reminder has been logged.
        while "journal_commit_failing" not in actions:
            assert loop.time() < deadline, "no reminder while commits kept failing"
            with pytest.raises(StorageFullError):
                await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
            calls += 1
        elapsed = loop.time() - began
        assert calls > 1 and faulty.injected["full"] == calls
        assert actions.count("journal_commit_failed") == 1  # one ERROR for the episode
        assert actions.count("journal_commit_failing") <= elapsed / reminder_s + 1
        # The episode ends; the next failure starts a new one, with its own ERROR.
        faulty.armed = False
        await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
        assert actions.count("journal_recovered") == 1
        faulty.armed = True
        with pytest.raises(StorageFullError):
            await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
        assert actions.count("journal_commit_failed") == 2
        actor._io.shutdown()

    asyncio.run(run())


@pytest.mark.parametrize("empty", [False, True])
def test_space_coming_back_is_seen_within_a_second_without_a_call(
        faulty: FaultyStorage, actions: list[str], empty: bool) -> None:
    assert queue_module.PROBE_EVERY_S < 1.0  # the bound this test leans on

    async def run() -> None:
        actor = _actor()
        leases = [] if empty else await _leased(actor)
        faulty.armed = True
        with pytest.raises(StorageFullError):
            if empty:  # nothing in the queue: the failed call is an enqueue
                await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
            else:
                await actor.report("w1", _failures(leases[:1]))
        assert (await actor.stats()).storage_full
        await actor.start()  # the timer loop, as Ray starts it
        faulty.armed = False  # space comes back; no call follows
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while (await actor.stats()).storage_full:
            assert loop.time() < deadline, "the queue never saw the space come back"
            await asyncio.sleep(0.02)
        assert "journal_probe_ok" in actions
        stats = await actor.stats()
        assert not stats.journal_failing and stats.by_state["leased"] == (0 if empty else N)
        assert {r.id for r in faulty.inner.load().tasks} == {lease.task_id for lease in leases}
        # The episode ends with the next real commit; a failure before would not have
        # started a new one (one ERROR per episode, even if a probe got through).
        assert actions.count("journal_commit_failed") == 1
        await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
        assert "journal_recovered" in actions
        assert actor._ticker is not None
        actor._ticker.cancel()
        actor._io.shutdown()

    asyncio.run(run())


def test_a_probe_that_gets_through_does_not_start_a_new_episode(
        faulty: FaultyStorage, actions: list[str]) -> None:
    """A size cap (or a log with room left) may take the small probe while real
    batches still fail: stats clear and set again, the log has one ERROR."""
    async def run() -> None:
        actor = _actor()
        faulty.armed = True
        for _ in range(3):
            with pytest.raises(StorageFullError):
                await actor.enqueue_many(pack_news([NewTask("t", "{}", 1)]))
            assert (await actor.stats()).storage_full
            faulty.armed = False
            actor._probe()  # as the timer loop does while commits fail
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while (await actor.stats()).storage_full:
                assert loop.time() < deadline, "the probe did not commit"
                await asyncio.sleep(0.01)
            faulty.armed = True
        assert actions.count("journal_commit_failed") == 1
        assert actions.count("journal_probe_ok") == 3
        assert "journal_recovered" not in actions
        actor._io.shutdown()

    asyncio.run(run())


def test_a_task_ended_by_the_timer_wakes_its_result_waiter_once_committed(
        faulty: FaultyStorage) -> None:
    """Reads answer committed state, so the commit itself wakes a result waiter: the
    timer loop ends a task (here its lease expires on its last attempt) before its
    commit, and the waiter must not sleep on until its own timeout."""
    async def run() -> None:
        clock = FakeClock()
        actor = QueueActor("full", QueueConfig(lease_ttl=1.0), clock=clock)
        news = [NewTask("t", "{}", 5, task_id="x", retry=RetryPolicy(max_attempts=1))]
        await actor.enqueue_many(pack_news(news))
        assert len(unpack_leases((await actor.claim(ClaimRequest("w1", wait=0.0))).leases)) == 1
        waiter = asyncio.ensure_future(actor.wait_results(["x"], 60.0))
        await asyncio.sleep(0)
        clock.advance(5.0)  # past the lease: the timer loop ends the task
        await actor.start()
        [info] = await asyncio.wait_for(waiter, 10.0)  # not its own 60 s
        assert info is not None and info.state == TaskState.DEAD.value
        assert actor._ticker is not None
        actor._ticker.cancel()
        actor._io.shutdown()

    asyncio.run(run())


def test_a_full_disk_reaches_the_metrics_and_clears_with_it(faulty: FaultyStorage) -> None:
    async def run() -> None:
        actor = _actor()
        sent: list[list[Any]] = []
        actor._metrics = SimpleNamespace(record=SimpleNamespace(
            remote=lambda queue, events: sent.append(events)))
        leases = await _leased(actor)
        agg = MetricsAggregate("full")

        def snapshot() -> Any:
            actor._flush_events()
            for event in sent.pop():
                agg.add(event, 0.0)
            return agg.snapshot(0.0)

        assert not snapshot().storage_full
        faulty.armed = True
        with pytest.raises(StorageFullError):
            await actor.report("w1", _failures(leases[:1]))
        snap = snapshot()
        assert snap.storage_full and snap.journal_failing
        assert snap.depth["leased"] == N and snap.depth["failed"] == 0
        faulty.armed = False
        await actor.report("w1", _failures(leases[:1]))
        snap = snapshot()
        assert not snap.storage_full and not snap.journal_failing
        assert snap.depth["failed"] == 1
        actor._io.shutdown()

    asyncio.run(run())


def test_a_lost_start_call_still_gets_the_timer_loop_running(faulty: FaultyStorage) -> None:
    """The queue actor starts its timer loop with a call to itself, which Ray can lose
    under RPC failures (the stub above drops it, as a lost call would). Without the
    loop, a retry is never promoted: the chaos soak once ended with 22 tasks left
    ``failed`` for good. The pool manager's poll (every 250 ms) starts it too."""

    async def run() -> None:
        actor = _actor()
        leases = await _leased(actor)
        await actor.report("w1", _failures(leases))  # retries, due after a backoff
        assert actor._core.stats().by_state["failed"] == len(leases)
        assert actor._ticker is None  # the start call was lost
        await actor.pool_status()
        deadline = asyncio.get_running_loop().time() + 10
        while actor._core.stats().by_state["ready"] < len(leases):
            assert asyncio.get_running_loop().time() < deadline, actor._core.stats().by_state
            await asyncio.sleep(0.05)
        assert actor._ticker is not None
        actor._ticker.cancel()

    asyncio.run(run())


def test_a_real_journal_at_its_size_cap_answers_what_it_holds_and_recovers(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, actions: list[str]) -> None:
    """The same on a real SQLite file whose size cap (``max_page_count``) is reached:
    SQLite itself refuses the commit (SQLITE_FULL), reads and stats agree with the file,
    and raising the cap again is seen by the timer loop's probe with no call."""
    _outside_ray(monkeypatch)
    path = str(tmp_path / "full.sqlite")

    def on_file() -> dict[str, str]:
        from rayqueue.storage.sqlite import SQLiteStorage

        reader = SQLiteStorage(path, create=False)  # what a restart would load
        try:
            return {rec.id: rec.state.value for rec in reader.load().tasks}
        finally:
            reader.close()

    async def run() -> None:
        actor = QueueActor("full", journal=path, durability="process")
        leases = await _leased(actor)
        ids = [lease.task_id for lease in leases]
        storage = actor._storage
        conn = storage._connection  # type: ignore[attr-defined]
        with storage._lock:  # type: ignore[attr-defined]
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {pages}")  # no page more
        big = [Outcome(lease.task_id, lease.token, failure=Failure(
            ErrorInfo("Boom", "b" * 4000), retryable=True)) for lease in leases]
        report = asyncio.ensure_future(actor.report("w1", pack_outcomes(big)))
        await asyncio.sleep(0)  # the report has changed the core; its commit is pending
        during = await actor.wait_results(ids, 0.0)  # what get_many asks
        stats_during = await actor.stats()
        with pytest.raises(StorageFullError):  # the fault happened, in SQLite
            await report
        infos = await actor.wait_results(ids, 0.0)
        stats = await actor.stats()
        assert stats.storage_full and stats.journal_failing
        for seen in (stats_during, stats):
            assert seen.by_state["leased"] == N and seen.by_state["failed"] == 0
        for answer in (during, infos):
            assert [i.state if i else None for i in answer] == ["leased"] * N
        assert actions.count("journal_commit_failed") == 1
        await actor.start()  # the timer loop, as Ray starts it
        with storage._lock:  # type: ignore[attr-defined]
            conn.execute("PRAGMA max_page_count = 1073741823")  # space comes back
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while (await actor.stats()).storage_full:
            assert loop.time() < deadline, "the queue never saw the space come back"
            await asyncio.sleep(0.02)
        assert await actor.report("w1", pack_outcomes(big)) == [True] * N
        assert (await actor.stats()).by_state["failed"] == N
        assert actor._ticker is not None
        actor._ticker.cancel()
        actor._io.shutdown()
        actor._storage.close()
        assert on_file() == dict.fromkeys(ids, "failed")

    asyncio.run(run())
