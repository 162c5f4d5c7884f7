"""Workflow steps of the shop: a receipt after a charge, a summary after regional reports.

``ReceiptNotification`` declares a field of the payment's result type, so it can follow
a ``PaymentTask`` in a chain: ``charge.then(ReceiptNotification, receipt=charge.output,
to=...)`` (mypy checks that a ``PaymentReceipt`` fits ``receipt``). ``SalesSummary``
takes the list of every ``RegionalReport``'s result: the callback of a chord.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, Field

from rayqueue import Priority, Task
from rayqueue.examples.notification import NotificationSent
from rayqueue.examples.payment import PaymentReceipt


class ReceiptNotification(Task[NotificationSent]):
    """Email the receipt of a charge (the step after ``shop.payment``)."""

    task_name: ClassVar[str] = "shop.receipt_notification"
    priority: ClassVar[int] = Priority.HIGH

    receipt: PaymentReceipt
    to: str = Field(min_length=3, max_length=254)

    def execute(self) -> NotificationSent:
        """Hand the receipt to the provider (simulated: no network)."""
        r = self.receipt
        return NotificationSent(channel="email", to=self.to,
                                message_id=f"msg-{r.transaction_id}-{r.amount}{r.currency}")


class RegionTotals(BaseModel):
    """One region's sales."""

    region: str
    orders: int
    revenue: Decimal


class RegionalReport(Task[RegionTotals]):
    """Sum a region's (synthetic) orders."""

    task_name: ClassVar[str] = "shop.regional_report"
    priority: ClassVar[int] = Priority.LOW

    region: str
    orders: int = Field(ge=0, le=1_000_000)

    def execute(self) -> RegionTotals:
        """Each order is worth 10.00 plus its index modulo 7."""
        revenue = sum((Decimal(10) + i % 7 for i in range(self.orders)), Decimal(0))
        return RegionTotals(region=self.region, orders=self.orders, revenue=revenue)


class SalesSummary(Task[str]):
    """The chord's callback: one line over every region's totals."""

    task_name: ClassVar[str] = "shop.sales_summary"
    priority: ClassVar[int] = Priority.LOW

    regions: list[RegionTotals]

    def execute(self) -> str:
        """Totals, and the best region."""
        best = max(self.regions, key=lambda r: r.revenue)
        orders = sum(r.orders for r in self.regions)
        revenue = sum((r.revenue for r in self.regions), Decimal(0))
        return (f"{len(self.regions)} regions, {orders} orders, revenue {revenue}; "
                f"best {best.region}")
