"""Typed, durable workflows on a real Ray (issue 17, 1): results pass along a chain as
validated data, a group fans out and a chord's callback runs once, a failed step
cancels the rest, and a chain survives its queue actor being SIGKILLed."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig, QueueConfig, TaskCancelledError, testing
from rayqueue.cli import main
from tests.faults.conftest import wait_gone
from tests.integration.workflow_probes import (
    AddTax,
    Charge,
    Declined,
    Receipt,
    Square,
    Total,
)
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
#: One worker: what these tests prove (results passed along, a callback run once, a
#: chord kept in one shard) does not depend on how many workers run the steps.
POOL = PoolConfig(min_workers=1, max_workers=1, concurrency=4)
#: the queue of the tests that only enqueue and read their own tasks (module_queue)
MODULE_QUEUE = {"pools": [POOL]}
Queue = rayqueue.TaskQueue[Any]


def _starts(path: Path) -> Counter[str]:
    text = path.read_text() if path.exists() else ""
    return Counter(line[6:] for line in text.splitlines() if line.startswith("start "))


def test_a_chain_of_three_typed_steps_passes_results_along(module_queue: Queue,
                                                            tmp_path: Path) -> None:
    q = module_queue
    log = str(tmp_path / "runs")
    charge = rayqueue.chain(Charge(order_id="o-1", cents=1000, path=log))
    taxed = charge.then(AddTax, charged=charge.output, percent=20, path=log)
    flow = taxed.then(Receipt, charged=taxed.output, email="a@example.com", path=log)
    handle = q.enqueue(flow)
    assert handle.result(timeout=60) == "a@example.com: o-1 1200"
    first, middle, last = (q.get(f"{handle.id.split('@')[0]}@{i}") for i in range(3))
    assert first.result_json == '{"order_id":"o-1","cents":1000}'
    assert middle.workflow == last.workflow == first.workflow is not None
    assert middle.parents == [first.id] and last.parents == [middle.id]
    assert (middle.input_field, middle.state) == ("charged", "succeeded")
    assert _starts(Path(log)) == {"charge": 1, "add_tax": 1, "receipt": 1}


def test_a_group_of_200_fans_out_and_a_chord_callback_runs_once(module_queue: Queue,
                                                                tmp_path: Path) -> None:
    q = module_queue
    log = tmp_path / "runs"
    squares = rayqueue.group(Square(i=i) for i in range(200))
    assert q.enqueue(squares).result(timeout=60) == [i * i for i in range(200)]
    more = rayqueue.group(Square(i=i) for i in range(200))
    chord = more.then(Total, squares=more.outputs, path=str(log))
    handle = q.enqueue(chord)
    assert handle.result(timeout=60) == sum(i * i for i in range(200))
    assert _starts(log) == {"total 200": 1}  # once, with every member's result
    members = q.get_many([f"{handle.id.split('@')[0]}@{i}" for i in range(200)])
    assert {m.state for m in members if m} == {"succeeded"}


def test_a_step_failing_after_its_retries_fails_the_workflow_and_cancels_the_rest(
        module_queue: Queue, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = module_queue
    log = str(tmp_path / "runs")
    charge = rayqueue.chain(Charge(order_id="o-2", cents=500, path=log))
    declined = charge.then(Declined, charged=charge.output, path=log)
    flow = declined.then(Receipt, charged=declined.output, email="b@example.com", path=log)
    handle = q.enqueue(flow)
    with pytest.raises(TaskCancelledError) as err:
        handle.result(timeout=60)
    assert err.value.error_type == "ValueError"  # the failed step's error
    wf = handle.id.split("@")[0]
    failed, last = q.get(f"{wf}@1"), q.get(handle.id)
    assert (failed.state, failed.attempts) == ("dead", 2)
    assert last.state == "cancelled" and last.attempts == 0
    assert last.reason is not None and f"step {wf}@1 (wf-it.declined) failed" in last.reason
    assert "card declined" in (last.error_message or "")
    assert _starts(Path(log)) == {"charge": 1, "declined": 2}  # the receipt never ran
    # the CLI shows the step's workflow, what it waited for and why it was cancelled
    capsys.readouterr()
    assert main(["-q", q.name, "get", handle.id]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "workflow" in shown and "cancelled" in shown and wf in shown


def test_a_chain_completes_after_its_queue_actor_is_sigkilled_mid_chain(
        make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=2)],
                   config=QueueConfig(lease_ttl=2.0), heartbeat_s=0.5,
                   journal=str(tmp_path / "q.sqlite"))
    log, gate = tmp_path / "runs", tmp_path / "gate"
    charge = rayqueue.chain(Charge(order_id="o-3", cents=1000, path=str(log)))
    taxed = charge.then(AddTax, charged=charge.output, percent=10, path=str(log),
                        gate=str(gate))
    flow = taxed.then(Receipt, charged=taxed.output, email="c@example.com", path=str(log))
    handle = q.enqueue(flow)
    # mid-chain: the first step done, the second running, the third pending
    wait_for(lambda: _starts(log)["add_tax"] == 1, what="the second step running")
    assert q.get(handle.id).state == "pending"
    pid = testing.queue_pid(q)
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], what="the queue actor's process")  # the fault happened...
    gate.touch()
    assert handle.result(timeout=90) == "c@example.com: o-3 1100"
    assert testing.queue_pid(q) != pid  # ...and a new queue actor finished the chain
    runs = _starts(log)
    assert runs["charge"] == 1 and runs["receipt"] == 1
    assert runs["add_tax"] <= 2  # at most the one lease outstanding at the kill, again
    assert len(testing.task_ids(q)) == 3  # no step duplicated


def test_a_chord_on_a_sharded_queue_stays_in_one_shard(make_queue: MakeQueue,
                                                       tmp_path: Path) -> None:
    q = make_queue(shards=3, pools=[POOL])
    log = tmp_path / "runs"
    squares = rayqueue.group(Square(i=i) for i in range(20))
    handle = q.enqueue(squares.then(Total, squares=squares.outputs, path=str(log)))
    assert handle.result(timeout=60) == sum(i * i for i in range(20))
    by_shard = testing.task_ids_by_shard(q)
    assert sorted(len(ids) for ids in by_shard) == [0, 0, 21]  # one enqueue, one shard
    assert _starts(log) == {"total 20": 1}
