"""Checked by mypy in CI (not run by pytest): result types flow from Task[R] to callers."""

from __future__ import annotations

from decimal import Decimal

from typing_extensions import assert_type

from rayqueue.examples.payment import PaymentReceipt, PaymentTask
from rayqueue.examples.report import ReportTask, SalesReport
from rayqueue.task import decode_result, run_task


async def results_are_typed() -> None:
    payment = PaymentTask(order_id="o-1", amount=Decimal("5.00"), currency="EUR")
    assert_type(await run_task(payment), PaymentReceipt)
    assert_type(decode_result(ReportTask, "{}"), SalesReport)
