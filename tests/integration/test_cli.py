"""The `rayqueue` command against a real queue: tables, actions and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig
from rayqueue.cli import EXIT_FAILED, EXIT_UNAVAILABLE, main
from tests.integration.probe_tasks import CoopWaits, Probe
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
PROBE = "tests.integration.probe_tasks:Probe"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_enqueue_dead_retry_and_pools(make_queue: MakeQueue,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=2, concurrency=2)])
    code, out, _ = run(capsys, "-q", q.name, "enqueue", PROBE, json.dumps({"value": 7}),
                       "--wait", "30")
    assert code == 0
    task_id, result = out.split()[0], out.split()[-1]
    assert result == "7" and q.get(task_id).state == "succeeded"

    dead = q.enqueue(Probe(fail_times=9))
    wait_for(lambda: q.get(dead.id).state == "dead", what="a dead letter")
    code, out, _ = run(capsys, "-q", q.name, "dead")
    assert code == 0 and dead.id in out and "RuntimeError" in out
    code, out, _ = run(capsys, "-q", q.name, "retry", dead.id)
    assert code == 0 and f"{dead.id}: ready" in out

    code, out, _ = run(capsys, "-q", q.name, "status")
    assert code == 0 and f"queue {q.name}" in out and "succeeded" in out

    code, out, _ = run(capsys, "-q", q.name, "pools", "--resize", "default", "0", "3")
    assert code == 0 and "0..3" in out
    assert [p.max_workers for p in q.pools()] == [3]


def test_pause_resume_and_cancel(make_queue: MakeQueue,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    q = make_queue()
    assert run(capsys, "-q", q.name, "pause")[0] == 0
    assert q.stats().paused
    handle = q.enqueue(Probe(value=1))
    code, out, _ = run(capsys, "-q", q.name, "cancel", handle.id)
    assert code == 0 and "cancelled" in out
    assert run(capsys, "-q", q.name, "resume")[0] == 0
    assert not q.stats().paused


def test_errors_come_back_as_messages_and_exit_codes(
        make_queue: MakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    q = make_queue()
    code, _, err = run(capsys, "-q", "no-such-queue", "status")
    assert code == EXIT_UNAVAILABLE and "no rayqueue queue named 'no-such-queue'" in err
    code, _, err = run(capsys, "-q", q.name, "enqueue", PROBE, '{"value": "x"}')
    assert code == EXIT_FAILED and "InvalidPayloadError" in err
    code, _, err = run(capsys, "-q", q.name, "enqueue", "no.such.task", "{}")
    assert code == EXIT_FAILED and "UnknownTaskError" in err
    code, _, err = run(capsys, "-q", q.name, "enqueue", PROBE, "not json")
    assert code == 2 and "not JSON" in err
    code, _, err = run(capsys, "-q", q.name, "pools", "--resize", "nope", "0", "1")
    assert code == EXIT_FAILED and "no pool named 'nope'" in err
    code, _, err = run(capsys, "-q", q.name, "retry", "no-such-task")
    assert code == EXIT_FAILED and "TaskNotFound" in err
    with pytest.raises(SystemExit) as usage:
        main(["frobnicate"])
    assert usage.value.code == 2


def test_get_shows_progress_and_cancel_stops_a_running_task(
        make_queue: MakeQueue, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)])
    handle = q.enqueue(CoopWaits(path=str(tmp_path / "notes")))
    wait_for(lambda: handle.info().progress == 0.5, what="progress 0.5")
    code, out, _ = run(capsys, "-q", q.name, "get", handle.id)
    assert code == 0 and "leased" in out and "50% halfway" in out
    code, out, _ = run(capsys, "-q", q.name, "cancel", handle.id)
    assert code == 0 and f"{handle.id}: cancelled" in out
    wait_for(lambda: "saw-cancel" in (tmp_path / "notes").read_text(), what="seen")
    code, out, _ = run(capsys, "-q", q.name, "get", handle.id)
    assert code == 0 and "cancelled_running" in out
