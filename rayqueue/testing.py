"""Tools for tests of rayqueue and of code built on it; the product never imports this.

Tests reach the actors of a queue through these functions rather than through the
private attributes of :class:`~rayqueue.client.TaskQueue`, and read or change actor state
with Ray's ``__ray_call__`` (a function run on the actor instance), so the actors carry
no debug methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from rayqueue.client import TaskQueue

#: A helper's call into an actor fails (GetTimeoutError) rather than hang a test run.
CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class QueueActors:
    """The Ray actor handles of one queue."""

    #: the queue actor (shard 0 of a sharded queue)
    queue: Any
    #: every shard actor (one for an unsharded queue)
    shards: list[Any]
    pool: Any
    metrics: Any


def actors(q: TaskQueue[Any]) -> QueueActors:
    """The actor handles behind ``q``."""
    return QueueActors(q._actor, list(q._shards), q._pool, q._metrics)


def call_in(actor: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(actor instance, *args)`` run inside ``actor``'s process; its return value."""
    return ray.get(actor.__ray_call__.remote(fn, *args), timeout=CALL_TIMEOUT_S)


def _task_ids(actor: Any) -> list[str]:
    with actor._lock:
        ids: list[str] = actor._core.task_ids()
    return ids


def task_ids_by_shard(q: TaskQueue[Any]) -> list[list[str]]:
    """Every task id each shard holds, in shard order."""
    return [call_in(shard, _task_ids) for shard in actors(q).shards]


def task_ids(q: TaskQueue[Any]) -> list[str]:
    """Every task id the queue holds, over all shards (a duplicate row would repeat)."""
    return [i for ids in task_ids_by_shard(q) for i in ids]


def queue_pid(q: TaskQueue[Any]) -> int:
    """The queue actor's process id (retried while the actor restarts)."""
    pid: int = q._read("pid")
    return pid


def ship(q: TaskQueue[Any], *classes: Any) -> None:
    """Send task classes to the workers' codebook now (as a deploy of new code would)."""
    q._ship(classes)


def _advance(actor: Any, seconds: float) -> float:
    advance = getattr(actor._clock, "advance", None)
    if advance is None:
        raise TypeError("this queue runs on the system clock; create it with "
                        "clock=OffsetClock() to advance time in tests")
    now: float = advance(seconds)
    return now


def advance_clock(q: TaskQueue[Any], seconds: float) -> float:
    """Jump the queue's clock ahead (a queue created with ``clock=OffsetClock()``),
    after this client's pipelined enqueues reached the queue: a ``delay`` is measured
    on the queue's clock when the enqueue arrives, so one still on its way would count
    from the jumped clock."""
    q.flush()
    now: float = call_in(actors(q).queue, _advance, seconds)
    return now


def _handles(pool: Any) -> list[tuple[str, Any]]:
    return [(w.id, w.handle) for p in pool._pools.values() for w in p.workers.values()]


def worker_handles(q: TaskQueue[Any]) -> list[tuple[str, Any]]:
    """(worker id, actor handle) of every worker of the queue's pools."""
    handles: list[tuple[str, Any]] = call_in(actors(q).pool, _handles)
    return handles


def recover_now(q: TaskQueue[Any]) -> dict[str, int]:
    """Reload the queue actor's state from its journal, as a restart would."""
    by_state: dict[str, int] = ray.get(actors(q).queue.recover_now.remote(),
                                       timeout=CALL_TIMEOUT_S)
    return by_state


def offline_queue(name: str = "offline", *, actor: Any = None, pool: Any = None,
                  metrics: Any = None, max_payload: int = 1 << 20) -> TaskQueue[Any]:
    """A :class:`TaskQueue` built as ``__init__`` builds it but without Ray: its actors
    are the stand-ins given (or None), and no task class is shipped (which would write
    to Ray's KV store). For unit tests of what the client checks before any call."""
    from rayqueue.client import TaskQueue
    from rayqueue.middleware import Hooks
    from rayqueue.sender import Sender

    q: TaskQueue[Any] = TaskQueue.__new__(TaskQueue)
    q.name = name
    q.journal = None
    q.retry_timeout = 1.0
    q._actor = actor
    q._shards = [actor]
    q._pool = pool
    q._metrics = metrics
    q._shipped = set()
    q._client_id = f"client-{name}"
    q._claim_turn = 0
    q._max_payload = max_payload
    q._closed_here = False
    q._shut_down = False
    q._sender = Sender(q._send_news, q.name)
    q._hooks = Hooks()
    q._ship = lambda classes: None  # type: ignore[method-assign]
    return q

