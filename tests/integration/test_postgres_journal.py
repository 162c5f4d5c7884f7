"""A queue journaled in a real PostgreSQL (tests/pg.py): it runs, its queue actor is
restarted by Ray from the database, and a new init on the same URL recovers it."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import psycopg
import pytest
import ray

import rayqueue
from rayqueue import testing
from rayqueue.config import PoolConfig
from tests.integration.probe_tasks import Manual, Probe


def _epoch(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f'SELECT epoch FROM "rayqueue_{name}".queue_owner').fetchone()
    assert row is not None
    return int(row[0])


def test_a_postgresql_journal_survives_a_restart_and_a_new_init(make_queue: Any,
                                                                 pg_url: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    q = make_queue(name=name, journal=pg_url,
                   pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=4)])
    assert q.journal == pg_url and _epoch(pg_url, name) == 1
    handles = q.enqueue_many([Probe(value=i, sleep_s=0.005) for i in range(200)])
    q.enqueue_many([Manual(name=f"m{i}") for i in range(30)])  # no worker takes these
    pid = ray.get(testing.actors(q).shards[0].pid.remote())
    os.kill(pid, signal.SIGKILL)  # Ray restarts it; it recovers from the database
    assert q.results(handles, timeout=120) == list(range(200))
    assert ray.get(testing.actors(q).shards[0].pid.remote()) != pid and _epoch(pg_url, name) == 2
    stats = q.stats()
    assert stats.by_state["succeeded"] == 200 and stats.size == 30
    q.shutdown(timeout=5)
    again = rayqueue.init(name, journal=pg_url, pools=[PoolConfig(name="none", min_workers=0)])
    try:
        stats = again.stats()
        assert stats.size == 30 and stats.by_state["succeeded"] == 200
        assert _epoch(pg_url, name) == 3
    finally:
        again.shutdown(timeout=5)


def test_a_queue_actor_whose_journal_was_taken_over_stops_writing(make_queue: Any,
                                                                  pg_url: str) -> None:
    """A newer owner opens the journal (as a new incarnation would, the old one still
    alive): the old queue actor's commits are refused with JournalFencedError and none
    of them reaches the database."""
    from rayqueue.storage.identity import JournalIdentity
    from rayqueue.storage.postgres import PostgresStorage

    name = f"t-{uuid.uuid4().hex[:8]}"
    q = make_queue(name=name, journal=pg_url, pools=[PoolConfig(name="none", min_workers=0)])
    before = q.enqueue_many([Manual(name="before")])
    newer = PostgresStorage(pg_url, identity=JournalIdentity(queue=name))
    try:
        assert newer.epoch == 2
        for _ in range(3):  # every later call that would commit is refused, typed
            with pytest.raises(rayqueue.JournalFencedError):
                q.enqueue_many([Manual(name="after")])
        with pytest.raises(rayqueue.JournalFencedError):
            q.enqueue(Manual(name="single"), wait=True)
        assert [r.id for r in newer.load().tasks] == [before[0].id]
        assert newer.seq == 1
    finally:
        newer.close()
