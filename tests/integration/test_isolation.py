"""Bad input stays with its sender (issue 14, items 1 and 2) on a real queue: four
threads of good enqueues beside one of bad ones, through every enqueue style, in memory
and on the SQLite journal; and a bad outcome inside a worker's report batch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import ray

import rayqueue
from rayqueue import InvalidNameError, InvalidTaskError, NewTask, PoolConfig, Task, testing
from rayqueue.protocol import pack_news
from tests.integration.probe_tasks import BadRetry, Probe

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
GOOD_THREADS, PER_THREAD = 4, 150


class Nameless(Task[int]):
    """A task class whose name the journal cannot store (set after the class is
    defined, which refuses such a name itself)."""

    task_name: ClassVar[str] = "tests.isolation.nameless"

    def execute(self) -> int:
        return 0


Nameless.task_name = None  # type: ignore[assignment]


def _enqueue(q: rayqueue.TaskQueue[Any], style: str, tasks: list[Probe],
             ids: list[str]) -> None:
    if style == "many":
        q.enqueue_many(tasks, task_ids=ids)
        return
    handles = [q.enqueue(t, task_id=i, wait=(style == "wait")) for t, i in zip(tasks, ids,
                                                                               strict=True)]
    for h in handles:
        h.sent()  # raises if this enqueue was refused


# On the product default, the SQLite journal (FULL): the senders are what is at stake.
# enqueue() is wait=False (pipelined, coalesced); "wait" is wait=True; "many" enqueue_many
@pytest.mark.parametrize("style", ["enqueue", "wait", "many"])
def test_one_senders_bad_input_never_fails_another_senders_good_enqueues(
        make_queue: MakeQueue, style: str) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1)])
    q.pause()
    errors: list[BaseException] = []
    refused: list[str] = []
    start = threading.Barrier(GOOD_THREADS + 1)

    def good(n: int) -> None:
        start.wait()
        try:
            for k in range(0, PER_THREAD, 10):
                ids = [f"g{n}-{k + j}" for j in range(10)]
                _enqueue(q, style, [Probe(value=k + j) for j in range(10)], ids)
        except BaseException as err:
            errors.append(err)

    def bad() -> None:
        start.wait()
        for k in range(PER_THREAD // 5):
            for task, task_id in ((Probe(), f"bad\ud800{k}"), (Nameless(), None)):
                try:
                    q.enqueue(task, task_id=task_id)
                except (InvalidTaskError, InvalidNameError) as err:
                    refused.append(type(err).__name__)
            # Past the client's check, straight to the queue actor: its group commit
            # must refuse this call alone.
            raw = NewTask("t", "{}", 50, task_id=f"raw\ud800{k}")
            try:
                ray.get(testing.actors(q).queue.enqueue_many.remote(pack_news([raw])))
            except ray.exceptions.RayTaskError as err:
                assert isinstance(err.cause, InvalidTaskError), err
                refused.append("raw")

    threads = [threading.Thread(target=good, args=(n,)) for n in range(GOOD_THREADS)]
    threads.append(threading.Thread(target=bad))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    q.flush()
    # The bad ones were all refused, each with the input error, and no good one failed.
    assert len(refused) == 3 * (PER_THREAD // 5)
    assert errors == []
    stats = q.stats()
    assert stats.by_state.get("ready") == GOOD_THREADS * PER_THREAD == stats.size
    infos = q.get_many([f"g{n}-{k}" for n in range(GOOD_THREADS) for k in range(PER_THREAD)])
    assert all(i is not None for i in infos)


def test_a_bad_outcome_fails_its_own_attempt_not_the_workers_report(
        make_queue: MakeQueue) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    q.pause()  # all of them are claimed together, so their outcomes share reports
    bad = [q.enqueue(BadRetry(mode=m), wait=True) for m in ("retry", "nan")]
    good = [q.enqueue(Probe(value=i), wait=True) for i in range(10)]
    q.resume()
    assert [h.result(timeout=60) for h in good] == list(range(10))
    for h in good:
        assert h.info().attempts == 1  # never re-run: their leases were not disturbed
    for b in bad:
        info = b.info()
        assert info.state == "dead" and info.attempts == 1, info
    assert "retry delay" in (bad[0].info().error_message or "")
    assert "NaN is not a JSON value" in (bad[1].info().error_message or "")
