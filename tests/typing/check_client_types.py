"""Checked by mypy in CI, never run: results are typed from Task[R] through the client.

Lines marked ``type: ignore[...]`` are misuse that must stay a type error: mypy's
``warn_unused_ignores`` (on under --strict) fails CI if one of them stops being one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from typing_extensions import assert_type

import rayqueue
from rayqueue.examples.payment import PaymentReceipt, PaymentTask
from rayqueue.examples.report import ReportTask, SalesReport


def typed_results(queue: rayqueue.TaskQueue[Any]) -> None:
    payment = PaymentTask(order_id="o-1", amount=Decimal("5.00"), currency="EUR")
    assert_type(queue.enqueue(payment).result(), PaymentReceipt)
    handle = queue.enqueue(payment)
    assert_type(handle, rayqueue.TaskHandle[PaymentReceipt])
    reports = queue.enqueue_many([ReportTask.model_validate({"week_start": "2026-11-23"})])
    assert_type(queue.results(reports), list[SalesReport])


async def awaited(queue: rayqueue.TaskQueue[Any]) -> None:
    payment = PaymentTask(order_id="o-1", amount=Decimal("5.00"), currency="EUR")
    assert_type(await queue.enqueue(payment), PaymentReceipt)


def misuse(queue: rayqueue.TaskQueue[Any]) -> None:
    payment = PaymentTask(order_id="o-1", amount=Decimal("5.00"), currency="EUR")
    receipt: SalesReport = queue.enqueue(payment).result()  # type: ignore[assignment]
    queue.enqueue({"order_id": "o-1"})  # type: ignore[call-overload]
    queue.enqueue(payment, priority="high")  # type: ignore[call-overload]
    print(queue.enqueue(payment).result().no_such_field)  # type: ignore[attr-defined]
    del receipt
