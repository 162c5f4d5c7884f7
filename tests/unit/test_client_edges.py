"""Every public call of the client refuses bad arguments with a rayqueue error, before
any Ray call (issue 14, finding 7).

The queue is a real ``TaskQueue`` whose actors are tripwires: a call that gets past its
checks and reaches an actor raises :class:`ReachedRay` instead of talking to Ray.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rayqueue import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidPayloadError,
    InvalidScheduleError,
    InvalidTaskError,
    QueueClosedError,
    RayQueueError,
    Retry,
    RetryPolicy,
    Task,
    bootstrap,
    testing,
)
from rayqueue import client as client_module
from rayqueue.arguments import MAX_TIMEOUT_S
from rayqueue.client import TaskQueue
from rayqueue.core.lease import Lease, Outcome
from rayqueue.handle import ClaimedTask, TaskHandle


class ReachedRay(Exception):
    """The call passed every check and would now call an actor."""


class _Tripwire:
    """An actor handle whose every ``method.remote(...)`` raises ReachedRay."""

    def __getattr__(self, method: str) -> Any:
        class Method:
            def remote(self, *args: object, **kwargs: object) -> None:
                raise ReachedRay(method)

        return Method()


def bare_queue(pool: Any = None) -> TaskQueue[Any]:
    """A TaskQueue whose actors are tripwires (and which ships no class)."""
    return testing.offline_queue("edges", actor=_Tripwire(), pool=pool or _Tripwire(),
                                 metrics=_Tripwire())


class Edge(Task[int]):
    task_name: ClassVar[str] = "edges.client"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=3)

    def execute(self) -> int:
        return 1


def _handle(q: TaskQueue[Any]) -> TaskHandle[int]:
    return TaskHandle(q, "t1", Edge)


def _pending_handle(q: TaskQueue[Any]) -> TaskHandle[int]:
    return TaskHandle(q, "t1", Edge, sent=Future())


# ------------------------------------------------------------------------ timeouts
TIMEOUT_CALLS: dict[str, Callable[[TaskQueue[Any], Any], object]] = {
    "dequeue": lambda q, t: q.dequeue(timeout=t),
    "enqueue": lambda q, t: q.enqueue(Edge(), timeout=t),
    "enqueue_many": lambda q, t: q.enqueue_many([Edge()], timeout=t),
    "flush": lambda q, t: q.flush(t),
    "results": lambda q, t: q.results([_handle(q)], timeout=t),
    "wait_all": lambda q, t: q.wait_all([_handle(q)], timeout=t, progress=False),
    "join": lambda q, t: q.join(t),
    "close": lambda q, t: q.close(drain_timeout=t),
    "shutdown": lambda q, t: q.shutdown(t),
    "handle.result": lambda q, t: _handle(q).result(t),
    "handle.sent": lambda q, t: _pending_handle(q).sent(t),
    "handle.result_async": lambda q, t: asyncio.run(_handle(q).result_async(t)),
}
#: where None is documented as "wait without limit" (close: "do not stop the workers")
NONE_ALLOWED = {"enqueue", "enqueue_many", "flush", "results", "wait_all", "close",
                "handle.result", "handle.sent", "handle.result_async"}


@pytest.mark.parametrize("call", sorted(TIMEOUT_CALLS))
@pytest.mark.parametrize("timeout", [10**400, math.inf, -math.inf, math.nan, -1, -1e-9,
                                     MAX_TIMEOUT_S + 1, 1e300], ids=lambda v: repr(v)[:12])
def test_timeouts_are_finite_seconds_in_range(call: str, timeout: float) -> None:
    with pytest.raises(InvalidArgumentError, match="timeout") as err:
        TIMEOUT_CALLS[call](bare_queue(), timeout)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("call", sorted(TIMEOUT_CALLS))
@pytest.mark.parametrize("timeout", ["1", True, [1], 1j])
def test_timeouts_of_the_wrong_type_are_type_errors(call: str, timeout: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="timeout") as err:
        TIMEOUT_CALLS[call](bare_queue(), timeout)
    assert isinstance(err.value, TypeError)


@pytest.mark.parametrize("call", sorted(set(TIMEOUT_CALLS) - NONE_ALLOWED))
def test_none_is_refused_where_it_does_not_mean_forever(call: str) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="timeout"):
        TIMEOUT_CALLS[call](bare_queue(), None)


def test_good_timeouts_reach_the_queue() -> None:
    q = bare_queue()
    for call in ("dequeue", "join", "close", "results"):
        with pytest.raises(ReachedRay):
            TIMEOUT_CALLS[call](q, 0.5)
    with pytest.raises(ReachedRay):
        q.results([_handle(q)], timeout=None)
    q.flush(None)  # nothing pending: returns at once
    q.flush(MAX_TIMEOUT_S)


# ------------------------------------------------------------------ delay and run_at
@pytest.mark.parametrize("delay", [10**400, -(10**400), 10**309], ids=["1e400", "-1e400",
                                                                     "1e309"])
def test_a_delay_that_overflows_is_a_schedule_error(delay: object) -> None:
    with pytest.raises(InvalidScheduleError, match="delay"):
        bare_queue().enqueue(Edge(), delay=delay)  # type: ignore[arg-type]
    with pytest.raises(InvalidScheduleError, match="delay"):
        bare_queue().enqueue_many([Edge()], delay=delay)  # type: ignore[arg-type]


def test_far_delays_and_times_that_fit_are_sent() -> None:
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    for kwargs in ({"delay": dt.timedelta.max}, {"delay": 1e300}, {"run_at": far}):
        with pytest.raises(ReachedRay):
            bare_queue().enqueue(Edge(), wait=True, **kwargs)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- limits
@pytest.mark.parametrize("limit", [math.nan, math.inf, -1, 1.5, True, "5", None, 10**400,
                                   1_000_001], ids=lambda v: repr(v)[:12])
def test_dead_letters_limit_is_a_bounded_int(limit: object) -> None:
    with pytest.raises(InvalidArgumentError, match="limit"):
        bare_queue().dead_letters(limit)  # type: ignore[arg-type]


def test_a_good_dead_letters_limit_reaches_the_queue() -> None:
    with pytest.raises(ReachedRay):
        bare_queue().dead_letters(0)


@pytest.mark.parametrize(("lo", "hi"), [(-1, 2), (1.5, 2), (True, 2), (0, 0), (3, 2),
                                        (0, 10**30), ("1", 2)])
def test_resize_pool_bounds(lo: object, hi: object) -> None:
    with pytest.raises(InvalidArgumentError, match="workers"):
        bare_queue().resize_pool("default", lo, hi)  # type: ignore[arg-type]


def test_resize_pool_of_an_unknown_pool_is_an_argument_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_pool(ref: object) -> None:
        raise ValueError("no pool named 'gpu'; pools: default")

    monkeypatch.setattr(client_module, "_get", no_such_pool)

    class Pool:
        class resize:
            @staticmethod
            def remote(*args: object) -> None:
                return None

    q = bare_queue(pool=Pool())
    with pytest.raises(InvalidArgumentError, match="pool: no pool named 'gpu'") as err:
        q.resize_pool("gpu", 0, 2)
    assert isinstance(err.value, ValueError)  # as it was


# ------------------------------------------------------------- collections and types
@pytest.mark.parametrize("tasks", [None, 5, "ab", Edge(), {"a": Edge()}])
def test_enqueue_many_wants_an_iterable_of_tasks(tasks: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="tasks"):
        bare_queue().enqueue_many(tasks)  # type: ignore[arg-type]


@pytest.mark.parametrize("ids", [None, 5, "ab", b"ab", [5], {"a": 1}])
def test_get_many_wants_a_list_of_str(ids: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="task_ids"):
        bare_queue().get_many(ids)  # type: ignore[arg-type]


def test_get_many_takes_any_iterable_of_ids() -> None:
    with pytest.raises(ReachedRay):
        bare_queue().get_many(i for i in ("a", "b"))  # type: ignore[arg-type]


@pytest.mark.parametrize("handles", [None, ["x"], "ab", 5, [None]])
def test_results_want_handles(handles: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="handles"):
        bare_queue().results(handles)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="handles"):
        bare_queue().wait_all(handles, progress=False)  # type: ignore[arg-type]


def test_the_task_base_class_is_not_a_task_type() -> None:
    with pytest.raises(InvalidTaskError, match="not a task type"):
        bare_queue().enqueue(Task())
    with pytest.raises(InvalidTaskError, match="not a task type"):
        bare_queue().schedule(Task(), every=60)


def test_task_ids_are_a_list_of_the_right_length() -> None:
    with pytest.raises(InvalidArgumentTypeError, match="task_ids"):
        bare_queue().enqueue_many([Edge(), Edge()], task_ids="ab")  # one id per char before
    with pytest.raises(InvalidArgumentTypeError, match="task_ids"):
        bare_queue().enqueue_many([Edge()], task_ids=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="task_ids: 1 task ids for 2") as err:
        bare_queue().enqueue_many([Edge(), Edge()], task_ids=["x"])
    assert isinstance(err.value, ValueError)  # as the plain ValueError was


ID_CALLS: dict[str, Callable[[TaskQueue[Any], Any], object]] = {
    "get": lambda q, v: q.get(v),
    "cancel": lambda q, v: q.cancel(v),
    "retry_dead": lambda q, v: q.retry_dead(v),
    "handle": lambda q, v: q.handle(v),
    "peek": lambda q, v: q.peek(v),
    "dequeue": lambda q, v: q.dequeue(pool=v),
    "resize_pool": lambda q, v: q.resize_pool(v, 0, 1),
}


@pytest.mark.parametrize("call", sorted(ID_CALLS))
@pytest.mark.parametrize("value", [None, 5, b"x", ["x"]])
def test_ids_and_pool_names_are_str(call: str, value: object) -> None:
    with pytest.raises(InvalidArgumentTypeError):
        ID_CALLS[call](bare_queue(), value)


def test_handle_task_cls_is_a_task_class() -> None:
    for bad in (5, "Edge", Edge(), int):
        with pytest.raises(InvalidArgumentTypeError, match="task_cls"):
            bare_queue().handle("x", bad)  # type: ignore[arg-type]
    assert bare_queue().handle("x", Edge).id == "x"


@pytest.mark.parametrize("sid", [5, "", "a\x00b", "x" * 300, "bad\ud800"])
def test_schedule_ids_are_checked_like_task_ids(sid: object) -> None:
    with pytest.raises(InvalidTaskError, match="schedule id"):
        bare_queue().schedule(Edge(), every=60, schedule_id=sid)  # type: ignore[arg-type]


def test_enqueue_payload_arguments() -> None:
    with pytest.raises(InvalidArgumentTypeError, match="task_name"):
        bare_queue().enqueue_payload(5, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="payload"):
        bare_queue().enqueue_payload("edges.client", 5)  # type: ignore[arg-type]
    for bad in ({"x": object()}, {"x": math.nan}):
        with pytest.raises(InvalidPayloadError, match="not JSON"):
            bare_queue().enqueue_payload("edges.client", bad)


# ----------------------------------------------------------------- after shutdown
def test_enqueue_after_shutdown_is_a_queue_closed_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module.ray, "kill", lambda handle: None)
    q = bare_queue()
    with pytest.raises(ReachedRay):  # the pool actor is the first it calls
        q.shutdown(0)
    for enqueue in (lambda: q.enqueue(Edge()), lambda: q.enqueue(Edge(), wait=True),
                    lambda: q.enqueue_many([Edge()]),
                    lambda: asyncio.run(q.enqueue_async(Edge()))):
        with pytest.raises(QueueClosedError, match="shut down"):
            enqueue()


# ------------------------------------------------------------------ ClaimedTask.fail
class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _claimed() -> tuple[ClaimedTask[Edge], list[Outcome]]:
    sent: list[Outcome] = []

    def report(outcome: Outcome) -> bool:
        sent.append(outcome)
        return True

    lease = Lease(task_id="t1", token=7, task_name=Edge.task_name, payload="{}", attempt=1,
                  priority=50, pool="default", expires_at=0.0, timeout=None,
                  retry=Edge.retry)
    return ClaimedTask(lease, Edge(), report, lambda task_id, token: True), sent


def test_fail_with_an_exception_whose_str_raises() -> None:
    claimed, sent = _claimed()
    assert claimed.fail(Unprintable()) is True
    failure = sent[0].failure
    assert failure is not None
    assert failure.error.type == "Unprintable"
    assert "str() failed" in (failure.error.message or "")
    assert failure.retryable


def test_fail_keeps_a_retry_delay_and_refuses_a_non_exception() -> None:
    claimed, sent = _claimed()
    claimed.fail(Retry(delay=5))
    assert sent[0].failure is not None and sent[0].failure.retry_delay == 5
    with pytest.raises(InvalidArgumentTypeError, match="exc"):
        claimed.fail("boom")  # type: ignore[arg-type]


def test_every_error_here_is_in_the_tree() -> None:
    for err_type in (InvalidArgumentError, InvalidArgumentTypeError, InvalidTaskError,
                     QueueClosedError, InvalidScheduleError):
        assert issubclass(err_type, RayQueueError)


# ------------------------------------------------------------------ init's placement
class ReachedRayInit(Exception):
    """init passed its checks and would now start or join Ray."""


@pytest.mark.parametrize("kwargs", [
    {"journal": 5}, {"journal": b"x.db"}, {"journal": ""}, {"journal_node": 5},
    {"queue_env": {"A": 1}}, {"actor_env": ["A=1"]}, {"actor_env": {1: "x"}},
])
def test_init_refuses_bad_placement_before_ray(monkeypatch: pytest.MonkeyPatch,
                                               kwargs: dict[str, object]) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRayInit

    monkeypatch.setattr(bootstrap, "_ensure_ray", tripwire)
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        bootstrap.init("edge", **kwargs)  # type: ignore[arg-type]


def test_a_journal_node_that_is_not_live_is_an_argument_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bootstrap, "_ensure_ray", lambda *args: None)
    monkeypatch.setattr(client_module.ray, "nodes", lambda: [{"NodeID": "n1", "Alive": False}])
    journal = tmp_path / "edge.sqlite"
    with pytest.raises(InvalidArgumentError, match="journal_node: 'n1' is not a live") as err:
        bootstrap.init("edge", journal=str(journal), journal_node="n1")
    assert isinstance(err.value, ValueError)  # as it was
    assert not journal.exists()  # refused before any journal was made


@pytest.mark.parametrize("kwargs", [{"address": 5}, {"address": b"auto"},
                                    {"ray_init": ["num_cpus=1"]}, {"ray_init": {1: 2}}])
def test_init_and_connect_check_the_ray_arguments(monkeypatch: pytest.MonkeyPatch,
                                                  kwargs: dict[str, object]) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRayInit

    monkeypatch.setattr(bootstrap, "_ensure_ray", tripwire)
    for start in (bootstrap.init, bootstrap.connect):
        with pytest.raises(InvalidArgumentTypeError, match=next(iter(kwargs))):
            start("edge", **kwargs)  # type: ignore[operator]


class _LostReply:
    """A shard whose ``claim`` is sent but whose reply never comes (Ray lost it)."""

    def __getattr__(self, method: str) -> Any:
        class Method:
            def remote(self, *args: object, **kwargs: object) -> object:
                return ("never answered", method)

        return Method()


@pytest.mark.parametrize("timeout", [0.0, 2.5])
def test_dequeue_is_bounded_when_the_claim_reply_is_lost(
        monkeypatch: pytest.MonkeyPatch, timeout: float) -> None:
    """``dequeue`` waits for its claim with a deadline, like every other call (issue
    13): a lost reply is a QueueUnavailableError, not a hang."""
    import ray

    from rayqueue import QueueUnavailableError
    from rayqueue import calls as calls_module

    waited: list[float | None] = []

    def get(ref: object, timeout: float | None = None) -> object:
        waited.append(timeout)
        if timeout is None:
            raise AssertionError("the claim's answer is awaited without a deadline")
        raise ray.exceptions.GetTimeoutError("no answer (the reply was lost)")

    monkeypatch.setattr(calls_module.ray, "get", get)
    q = testing.offline_queue("edges", actor=_LostReply())
    with pytest.raises(QueueUnavailableError, match="did not answer in time"):
        q.dequeue(timeout=timeout)
    assert waited == [timeout + calls_module.ANSWER_TIMEOUT_S]


def test_a_local_ray_started_by_rayqueue_gets_a_private_temp_dir(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """address="local" (a notebook's or a test's throwaway Ray) keeps its session files
    out of the shared /tmp/ray (issue 16, item 8); a temp dir given is kept."""
    import tempfile

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(client_module.ray, "init", lambda **kw: seen.append(kw))
    monkeypatch.setattr(client_module.ray, "nodes", lambda: [])
    bootstrap._ensure_ray("local", {"num_cpus": 1})
    bootstrap._ensure_ray("local", {"_temp_dir": "/tmp/mine"})
    bootstrap._ensure_ray(None, None)
    private = seen[0]["_temp_dir"]
    assert private.startswith(tempfile.gettempdir() + "/rq-ray-") and seen[0]["num_cpus"] == 1
    assert seen[1]["_temp_dir"] == "/tmp/mine"
    assert "_temp_dir" not in seen[2]
