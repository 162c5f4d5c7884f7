"""Issue 13, item 6, on real processes: a high-priority task whose worker died does not
wait behind a backlog of lower work.

A task whose worker died under it is a *suspect*: it runs alone, on an idle worker. A
worker that always has backlog work running is never idle, so before the bound
a suspect waited for the whole backlog (or a lease TTL). The bound (``SUSPECT_WAIT_S``
in ``rayqueue/core/queue.py``, README "At least once"): once a suspect has been ready
``SUSPECT_WAIT_S`` (1 s) with every worker busy, the next busy worker that claims gets
nothing more and takes the suspect as soon as its own tasks are done.

The run: one worker holds two high-priority tasks and is SIGKILLed; both come back as
suspects. The pool's replacement worker takes one of them, which then waits (in the
task) until the other has started too; the other can only run on the busy worker that
holds the backlog, which must be emptied for it. The check is an order on the queue's
clock, not a time: the second suspect starts before half of the backlog has (with the
reservation in ``QueueCore.claim`` switched off it started after all ten).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any, ClassVar

import rayqueue
from rayqueue import PoolConfig, QueueConfig, RetryPolicy, Task
from rayqueue.task import current
from tests.faults import ledger
from tests.faults.conftest import settle, wait_gone
from tests.faults.ledger_tasks import POLICY
from tests.ray_fixtures import wait_for

#: Backlog tasks of two lengths on alternating slots of the other worker: its slots
#: free at different times, so it claims while still busy and is never idle until the
#: backlog runs out (an idle worker takes a suspect without the bound).
BACKLOG, BACKLOG_S = 10, (1.2, 2.0)
HIGH, LOW = 90, 10


class Quick(Task[int]):
    """Backlog work: sleeps ``seconds``, returns ``value``."""

    seconds: float
    value: int

    def execute(self) -> int:
        time.sleep(self.seconds)
        return self.value


class Paired(Task[int]):
    """A first attempt that runs until its worker is killed; a later one that returns
    once every task of ``pair`` has started a second attempt (at most 60 s)."""

    retry: ClassVar[RetryPolicy] = POLICY

    ledger: str
    pair: list[str]
    value: int = 0

    def execute(self) -> int:
        ctx = current()
        assert ctx is not None
        row = ledger.start(self.ledger, ctx.task_id, ctx.attempt, ctx.worker)
        end = time.monotonic() + 60
        if ctx.attempt == 1:
            while time.monotonic() < end:  # killed with its worker long before
                time.sleep(0.05)
        else:
            while time.monotonic() < end and any(
                    ledger.starts(self.ledger, i) < 2 for i in self.pair):
                time.sleep(0.02)
        ledger.end(self.ledger, row, "ok", self.value)
        return self.value


def test_a_suspect_of_high_priority_does_not_wait_behind_the_backlog(
        make_queue: Any, ledger_path: str) -> None:
    # lease_ttl far beyond the run: a suspect never gets a worker by its TTL running out
    q: rayqueue.TaskQueue[Any] = make_queue(
        pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=2)],
        config=QueueConfig(lease_ttl=120.0), heartbeat_s=1.0)
    q.pause()  # so that one claim takes both high tasks: they share a worker
    pair = [uuid.uuid4().hex, uuid.uuid4().hex]
    high = [q.enqueue(Paired(ledger=ledger_path, pair=pair, value=i), priority=HIGH,
                      task_id=tid, wait=True) for i, tid in enumerate(pair)]
    low = q.enqueue_many([Quick(seconds=BACKLOG_S[i % 2], value=i)
                          for i in range(BACKLOG)], priority=LOW)
    wait_for(lambda: [w for w in q.workers() if w.state == "running"][1:],
             what="both workers running")
    q.resume()

    def started_high() -> list[dict[str, Any]]:
        found = [r for r in ledger.rows(ledger_path) if r["task_id"] in pair]
        return found if len(found) == 2 else []

    first = wait_for(started_high, what="both high tasks started")
    victim = first[0]["pid"]
    assert first[1]["pid"] == victim, "the high tasks did not share a worker"
    os.kill(victim, signal.SIGKILL)
    wait_gone([victim], what="the high tasks' worker")  # the fault happened

    history = settle(q, high, ledger_path, expected={h.id: i for i, h in enumerate(high)})
    assert history.problems() == {}
    again = [r for r in ledger.rows(ledger_path) if r["attempt"] == 2]
    assert sorted(r["task_id"] for r in again) == sorted(pair)  # both ran again...
    assert victim not in {r["pid"] for r in again}
    infos = [q.get(t) for t in pair]
    assert [i.lost_attempts for i in infos] == [1, 1]  # ...as suspects
    # The order, on the queue's clock: the later suspect's start against the backlog's.
    later = max(i.started_at or 0.0 for i in infos)
    started = [i.started_at for i in q.get_many([h.id for h in low]) if i and i.started_at]
    before = sum(1 for t in started if t < later)
    # Without the bound it starts once the backlog has run out (or its lease TTL).
    assert before <= BACKLOG // 2, (
        f"the second suspect started after {before} of {BACKLOG} backlog tasks")
