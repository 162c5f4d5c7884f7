"""Typed tasks: registry, payload validation both ways, results, example task types."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from rayqueue import (
    InvalidPayloadError,
    InvalidPriorityError,
    InvalidResultError,
    InvalidTaskError,
    Priority,
    QueueCore,
    RayQueueError,
    RetryPolicy,
    Task,
    TaskError,
    UnknownTaskError,
    lookup,
)
from rayqueue.examples.notification import NotificationTask
from rayqueue.examples.payment import (
    CardDeclinedError,
    GatewayTimeoutError,
    PaymentReceipt,
    PaymentTask,
)
from rayqueue.examples.report import ReportTask, SalesReport
from rayqueue.task import (
    TaskContext,
    current,
    decode_payload,
    decode_result,
    encode_result,
    reset_current,
    run_task,
    set_current,
    to_new_task,
)


class Thumbnail(BaseModel):
    width: int
    height: int


class ThumbnailTask(Task[Thumbnail]):
    """A new task type defined outside rayqueue/ (and its examples): no core change needed."""

    priority: ClassVar[int] = 60
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=7)

    image: str
    scale: float = 0.5

    async def execute(self) -> Thumbnail:
        await asyncio.sleep(0)
        return Thumbnail(width=int(640 * self.scale), height=int(480 * self.scale))


def test_new_task_type_registers_under_module_and_qualname() -> None:
    assert ThumbnailTask.task_name == f"{__name__}:ThumbnailTask"
    assert lookup(ThumbnailTask.task_name) is ThumbnailTask
    assert ThumbnailTask.result_type() is Thumbnail


def test_new_task_type_runs_through_the_core() -> None:
    core = QueueCore()
    rec = core.enqueue(to_new_task(ThumbnailTask(image="a.png")), 0.0)
    assert rec.priority == 60 and rec.retry.max_attempts == 7
    (lease,) = core.claim("w", 1, 0.0)
    task = decode_payload(lease.task_name, lease.payload)
    result = asyncio.run(run_task(task))
    core.ack(lease.task_id, lease.token, encode_result(type(task), result), 1.0)
    back = decode_result(ThumbnailTask, core.get(rec.id).result or "")
    assert back == Thumbnail(width=320, height=240)


def test_unknown_name_is_typed() -> None:
    with pytest.raises(UnknownTaskError) as info:
        decode_payload("nobody:Nothing", "{}")
    assert info.value.task_name == "nobody:Nothing"
    assert isinstance(info.value, RayQueueError)


def test_payload_validated_again_on_the_way_in() -> None:
    with pytest.raises(InvalidPayloadError, match="scale"):
        decode_payload(ThumbnailTask.task_name, '{"image": "a", "scale": "big"}')
    with pytest.raises(InvalidPayloadError, match="extra"):
        decode_payload(ThumbnailTask.task_name, '{"image": "a", "colour": 1}')
    with pytest.raises(InvalidPayloadError):
        decode_payload(ThumbnailTask.task_name, "not json")


def test_unserializable_payload_rejected_at_enqueue() -> None:
    class Blob(Task[None]):
        data: Any

        def execute(self) -> None:
            return None

    with pytest.raises(InvalidPayloadError, match="Blob"):
        to_new_task(Blob(data=object()))
    with pytest.raises(InvalidPayloadError):
        to_new_task(Blob(data=float("nan")))  # NaN is no JSON; pydantic writes null


def test_result_checked_against_declared_type() -> None:
    # An InvalidResultError naming the task (issue 16): not "invalid payload".
    with pytest.raises(InvalidResultError, match="invalid result of task") as err:
        encode_result(ThumbnailTask, {"width": "wide"})
    assert err.value.task_name == ThumbnailTask.task_name
    assert not isinstance(err.value, InvalidPayloadError)


def test_priority_override_is_validated() -> None:
    task = ThumbnailTask(image="a")
    assert to_new_task(task, priority=Priority.CRITICAL).priority == 100
    with pytest.raises(InvalidPriorityError):
        to_new_task(task, priority=True)


def test_not_a_task_rejected() -> None:
    with pytest.raises(TaskError, match="Task instance"):
        to_new_task("hello")  # type: ignore[arg-type]


def test_the_task_base_class_is_refused_as_a_task_error() -> None:
    with pytest.raises(InvalidTaskError, match="not a task type"):  # AttributeError before
        to_new_task(Task())


def test_same_name_two_classes_is_an_error() -> None:
    with pytest.raises(TaskError, match="already used"):
        class Other(Task[None]):
            task_name: ClassVar[str] = "shop.payment"


@pytest.mark.filterwarnings("ignore:Field name .timeout. .* shadows")
def test_options_declared_as_fields_are_an_error() -> None:
    with pytest.raises(TaskError, match="ClassVar"):
        class Wrong(Task[None]):
            timeout: float = 3.0  # forgot ClassVar: would silently be payload


def test_redefining_a_class_replaces_it_as_in_a_notebook() -> None:
    def define() -> type[Task[int]]:
        class Cell(Task[int]):
            task_name: ClassVar[str] = "notebook.cell"

            def execute(self) -> int:
                return 1

        return Cell

    first, second = define(), define()
    assert first is not second and lookup("notebook.cell") is second


# ------------------------------------------------------------ example task types
def test_example_payment_retries_transient_then_succeeds() -> None:
    task = PaymentTask(order_id="o-1", amount=Decimal("19.99"), currency="EUR",
                       transient_failures=2)
    for attempt in (1, 2):
        token = set_current(TaskContext("p", attempt, "w"))
        with pytest.raises(GatewayTimeoutError):
            task.execute()
        reset_current(token)
    token = set_current(TaskContext("p", 3, "w"))
    receipt = task.execute()
    reset_current(token)
    assert isinstance(receipt, PaymentReceipt) and receipt.amount == Decimal("19.99")
    policy = PaymentTask.retry
    assert policy.is_retryable(GatewayTimeoutError())
    assert not policy.is_retryable(CardDeclinedError())
    assert not policy.is_retryable(ValueError())
    assert PaymentTask.priority > ReportTask.priority


@pytest.mark.parametrize("bad", [
    {"order_id": "o", "amount": "-1", "currency": "EUR"},
    {"order_id": "o", "amount": "1.001", "currency": "EUR"},
    {"order_id": "o", "amount": "1", "currency": "euro"},
    {"order_id": "", "amount": "1", "currency": "EUR"},
])
def test_example_payment_rejects_bad_payloads(bad: dict[str, str]) -> None:
    import json

    with pytest.raises(InvalidPayloadError):
        decode_payload("shop.payment", json.dumps(bad))


def test_current_is_none_outside_a_task() -> None:
    assert current() is None


def test_example_notification_checks_address_per_channel() -> None:
    sent = NotificationTask(channel="sms", to="+4915112345678", body="hi").execute()
    assert sent.channel == "sms"
    with pytest.raises(ValueError, match="@"):
        NotificationTask(channel="email", to="no-at-sign", body="hi")
    with pytest.raises(ValueError, match=r"E\.164"):
        NotificationTask(channel="sms", to="0151", body="hi")


def test_example_report_needs_a_monday_and_sums() -> None:
    report = ReportTask(week_start=dt.date(2026, 11, 23), orders=100).execute()
    assert isinstance(report, SalesReport) and report.orders == 100
    assert report.week_end == dt.date(2026, 11, 29)
    with pytest.raises(ValueError, match="Monday"):
        ReportTask(week_start=dt.date(2026, 11, 24))


def test_every_error_survives_pickling_with_its_attributes() -> None:
    import pickle

    from rayqueue import QueueFullError, TaskFailedError

    err = pickle.loads(pickle.dumps(QueueFullError(10, 3)))
    assert isinstance(err, QueueFullError) and err.max_size == 10 and "max_size=10" in str(err)
    failed = pickle.loads(pickle.dumps(TaskFailedError("t", "dead", "ValueError", "bad")))
    assert failed.error_type == "ValueError" and failed.task_id == "t"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_progress_takes_a_fraction_from_0_to_1(bad: Any) -> None:
    from rayqueue import InvalidArgumentError
    from rayqueue.task import TaskContext

    ctx = TaskContext("t", 1, "w")
    ctx.progress(0, "")
    assert ctx.signals.progress == (0.0, None)
    ctx.progress(1, "x" * 500)
    assert ctx.signals.progress == (1.0, "x" * 200) and not ctx.signals.sent
    with pytest.raises(InvalidArgumentError, match="fraction"):
        ctx.progress(bad)
    with pytest.raises(InvalidArgumentError, match="message"):
        ctx.progress(0.5, 7)  # type: ignore[arg-type]
    assert ctx.signals.progress == (1.0, "x" * 200)  # a refused update changes nothing
    assert not ctx.cancelled
