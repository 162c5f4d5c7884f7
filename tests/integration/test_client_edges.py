"""The client's edge on a real queue (issue 14, finding 7): a manual ``fail()`` of an
exception whose ``__str__`` raises is recorded, a timeout Ray cannot take is refused
before the call, and a shut-down client refuses enqueues with QueueClosedError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import ray

import rayqueue
from rayqueue import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    QueueClosedError,
    RetryPolicy,
    Task,
)
from rayqueue.config import NAMESPACE, actor_name

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


class Manual(Task[int]):
    """Run by hand: no pool of this name exists, so no worker takes it."""

    task_name: ClassVar[str] = "tests.client_edges.manual"
    pool: ClassVar[str] = "by-hand"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=3, base_delay=0.01)

    def execute(self) -> int:
        return 1


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_fail_unprintable_then_shutdown_refuses_enqueues(make_queue: MakeQueue) -> None:
    q = make_queue()
    handle = q.enqueue(Manual(), wait=True)
    with pytest.raises(InvalidArgumentError, match="timeout"):
        q.dequeue(timeout=10**400, pool="by-hand")  # was RayTaskError(OverflowError)
    claimed = q.dequeue(timeout=5, pool="by-hand")
    assert claimed is not None and claimed.id == handle.id
    assert claimed.fail(Unprintable()) is True
    info = q.get(handle.id)
    assert not info.terminal and info.attempts == 1  # retried later, by its policy
    assert info.error_type == "Unprintable" and "str() failed" in (info.error_message or "")
    q.shutdown(timeout=5)
    with pytest.raises(QueueClosedError, match="shut down"):  # was RuntimeError
        q.enqueue(Manual())


def test_lease_calls_check_every_item_before_applying_any(make_queue: MakeQueue) -> None:
    """The queue actor's lease calls (release, heartbeat, started: what workers send)
    refuse a malformed item with InvalidArgumentTypeError before touching any lease, so
    a bad item never leaves half the call applied. (release gave back the items before
    the bad one, then failed with a bare ValueError.)"""
    q = make_queue(name="t-leasecalls")
    handles = [q.enqueue(Manual(), wait=True) for _ in range(2)]
    claimed = [q.dequeue(timeout=5, pool="by-hand") for _ in handles]
    assert all(c is not None for c in claimed)
    first = claimed[0]
    assert first is not None
    ref = (first.id, first.lease.token)
    actor = ray.get_actor(actor_name("t-leasecalls", "queue"), namespace=NAMESPACE)
    for method, bad in [("release", [ref, "bad"]), ("release", [ref, (first.id, True)]),
                        ("heartbeat", "not a list"), ("started", ["t1"])]:
        with pytest.raises(InvalidArgumentTypeError, match="lease token"):
            ray.get(getattr(actor, method).remote(bad), timeout=30)
    assert q.get(first.id).state == "leased"  # not given back by the refused release
    assert ray.get(actor.release.remote([ref]), timeout=30) == [True]
    assert q.get(first.id).state == "ready"
