"""The coalescing sender: batches form while a call is in flight; failures stay apart."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rayqueue.core.record import NewTask
from rayqueue.errors import (
    DuplicateTaskError,
    QueueClosedError,
    QueueFullError,
    QueueUnavailableError,
)
from rayqueue.sender import Sender


def _new(i: int) -> NewTask:
    return NewTask("t", f'{{"i":{i}}}', 50, task_id=f"id-{i}")


class GatedSend:
    """A send function whose first call blocks until released, recording every batch."""

    def __init__(self, refuse: set[str] | None = None, shared: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.refuse = refuse or set()
        self.shared = shared

    def __call__(self, news: list[NewTask]) -> list[str]:
        ids = [n.task_id or "" for n in news]
        self.calls.append(ids)
        if len(self.calls) == 1:
            self.entered.set()
            self.gate.wait(10)
        if self.shared:
            raise QueueUnavailableError("down")
        bad = self.refuse.intersection(ids)
        if bad:
            raise DuplicateTaskError(sorted(bad)[0])
        return ids


def test_submissions_made_during_a_call_ride_in_the_next_one() -> None:
    send = GatedSend()
    sender = Sender(send)
    first = sender.submit([_new(0)])
    assert send.entered.wait(10)
    rest = [sender.submit([_new(i)]) for i in range(1, 50)]
    send.gate.set()
    assert first.result(10) == ["id-0"]
    assert [f.result(10) for f in rest] == [[f"id-{i}"] for i in range(1, 50)]
    assert send.calls == [["id-0"], [f"id-{i}" for i in range(1, 50)]]


def test_batches_respect_the_size_cap_and_fifo_order() -> None:
    send = GatedSend()
    sender = Sender(send, max_batch=10)
    sender.submit([_new(0)])
    assert send.entered.wait(10)
    futs = [sender.submit([_new(i), _new(i + 1000)]) for i in range(1, 13)]
    send.gate.set()
    assert sender.flush(10)
    assert all(f.done() for f in futs)
    assert [len(c) for c in send.calls] == [1, 10, 10, 4]
    flat = [i for call in send.calls[1:] for i in call]
    assert flat == [x for i in range(1, 13) for x in (f"id-{i}", f"id-{i + 1000}")]


def test_one_callers_refused_task_does_not_fail_the_others() -> None:
    send = GatedSend(refuse={"id-7"})
    sender = Sender(send)
    sender.submit([_new(0)])
    assert send.entered.wait(10)
    futs = {i: sender.submit([_new(i)]) for i in range(1, 10)}
    send.gate.set()
    assert sender.flush(10)
    with pytest.raises(DuplicateTaskError):
        futs[7].result()
    assert all(f.result() == [f"id-{i}"] for i, f in futs.items() if i != 7)
    errors = sender.take_errors()
    assert len(errors) == 1 and isinstance(errors[0], DuplicateTaskError)
    assert sender.take_errors() == []


class RoomFor:
    """A send function into a queue with room for ``room`` more tasks, after a first call
    that blocks until released (so the rest coalesce into one batch)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, news: list[NewTask]) -> list[str]:
        self.calls.append([n.task_id or "" for n in news])
        if len(self.calls) == 1:
            self.entered.set()
            self.gate.wait(10)
            return self.calls[0]
        if len(news) > self.room:
            raise QueueFullError(100, len(news))
        self.room -= len(news)
        return self.calls[-1]


def test_a_batch_into_a_full_queue_fills_the_room_then_refuses_the_rest_without_a_call_each(
        ) -> None:
    send = RoomFor(room=3)
    sender = Sender(send)
    sender.submit([_new(0)])
    assert send.entered.wait(10)
    futs = [sender.submit([_new(i)]) for i in range(1, 201)]
    send.gate.set()
    assert sender.flush(10)
    assert [f.result() for f in futs[:3]] == [["id-1"], ["id-2"], ["id-3"]]
    for fut in futs[3:]:
        with pytest.raises(QueueFullError):
            fut.result()
    # the first call, the batch of 200, three that fit and the one the queue refused:
    # not one call for each of the 196 refused
    assert len(send.calls) == 6
    assert len(sender.take_errors()) == 197


def test_an_error_of_the_whole_queue_fails_every_submission_once() -> None:
    send = GatedSend(shared=True)
    sender = Sender(send)
    futs = [sender.submit([_new(0)])]
    assert send.entered.wait(10)
    futs += [sender.submit([_new(i)]) for i in range(1, 5)]
    send.gate.set()
    assert sender.flush(10)
    for fut in futs:
        with pytest.raises(QueueUnavailableError):
            fut.result()
    assert len(send.calls) == 2  # not resent one by one
    assert sender.pending == 0


def test_flush_times_out_while_a_call_hangs_and_close_refuses_more() -> None:
    send = GatedSend()
    sender = Sender(send)
    sender.submit([_new(0)])
    assert send.entered.wait(10)
    assert sender.flush(timeout=0.01) is False
    assert sender.pending == 1
    send.gate.set()
    sender.close()
    assert sender.pending == 0
    with pytest.raises(QueueClosedError, match="shut down"):  # not a bare RuntimeError
        sender.submit([_new(1)])


