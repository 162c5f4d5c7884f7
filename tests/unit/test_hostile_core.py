"""Hostile input on the queue's own edges, without Ray (issue 14, build 8, in part):
hypothesis throws arbitrary values at every field of an enqueue, a schedule and a
worker's report, on the SQLite journal. Each must be taken or refused with a rayqueue
error, never crash the core or the journal, and never change anything when refused:
a good enqueue and its result still work afterwards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayqueue import (
    ErrorInfo,
    Failure,
    IntervalSpec,
    NewTask,
    Outcome,
    QueueConfig,
    QueueCore,
    RayQueueError,
    RetryPolicy,
    TaskState,
)
from rayqueue.storage.sqlite import SQLiteStorage

EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Anything a careless or hostile caller might pass where a str or number belongs.
junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
            max_size=3),
    st.binary(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> QueueCore:
    path: Path = tmp_path_factory.mktemp("hostile") / "j.sqlite"
    return QueueCore(QueueConfig(max_payload_bytes=10_000, max_result_bytes=10_000),
                     SQLiteStorage(path))


def _still_works(core: QueueCore) -> None:
    """A good enqueue, claim and result go through after whatever came before."""
    (rec,) = core.enqueue_many([NewTask("good", '{"n": 1}', 50, pool="probe")], 0.0)
    (lease,) = core.claim("w-probe", 1, 0.0, "probe")
    assert lease.task_id == rec.id
    done = core.complete_many([Outcome(rec.id, lease.token, result="1")], 0.0)
    assert done[0] is not None and done[0].state is TaskState.SUCCEEDED


def _snapshot(core: QueueCore) -> tuple[int, int]:
    return core.size(), len(core.schedules())


@EXAMPLES
@given(field=st.sampled_from(["task_name", "payload", "priority", "pool", "run_at",
                              "task_id", "retry", "timeout", "delay"]), value=junk)
def test_enqueue_takes_or_refuses_any_value_of_any_field(
        core: QueueCore, field: str, value: Any) -> None:
    base = {"task_name": "t", "payload": "{}", "priority": 50}
    new = NewTask(**{**base, field: value})  # type: ignore[arg-type]
    before = _snapshot(core)
    try:
        core.enqueue_many([new], 0.0)
    except RayQueueError:
        assert _snapshot(core) == before  # refused: nothing changed
    _still_works(core)


@EXAMPLES
@given(field=st.sampled_from(["schedule_id", "task_name", "payload", "priority", "pool",
                              "timeout", "every"]), value=junk)
def test_add_schedule_takes_or_refuses_any_value(core: QueueCore, field: str,
                                                 value: Any) -> None:
    args: dict[str, Any] = {"schedule_id": f"s-{field}", "task_name": "t", "payload": "{}",
                            "priority": 50, "pool": "sched", "timeout": None}
    every: Any = 60.0
    if field == "every":
        every = value
    else:
        args[field] = value
    before = _snapshot(core)
    try:
        spec = IntervalSpec(every)
        core.add_schedule(spec=spec, now=0.0, **args)
    except RayQueueError:
        assert _snapshot(core) == before
    except (ValueError, TypeError) as err:  # must come from our tree: fail loudly
        raise AssertionError(f"raw {type(err).__name__}: {err}") from err
    finally:
        for s in core.schedules():
            core.remove_schedule(s.id)
    _still_works(core)


@EXAMPLES
@given(result=junk, delay=junk, etype=junk, message=junk, retryable=junk)
def test_a_report_never_fails_the_batch_whatever_an_outcome_holds(
        core: QueueCore, result: Any, delay: Any, etype: Any, message: Any,
        retryable: Any) -> None:
    core.enqueue_many([NewTask("t", "{}", 50, pool="report"),
                       NewTask("t", "{}", 50, pool="report")], 0.0)
    a, b = core.claim("w", 2, 0.0, "report")
    odd = (Outcome(a.task_id, a.token, result=result) if isinstance(retryable, bool)
           else Outcome(a.task_id, a.token, failure=Failure(
               ErrorInfo(etype, message), retryable=bool(retryable), retry_delay=delay)))
    recs = core.complete_many([odd, Outcome(b.task_id, b.token, result="2")], 0.0)
    assert recs[1] is not None and recs[1].state is TaskState.SUCCEEDED  # the neighbour
    assert recs[0] is not None and recs[0].state is not TaskState.LEASED  # its own end
    if recs[0].state is TaskState.FAILED:
        assert math.isfinite(recs[0].due_at)
    for rec in recs:
        if rec is not None and rec.state is TaskState.FAILED:
            core.cancel(rec.id, 0.0)
    _still_works(core)


def test_the_journal_reloads_after_the_onslaught(core: QueueCore) -> None:
    storage = core.storage
    assert isinstance(storage, SQLiteStorage)
    state = storage.load()  # every row written above still decodes
    assert all(rec.id for rec in state.tasks)
    assert RetryPolicy()  # the default policy is still constructible
