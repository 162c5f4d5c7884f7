"""Middleware on a real Ray: each hook fires in its own process (producer, worker,
queue actor) for success, retry, dead, timeout and worker loss; headers travel with
the task; a middleware that raises changes nothing about any task's fate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rayqueue import PoolConfig, TaskQueue
from tests.integration.hook_probes import CrashesOnce, EchoHeaders, Raiser, Recorder
from tests.integration.probe_tasks import AsyncProbe, Hung, Probe
from tests.procs import alive
from tests.ray_fixtures import wait_for

pytestmark = pytest.mark.integration


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_each_hook_fires_in_its_process_and_a_raising_middleware_changes_nothing(
        make_queue: Any, tmp_path: Path) -> None:
    path = tmp_path / "hooks.jsonl"
    q: TaskQueue[Any] = make_queue(
        middleware=[Raiser(), Recorder(str(path))],
        pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    handles = {
        "ok": q.enqueue(EchoHeaders(), headers={"x-request-id": "r-1"}),
        "retry": q.enqueue(Probe(value=2, fail_times=1)),
        "dead": q.enqueue(Probe(value=3, fail_times=5)),
        "async": q.enqueue(AsyncProbe(text="a")),
    }
    assert handles["ok"].result(timeout=60) == {"x-request-id": "r-1", "x-recorded": "yes"}
    assert handles["retry"].result(timeout=60) == 2
    assert handles["async"].result(timeout=60) == "A"
    wait_for(lambda: q.get(handles["dead"].id).state == "dead", 60, "the dead task")
    # The two tasks that end their worker go one at a time, with nothing else queued: a
    # task the worker had prefetched behind them would be lost with it, unstarted (under
    # -n 3 once, the crashing task itself was lost behind the hung one, and its first
    # start was its second attempt).
    handles["timeout"] = q.enqueue(Hung())
    handles["timeout"].result(timeout=90)
    handles["lost"] = q.enqueue(CrashesOnce())
    handles["lost"].result(timeout=90)
    ids = {k: h.id for k, h in handles.items()}
    # Headers are journaled and shown, the middleware's included.
    assert q.get(ids["ok"]).headers == {"x-request-id": "r-1", "x-recorded": "yes"}

    lines = _lines(path)
    by = lambda hook, key: [x for x in lines if x["hook"] == hook and x.get("task_id") == ids[key]]  # noqa: E731
    driver = os.getpid()
    # Producer side: every enqueue, in this process, acknowledged.
    for key in ids:
        assert [x["pid"] for x in by("before_enqueue", key)] == [driver], key
        assert [(x["pid"], x["error"]) for x in by("after_enqueue", key)] == [(driver, None)]
    # Worker side: attempts ran in worker processes started by the pool, in the task's
    # context, and before/after saw the same attempt object.
    workers = {x["pid"] for x in lines if x["hook"] == "worker_started"}
    attempts = [x for x in lines if x["hook"] in ("before_attempt", "after_attempt")]
    assert workers and driver not in workers
    assert {x["pid"] for x in attempts} <= workers
    assert all(x["in_context"] for x in attempts if x["hook"] == "before_attempt")
    assert all(x["same_attempt"] for x in attempts if x["hook"] == "after_attempt")
    assert by("before_attempt", "ok")[0]["headers"]["x-request-id"] == "r-1"
    outcomes = lambda key: [x["outcome"] for x in by("after_attempt", key)]  # noqa: E731
    assert outcomes("ok") == ["succeeded"]  # once: the raising middleware ran nothing twice
    assert outcomes("retry") == ["failed", "succeeded"]
    assert outcomes("dead") == ["failed", "failed", "failed"]
    assert outcomes("async") == ["succeeded"]
    # The timed-out and the crashed first attempts ended with their worker: no
    # after_attempt, only the second attempt's.
    assert outcomes("timeout") == ["succeeded"]
    assert outcomes("lost") == ["succeeded"]
    assert len(by("before_attempt", "lost")) == 2
    crashed = by("before_attempt", "lost")[0]["pid"]
    wait_for(lambda: not alive(crashed), 10, "the crashed worker's process to be gone")
    # Queue side: retries and deaths, with what ended the attempt, in the queue actor.
    reasons = lambda hook, key: [x["reason"] for x in by(hook, key)]  # noqa: E731
    assert reasons("on_retry", "retry") == ["failed"]
    assert reasons("on_retry", "dead") == ["failed", "failed"]
    assert reasons("on_dead", "dead") == ["max_attempts"]
    assert reasons("on_retry", "timeout") == ["timeout"]
    assert reasons("on_retry", "lost") == ["worker_lost"]
    assert reasons("on_dead", "ok") == reasons("on_retry", "ok") == []
    queue_side = {x["pid"] for x in lines if x["hook"] in ("on_retry", "on_dead")}
    assert len(queue_side) == 1 and not queue_side & (workers | {driver})
    # Each task ran exactly as often as its story says (the raising middleware, first
    # in every list, changed nothing).
    assert q.get(ids["ok"]).attempts == 1
    assert q.get(ids["retry"]).attempts == 2
    assert q.get(ids["dead"]).attempts == 3
    # A worker that drains says so.
    q.shutdown(timeout=30)
    stopped = {x["pid"] for x in _lines(path) if x["hook"] == "worker_stopping"}
    assert stopped and stopped <= workers