def test_a_waiting_caller_sends_itself_when_idle_and_waits_its_turn_when_busy() -> None:
    send = GatedSend()
    sender = Sender(send)
    results: dict[str, list[str]] = {}
    leader = threading.Thread(target=lambda: results.update(a=sender.send([_new(0)])))
    leader.start()
    assert send.entered.wait(10)  # the caller's own thread is in the call
    followers = [threading.Thread(target=lambda i=i: results.update({f"f{i}": sender.send(
        [_new(i)])})) for i in range(1, 6)]
    for t in followers:
        t.start()
    send.gate.set()
    for t in [leader, *followers]:
        t.join(10)
    assert results["a"] == ["id-0"]
    assert all(results[f"f{i}"] == [f"id-{i}"] for i in range(1, 6))
    assert sorted(i for call in send.calls for i in call) == sorted(
        f"id-{i}" for i in range(6))
    assert sender.pending == 0
    assert sender._thread is None  # no background thread was needed


def test_a_partial_batch_settles_each_submission_by_its_own_ids() -> None:
    """A sharded queue took part of a coalesced batch: the submissions whose tasks are in
    succeed, those of the failed shard get its error (not a blanket one), none re-sent."""
    from rayqueue.errors import PartialEnqueueError, StorageError

    calls: list[list[str]] = []
    gate = threading.Event()
    entered = threading.Event()

    def send(news: list[NewTask]) -> list[str]:
        ids = [n.task_id or "" for n in news]
        calls.append(ids)
        if len(calls) == 1:
            entered.set()
            gate.wait(10)
            return ids
        done = [i for i in ids if i != "id-2"]
        raise PartialEnqueueError(done, ["id-2"], StorageError("shard 1's disk failed"))

    sender = Sender(send)
    first = sender.submit([_new(0)])
    assert entered.wait(10)
    rest = [sender.submit([_new(i)]) for i in (1, 2, 3)]
    gate.set()
    assert first.result(10) == ["id-0"]
    assert rest[0].result(10) == ["id-1"] and rest[2].result(10) == ["id-3"]
    with pytest.raises(StorageError, match="shard 1"):
        rest[1].result(10)
    assert calls == [["id-0"], ["id-1", "id-2", "id-3"]]  # a shared error: no re-sends


def test_coroutines_awaiting_one_batch_are_woken_together_each_with_its_own_answer() -> None:
    """``settled``: one wake-up of the loop per answered batch, not one per task (each a
    write to the loop's pipe), and each waiter still gets its own ids or its own error;
    a waiter cancelled meanwhile changes nothing for the others."""
    import asyncio

    from rayqueue.sender import settled

    send = GatedSend(refuse={"id-7"})
    sender = Sender(send)

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        sender.submit([_new(0)])
        assert await loop.run_in_executor(None, send.entered.wait, 10)
        subs = [sender.submit([_new(i)]) for i in range(1, 101)]
        waits = [asyncio.ensure_future(settled(sub)) for sub in subs]
        await asyncio.sleep(0)  # the waiters start
        waits[4].cancel()
        wakeups = 0  # (run_in_executor above woke it once)
        send.gate.set()
        # Hold the loop while every submission is answered (id-7's batch is refused,
        # then each is sent alone): all the answers come while no wake-up has run.
        # (flush, not a wait on the futures: it returns once their callbacks have run.)
        assert sender.flush(10)
        got = await asyncio.gather(*waits, return_exceptions=True)
        return got, wakeups

    got, wakeups = asyncio.run(main())
    assert got[0] == ["id-1"] and got[99] == ["id-100"]
    assert isinstance(got[4], asyncio.CancelledError)
    assert isinstance(got[6], DuplicateTaskError)  # id-7's own refusal, only its own
    assert sum(isinstance(g, list) for g in got) == 98
    assert wakeups == 1  # wrap_future: one per submission, 100


def test_a_loop_that_awaited_an_enqueue_is_not_kept_alive_nor_anything_it_left() -> None:
    import asyncio
    import gc
    import weakref

    from rayqueue.sender import _WAKERS, settled

    send = GatedSend()
    send.gate.set()
    sender = Sender(send)

    async def main() -> weakref.ref[asyncio.AbstractEventLoop]:
        assert await settled(sender.submit([_new(0)])) == ["id-0"]
        return weakref.ref(asyncio.get_running_loop())

    gone = asyncio.run(main())
    gc.collect()
    assert gone() is None  # the table of wakers holds its loops weakly

    # A loop closed before its submission is answered: the answer is dropped, not kept.
    loop = asyncio.new_event_loop()
    late = Sender(GatedSend())  # its first call blocks until the gate opens
    sub = late.submit([_new(1)])
    loop.run_until_complete(asyncio.sleep(0))
    waiting = loop.run_until_complete(_settled_later(sub))
    loop.close()
    assert late._send.entered.wait(10)  # type: ignore[attr-defined]
    late._send.gate.set()  # type: ignore[attr-defined]
    assert late.flush(10) and sub.result() == ["id-1"]
    assert _WAKERS[loop]._ready == [] and not waiting.done()


async def _settled_later(fut: Any) -> Any:
    from rayqueue.sender import settled

    return settled(fut)  # the asyncio future, not awaited
