"""Workflow rules of the pure core: steps wait for their parents, get their results as
input, and are cancelled when a parent fails for good; all journaled, so a recovered
core goes on where it was."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel

from rayqueue import FakeClock, NewTask, QueueCore, Task, chain, group
from rayqueue.core.lease import Failure, Lease
from rayqueue.core.port import InMemoryStorage
from rayqueue.core.queue import QueueConfig
from rayqueue.core.record import ErrorInfo, Step, TaskState
from rayqueue.core.shards import shard_of
from rayqueue.errors import (
    InvalidPayloadError,
    InvalidStateError,
    InvalidTaskError,
    InvalidWorkflowError,
)
from rayqueue.protocol import pack_leases, pack_news, unpack_leases, unpack_news
from rayqueue.task import decode_payload, with_input
from rayqueue.workflow import MAX_STEPS, to_news
from tests.unit.conftest import NO_JITTER


def step(task_id: str, *parents: str, feed: str | None = None, gather: bool = False,
         name: str = "t", payload: str = "{}", retry: object = NO_JITTER) -> NewTask:
    return NewTask(name, payload, 50, task_id=task_id, retry=retry,  # type: ignore[arg-type]
                   step=Step("wf", parents, feed, gather))


def chain3() -> list[NewTask]:
    return [step("a"), step("b", "a", feed="x"), step("c", "b", feed="y")]


def run_one(core: QueueCore, now: float, result: str) -> Lease:
    (lease,) = core.claim("w", 1, now)
    core.ack(lease.task_id, lease.token, result, now)
    return lease


def test_a_chain_runs_step_by_step_and_feeds_each_result_to_the_next(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many(chain3(), clock.now())
    assert [core.get(i).state for i in "abc"] == [TaskState.READY, TaskState.PENDING,
                                                   TaskState.PENDING]
    assert core.claim("w", 10, clock.now())[0].task_id == "a"  # b and c are not claimable
    core.ack("a", 1, '{"cents":5}', clock.now())
    # b became ready in the very commit of a's ack
    assert core.get("b").state is TaskState.READY
    (b,) = core.claim("w", 10, clock.now())
    assert b.task_id == "b" and b.feed == ("x", '{"cents":5}')
    core.ack("b", b.token, "7", clock.now())
    (c,) = core.claim("w", 10, clock.now())
    assert c.feed == ("y", "7")
    core.ack("c", c.token, '"done"', clock.now())
    assert core.size() == 0


def test_a_step_without_an_input_field_only_waits(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([step("a"), step("b", "a")], clock.now())
    run_one(core, clock.now(), "1")
    (b,) = core.claim("w", 1, clock.now())
    assert b.feed is None and core.get("b").inputs is None


def test_a_chord_callback_becomes_ready_once_when_every_member_succeeded(
        core: QueueCore, clock: FakeClock) -> None:
    members = [f"m{i}" for i in range(50)]
    core.enqueue_many([*(step(m) for m in members),
                       step("cb", *members, feed="items", gather=True)], clock.now())
    leases = core.claim("w", 100, clock.now())
    assert sorted(x.task_id for x in leases) == sorted(members)  # fans out, not cb
    random.Random(1).shuffle(leases)
    for lease in leases:
        assert core.get("cb").state is TaskState.PENDING
        core.ack(lease.task_id, lease.token, lease.task_id[1:], clock.now())
    assert core.get("cb").state is TaskState.READY
    (cb,) = core.claim("w", 100, clock.now())
    assert cb.feed == ("items", "[" + ",".join(m[1:] for m in members) + "]")  # in order
    assert core.claim("w", 100, clock.now()) == []  # exactly once


def test_a_step_that_fails_after_its_retries_cancels_the_rest_naming_it(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([step("a", retry=NO_JITTER), step("b", "a", feed="x"),
                       step("c", "b", feed="y")], clock.now())
    for attempt in range(NO_JITTER.max_attempts):
        clock.advance(1_000)
        core.tick(clock.now())
        (lease,) = core.claim("w", 1, clock.now())
        assert lease.task_id == "a" and lease.attempt == attempt + 1
        core.fail("a", lease.token, Failure(ErrorInfo("CardDeclined", "no funds")), clock.now())
        assert core.get("b").state is (TaskState.PENDING if attempt < 3
                                        else TaskState.CANCELLED)
    assert core.get("a").state is TaskState.DEAD
    for rest in ("b", "c"):
        rec = core.get(rest)
        assert rec.state is TaskState.CANCELLED
        assert rec.reason is not None and "step a (t) failed (max_attempts)" in rec.reason
        assert rec.error is not None and rec.error.type == "CardDeclined"
        assert "no funds" in rec.error.message
    assert core.size() == 0


def test_one_failed_member_cancels_the_chord_callback(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([step("m1"), step("m2"), step("cb", "m1", "m2", feed="r", gather=True)],
                      clock.now())
    m1, m2 = core.claim("w", 2, clock.now())
    core.ack(m1.task_id, m1.token, "1", clock.now())
    core.fail(m2.task_id, m2.token, Failure(ErrorInfo("E", "x"), retryable=False), clock.now())
    assert core.get("cb").state is TaskState.CANCELLED


def test_cancelling_a_step_cancels_what_waits_for_it(core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many(chain3(), clock.now())
    core.cancel("b", clock.now())  # a pending step can be cancelled
    assert core.get("c").state is TaskState.CANCELLED
    assert "step b (t) was cancelled" in (core.get("c").reason or "")
    run_one(core, clock.now(), "1")  # a still runs: it does not depend on b
    with pytest.raises(InvalidStateError):
        core.cancel("a", clock.now())


def test_a_worker_lost_for_good_also_fails_the_workflow(make_core: object,
                                                        clock: FakeClock) -> None:
    core = make_core()  # type: ignore[operator]
    core.enqueue_many([step("a", retry=NO_JITTER.__class__(max_attempts=1, jitter=False)),
                       step("b", "a")], clock.now())
    core.claim("w", 1, clock.now())
    core.worker_lost("w", clock.now())
    assert core.get("a").state is TaskState.DEAD
    assert core.get("b").state is TaskState.CANCELLED


def test_bad_workflows_are_refused_whole_and_change_nothing(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue(step("other"), clock.now())
    with pytest.raises(InvalidWorkflowError, match="not in the queue"):
        core.enqueue_many([step("a"), step("b", "nowhere")], clock.now())
    with pytest.raises(InvalidWorkflowError, match="not in the queue"):  # later in the batch
        core.enqueue_many([step("b", "a"), step("a")], clock.now())
    with pytest.raises(InvalidWorkflowError, match="no parent"):
        core.enqueue(step("a", feed="x"), clock.now())
    with pytest.raises(InvalidWorkflowError, match="twice"):
        core.enqueue_many([step("a"), step("b", "a", "a")], clock.now())
    with pytest.raises(InvalidTaskError):
        core.enqueue(NewTask("t", "{}", 50, step=Step("", ())), clock.now())
    assert core.task_ids() == ["other"] and core.size() == 1


def test_a_step_after_tasks_already_ended_is_decided_at_enqueue(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([step("a"), step("z")], clock.now())
    run_one(core, clock.now(), '"ok"')
    core.cancel("z", clock.now())
    core.enqueue_many([step("b", "a", feed="x"), step("y", "z")], clock.now())
    assert core.get("b").state is TaskState.READY and core.get("b").inputs == '"ok"'
    assert core.get("y").state is TaskState.CANCELLED


def test_inputs_over_the_payload_limit_kill_the_step_not_the_queue(
        make_core: object, clock: FakeClock) -> None:
    core = make_core(max_payload_bytes=64)  # type: ignore[operator]
    core.enqueue_many([step("m1"), step("m2"), step("cb", "m1", "m2", feed="r", gather=True),
                       step("after", "cb")], clock.now())
    for lease in core.claim("w", 2, clock.now()):
        core.ack(lease.task_id, lease.token, '"' + "x" * 40 + '"', clock.now())
    assert core.get("cb").state is TaskState.DEAD and core.get("cb").reason == "input_too_large"
    assert core.get("after").state is TaskState.CANCELLED


def test_a_member_result_is_kept_past_its_ttl_while_the_callback_waits(
        make_core: object, clock: FakeClock) -> None:
    core = make_core(result_ttl=10.0)  # type: ignore[operator]
    core.enqueue_many([step("m1"), step("m2"), step("cb", "m1", "m2", feed="r", gather=True)],
                      clock.now())
    m1, m2 = core.claim("w", 2, clock.now())
    core.ack(m1.task_id, m1.token, "1", clock.now())
    clock.advance(60)
    core.heartbeat([(m2.task_id, m2.token)], clock.now())
    core.tick(clock.now())
    assert core.find("m1") is not None  # not purged: cb needs its result
    core.ack(m2.task_id, m2.token, "2", clock.now())
    assert core.get("cb").inputs == "[1,2]"


def test_a_recovered_core_goes_on_mid_chain(clock: FakeClock) -> None:
    storage = InMemoryStorage()
    core = QueueCore(QueueConfig(), storage, rng=random.Random(7))
    core.enqueue_many([*chain3(), step("m1"), step("cb", "m1", "c", feed="r", gather=True)],
                      clock.now())
    a, m1 = core.claim("w", 2, clock.now())
    core.ack(a.task_id, a.token, "1", clock.now())
    again = QueueCore.recover(storage, QueueConfig(), rng=random.Random(7))
    assert again.stats() == core.stats()
    assert {i: again.get(i) for i in again.task_ids()} == {i: core.get(i) for i in core.task_ids()}
    (b,) = again.claim("w2", 5, clock.now())  # the pending steps are still pending
    assert b.task_id == "b" and b.feed == ("x", "1")
    again.ack("b", b.token, "2", clock.now())
    run_one(again, clock.now(), "3")
    again.ack(m1.task_id, m1.token, "4", clock.now())  # the old lease is honoured
    (cb,) = again.claim("w2", 5, clock.now())
    assert cb.feed == ("r", "[4,3]")


def test_steps_cross_the_wire_unchanged() -> None:
    news = [step("b", "a", feed="x", gather=True)]
    assert unpack_news(pack_news(news)) == news
    lease = Lease("b", 1, "t", "{}", 1, 50, "default", 0.0, None, NO_JITTER,
                  feed=("x", "[1]"))
    assert unpack_leases(pack_leases([lease])) == [lease]


def test_take_unblocked_names_the_pools_of_new_ready_steps(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many([step("a"), NewTask("t", "{}", 50, task_id="b", pool="p2",
                                          step=Step("wf", ("a",)))], clock.now())
    assert core.take_unblocked() == set()
    run_one(core, clock.now(), "1")
    assert core.take_unblocked() == {"p2"} and core.take_unblocked() == set()


# ------------------------------------------------------- the typed builder (no Ray)


class Receipt(BaseModel):
    order_id: str
    cents: int


class Charge(Task[Receipt]):
    task_name = "wf.charge"
    order_id: str
    cents: int

    def execute(self) -> Receipt:
        return Receipt(order_id=self.order_id, cents=self.cents)


class Notify(Task[str]):
    task_name = "wf.notify"
    receipt: Receipt
    email: str

    def execute(self) -> str:
        return f"{self.email}: {self.receipt.cents}"


class Total(Task[int]):
    task_name = "wf.total"
    receipts: list[Receipt]

    def execute(self) -> int:
        return sum(r.cents for r in self.receipts)


class Other(BaseModel):
    n: int


class TakesOther(Task[None]):
    task_name = "wf.takes_other"
    other: Other

    def execute(self) -> None:
        return None


def test_a_chain_becomes_steps_of_one_workflow_on_one_shard() -> None:
    first = chain(Charge(order_id="o-1", cents=5))
    flow = first.then(Notify, receipt=first.output, email="a@example.com")
    a, b = to_news(flow, "wf1", None)
    assert (a.task_id, b.task_id) == ("wf1@0", "wf1@1")
    assert a.step == Step("wf1", ()) and b.step == Step("wf1", ("wf1@0",), "receipt")
    assert b.payload == '{"email":"a@example.com"}'  # without the input field
    assert len({shard_of(i, 8) for i in ("wf1", "wf1@0", "wf1@1")}) == 1


def test_a_chord_callback_gathers_every_member() -> None:
    members = group(Charge(order_id=f"o-{i}", cents=i) for i in range(3))
    news = to_news(members.then(Total, receipts=members.outputs), "w", None)
    assert news[-1].step == Step("w", ("w@0", "w@1", "w@2"), "receipts", gather=True)


def test_the_input_arrives_as_validated_data_of_the_field_type() -> None:
    payload = with_input("wf.notify", '{"email":"a@example.com"}', "receipt",
                         '{"order_id":"o-1","cents":5}')
    task = decode_payload("wf.notify", '{"email":"a@example.com"}', Notify,
                          ("receipt", '{"order_id":"o-1","cents":5}'))
    assert task == Notify.model_validate_json(payload)
    assert isinstance(task, Notify) and task.receipt == Receipt(order_id="o-1", cents=5)
    assert with_input("x", "{}", "f", "1") == '{"f":1}'
    with pytest.raises(InvalidPayloadError):  # a result of the wrong shape is refused
        decode_payload("wf.notify", '{"email":"x"}', Notify, ("receipt", '"nope"'))


def test_bad_workflows_raise_before_anything_is_enqueued() -> None:
    first = chain(Charge(order_id="o-1", cents=5))
    other = chain(Charge(order_id="o-2", cents=5))
    with pytest.raises(InvalidWorkflowError, match="another one"):
        first.then(Notify, receipt=other.output, email="x")
    with pytest.raises(InvalidWorkflowError, match="cannot take"):
        first.then(TakesOther, other=first.output)  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflowError, match="no field"):
        first.then(Notify, receit=first.output, email="x")  # type: ignore[call-arg]
    with pytest.raises(InvalidPayloadError):  # the other fields are validated now
        first.then(Notify, receipt=first.output, email=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflowError, match="at least one"):
        group([])
    with pytest.raises(InvalidWorkflowError, match="at most"):
        group(Charge(order_id="o", cents=i) for i in range(MAX_STEPS))
    members = group([Charge(order_id="o", cents=1)])
    with pytest.raises(InvalidWorkflowError, match="by name"):
        members.then(Total, members.outputs)  # type: ignore[call-arg]
    with pytest.raises(InvalidWorkflowError):
        chain("not a task")  # type: ignore[arg-type]


def test_steps_cancelled_by_a_failure_are_listed_once_for_the_dashboard(
        core: QueueCore, clock: FakeClock) -> None:
    core.enqueue_many(chain3(), clock.now())
    (a,) = core.claim("w", 1, clock.now())
    core.fail("a", a.token, Failure(ErrorInfo("E", "boom"), retryable=False), clock.now())
    cut = core.take_cancelled_steps()
    assert [r.id for r in sorted(cut, key=lambda r: r.id)] == ["b", "c"]
    assert all(r.error is not None and "boom" in r.error.message for r in cut)
    assert core.take_cancelled_steps() == []
