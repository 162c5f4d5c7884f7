"""ReportTask: the weekly sales report, a long, low-priority job."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, Field, model_validator

from rayqueue import Priority, RetryPolicy, Task


class SalesReport(BaseModel):
    """Totals of one period."""

    week_start: dt.date
    week_end: dt.date
    orders: int
    revenue: Decimal
    top_sku: str


class ReportTask(Task[SalesReport]):
    """Aggregate a week of (synthetic) sales; ``orders`` sizes the work."""

    task_name: ClassVar[str] = "shop.report"
    priority: ClassVar[int] = Priority.LOW
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2, base_delay=5.0)
    timeout: ClassVar[float | None] = 600.0

    week_start: dt.date
    orders: int = Field(default=1_000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _monday(self) -> ReportTask:
        if self.week_start.weekday() != 0:
            raise ValueError(f"week_start {self.week_start} is not a Monday")
        return self

    def execute(self) -> SalesReport:
        """Sum the week's orders (deterministic synthetic data)."""
        revenue = Decimal(0)
        best: dict[str, int] = {}
        for i in range(self.orders):
            revenue += Decimal(i % 97) + Decimal("0.99")
            sku = f"SKU-{i % 13}"
            best[sku] = best.get(sku, 0) + 1
        top = max(best, key=lambda k: best[k]) if best else "-"
        return SalesReport(
            week_start=self.week_start,
            week_end=self.week_start + dt.timedelta(days=6),
            orders=self.orders,
            revenue=revenue,
            top_sku=top,
        )
